"""`gap.report`: a hand-made sweep with hand-computed aggregates, figures read back from their data, the paper's
CSVs, per-example significance, W&B (faked), the command line, and hand-made arms (gap, the null arm, mle) for
the shares at fixed epochs, the selection's optimism and the tests against the null arm, computed by hand."""
import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from gap.errors import ConfigError, DataError
from gap.report import report
from gap.report.__main__ import to_overrides
from gap.report.document import BEGIN, END
from gap.report.figure import write_figures
from gap.report.null_arm import null_rows
from gap.report.runs import load_path, model_order, next_larger
from gap.report.selection import selection_rows
from gap.report.significance import significance
from gap.report.stats import fisher_exact, mcnemar_exact, mean_difference_test, mean_test, paired_bootstrap, wilson
from gap.report.tables import summary_rows, task_rows
from gap.report.wandb_runs import load_wandb
from gap.results import best_epochs
from tests.helpers import DATA_DIR, ROOT

PAPER = DATA_DIR / "raw" / "gap" / "full_results"
BASELINES = {"opt-350m": (0.40, 0.10), "opt-1.3b": (0.50, 0.12)}  # (classification acc, dialogue F1)
SELECTED = {  # (model, corpus) -> three runs' selected (classification, dialogue) averages
    ("opt-350m", "github"): [(0.42, 0.11), (0.38, 0.13), (0.52, 0.09)],
    ("opt-350m", "pile_cc"): [(0.40, 0.10), (0.41, 0.12), (0.45, 0.125)],
    ("opt-1.3b", "github"): [(0.55, 0.14), (0.49, 0.11), (0.51, 0.13)],
    ("opt-1.3b", "pile_cc"): [(0.50, 0.12), (0.53, 0.15), (0.56, 0.10)],
}
JOB = "corpus.index={i},corpus={c},model={m}"


def metrics(acc: float, f1: float) -> dict:
    """Two tasks per category whose mean is the category average."""
    return {"copa/acc": acc + 0.1, "piqa/acc": acc - 0.1, "avg/classification_acc": acc,
            "wizard_of_wikipedia/f1": f1, "empathetic_dialogues/f1": f1, "wizard_of_wikipedia/loss": 3.0,
            "avg/dialog_f1": f1}


def results_json(model, corpus, index, acc, f1):
    """Classification peaks at epoch 1, dialogue at epoch 2 (selections at different epochs)."""
    history = [{"epoch": e, "step": e + 1, "train_nll": 2.0, "metrics": metrics(a, d), "seconds": {}}
               for e, (a, d) in enumerate([(acc - 0.05, f1 - 0.02), (acc, f1 - 0.01), (acc - 0.03, f1)])]
    config = {"model": {"name": model}, "corpus": {"name": corpus, "index": index}, "method": {"name": "gap"}}
    return {"status": "ok", "config": config, "metrics": history[-1]["metrics"], "seconds": {},
            "baseline": metrics(*BASELINES[model]), "history": history, "best": best_epochs(history)}


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "multiruns" / "grid"
    for (model, corpus), runs in SELECTED.items():
        for i, (acc, f1) in enumerate(runs):
            job = root / JOB.format(i=i, c=corpus, m=model)
            job.mkdir(parents=True)
            (job / "results.json").write_text(json.dumps(results_json(model, corpus, i, acc, f1)))
    failed = root / "corpus.index=99,corpus=github,model=opt-350m"
    failed.mkdir()
    (failed / "results.json").write_text(json.dumps({"status": "failed", "error": "IndexError: 99", "config": {}}))
    return root


def row(rows, model, corpus, category):
    return next(r for r in rows if (r["model"], r["corpus"], r["category"]) == (model, corpus, category))


def test_summary_of_a_sweep_matches_hand_computed_aggregates(sweep):
    results = load_path(sweep)
    assert len(results.runs) == 24 and any("failed: 1" in n for n in results.notes)
    rows = summary_rows(results)
    assert len(rows) == 2 * 2 * 3  # category x model x (2 corpora + all)
    r = row(rows, "opt-350m", "github", "classification")  # 0.42 0.38 0.52 vs 0.40, next larger 0.50
    assert (r["runs"], r["mean"], r["median"], r["best"], r["baseline"]) == (3, pytest.approx(0.44), 0.42, 0.52, 0.40)
    assert r["beat_baseline"] == pytest.approx(2 / 3) and r["beat_next_larger"] == pytest.approx(1 / 3)
    assert (r["beat_baseline_lo"], r["beat_baseline_hi"]) == (pytest.approx(0.20766, abs=1e-4),
                                                              pytest.approx(0.93851, abs=1e-4))
    r = row(rows, "opt-350m", "pile_cc", "classification")  # a run equal to the baseline does not beat it
    assert r["beat_baseline"] == pytest.approx(2 / 3) and r["beat_next_larger"] == 0
    r = row(rows, "opt-350m", "all", "classification")
    assert (r["runs"], r["mean"], r["median"], r["best"]) == (6, pytest.approx(0.43), pytest.approx(0.415), 0.52)
    assert r["beat_baseline"] == pytest.approx(4 / 6) and r["beat_next_larger"] == pytest.approx(1 / 6)
    assert (r["beat_baseline_lo"], r["beat_baseline_hi"]) == (pytest.approx(0.29999, abs=1e-4),
                                                              pytest.approx(0.90323, abs=1e-4))
    r = row(rows, "opt-350m", "all", "dialog")  # 0.11 0.13 0.09 0.10 0.12 0.125 vs 0.10, next larger 0.12
    assert r["mean"] == pytest.approx(0.675 / 6) and r["median"] == pytest.approx(0.115) and r["best"] == 0.13
    assert r["beat_baseline"] == pytest.approx(4 / 6) and r["beat_next_larger"] == pytest.approx(2 / 6)
    r = row(rows, "opt-1.3b", "pile_cc", "classification")  # 0.50 0.53 0.56 vs 0.50; no larger model
    assert r["beat_baseline"] == pytest.approx(2 / 3) and r["beat_next_larger"] is None


def test_tasks_are_taken_at_each_category_selected_epoch(sweep):
    rows = task_rows(load_path(sweep))
    copa = next(r for r in rows if (r["model"], r["corpus"], r["task"]) == ("opt-350m", "github", "copa/acc"))
    assert copa["runs"] == 3 and copa["mean"] == pytest.approx(0.54) and copa["baseline"] == pytest.approx(0.50)
    wow = next(r for r in rows if (r["model"], r["corpus"], r["task"]) == ("opt-1.3b", "all", "wizard_of_wikipedia/f1"))
    assert wow["runs"] == 6 and wow["mean"] == pytest.approx(0.75 / 6) and wow["baseline"] == pytest.approx(0.12)
    assert not any(r["task"].endswith("/loss") or r["task"].startswith("avg/") for r in rows)


def test_figures_plot_each_run_and_the_baselines(sweep, tmp_path):
    figures = write_figures(load_path(sweep), tmp_path, jitter=0.1)
    for category, column in (("classification", 0), ("dialog", 1)):
        assert (tmp_path / f"figure_{category}.png").stat().st_size > 0
        assert (tmp_path / f"figure_{category}.svg").stat().st_size > 0
        ax = figures[category].axes[0]
        assert [t.get_text().split("\n")[0] for t in ax.get_xticklabels()] == ["opt-350m", "opt-1.3b"]
        lines = {line.get_gid(): list(line.get_ydata()) for line in ax.lines}
        assert lines == {"baseline:opt-350m": [BASELINES["opt-350m"][column]] * 2,
                         "next_larger:opt-350m": [BASELINES["opt-1.3b"][column]] * 2,
                         "baseline:opt-1.3b": [BASELINES["opt-1.3b"][column]] * 2}
        for x, model in enumerate(["opt-350m", "opt-1.3b"]):
            points = next(c for c in ax.collections if c.get_gid() == f"runs:{model}").get_offsets()
            expected = [run[column] for (m, _), runs in SELECTED.items() if m == model for run in runs]
            assert sorted(points[:, 1]) == pytest.approx(sorted(expected))
            assert all(abs(px - x) <= 0.1 for px in points[:, 0])


def test_the_paper_csvs_give_every_model_and_corpus():
    if not PAPER.is_dir():
        pytest.fail(f"the paper's CSVs are not at {PAPER}; set GAP_DATA_DIR")
    results = load_path(PAPER)
    rows = summary_rows(results)
    for category in ("classification", "dialog"):
        pairs = {(r["model"], r["corpus"]) for r in rows if r["category"] == category}
        assert pairs == {(m, c) for m in ("350M", "1.3B", "2.7B") for c in ("CC", "Git.", "TDEC", "all")}
    assert [r["model"] for r in rows if r["corpus"] == "all"] == ["350M", "1.3B", "2.7B"] * 2
    r = row(rows, "350M", "TDEC", "classification")  # this group's own epoch-0 value differs from CC's
    assert r["runs"] == 100 and r["baseline"] == pytest.approx(0.45721133425831795)
    assert row(rows, "350M", "CC", "classification")["baseline"] == pytest.approx(0.4568207152187824)
    assert row(rows, "1.3B", "CC", "dialog")["runs"] == 94
    assert row(rows, "1.3B", "Git.", "dialog")["baseline"] == pytest.approx(0.12985779903829098)  # no epoch 0 run
    assert all(r["beat_next_larger"] is None for r in rows if r["model"] == "2.7B")
    assert all(0 <= r["beat_baseline_lo"] <= r["beat_baseline"] <= r["beat_baseline_hi"] <= 1 for r in rows)


def test_statistics():
    assert mcnemar_exact(8, 2) == pytest.approx(0.109375) and mcnemar_exact(2, 8) == pytest.approx(0.109375)
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(5, 5) == 1.0
    assert wilson(0, 10)[0] == 0 and wilson(10, 10)[1] == pytest.approx(1)
    assert wilson(7, 10) == pytest.approx((0.39677, 0.89221), abs=1e-5)  # by hand: centre 0.64449, half 0.24772
    assert paired_bootstrap([0.1] * 50) == pytest.approx(1 / 10_001)
    assert paired_bootstrap([0.1, -0.1] * 25) == 1.0
    assert model_order(["opt-2.7b", "tiny-random", "opt-125m", "SmolLM2-135M-Instruct", "opt-1.3b"]) == \
        ["opt-125m", "SmolLM2-135M-Instruct", "opt-1.3b", "opt-2.7b", "tiny-random"]
    assert next_larger("opt-350m", ["opt-1.3b", "opt-350m", "opt-2.7b"]) == "opt-1.3b"


def write_predictions(job, classification=True, dialogue=True):
    def dump(path, records):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in records))

    if classification:  # 8 examples right before and wrong after (b), 2 the other way (c), 10 agree
        pairs = [(1, 0)] * 8 + [(0, 1)] * 2 + [(1, 1)] * 6 + [(0, 0)] * 4
        dump(job / "predictions/baseline/copa.jsonl",
             [{"index": i, "label": 1, "pred": 1 if b else 0} for i, (b, _) in enumerate(pairs)])
        dump(job / "predictions/copa.jsonl",  # stored in another order: paired by index
             [{"index": i, "label": 1, "pred": 1 if g else 0} for i, (_, g) in reversed(list(enumerate(pairs)))])
    if dialogue:
        dump(job / "predictions/baseline/wizard_of_wikipedia.jsonl",
             [{"index": i, "target": "t", "pred": "p", "f1": 0.1 + 0.01 * (i % 5)} for i in range(40)])
        dump(job / "predictions/wizard_of_wikipedia.jsonl",
             [{"index": i, "target": "t", "pred": "q", "f1": 0.1 + 0.01 * (i % 5) + 0.05} for i in range(40)])


def test_significance_of_one_run(tmp_path):
    write_predictions(tmp_path)
    rows = {r["task"]: r for r in significance(tmp_path)}
    copa = rows["copa"]
    assert (copa["n"], copa["baseline"], copa["gap"]) == (20, pytest.approx(0.7), pytest.approx(0.4))
    assert copa["diff"] == pytest.approx(-0.3) and copa["p_value"] == pytest.approx(0.109375)
    assert copa["test"] == "McNemar exact"
    wow = rows["wizard_of_wikipedia"]
    assert wow["n"] == 40 and wow["diff"] == pytest.approx(0.05) and wow["p_value"] == pytest.approx(1 / 10_001)
    assert wow["test"].startswith("paired bootstrap (10000")
    with pytest.raises(DataError, match="predictions/baseline"):
        significance(tmp_path / "nothing")


class FakeRun:
    def __init__(self, model, corpus, acc, f1):
        self.config = {"model": {"name": model}, "corpus": {"name": corpus, "index": 0}, "method": {"name": "gap"}}
        self.summary = {"status": "ok", "selected/classification/epoch": 1, "selected/dialog/epoch": 2,
                        **{f"selected/classification/{k}": v for k, v in metrics(acc, f1).items()},
                        **{f"selected/dialog/{k}": v for k, v in metrics(acc, f1).items()}}
        self.base = metrics(*BASELINES[model])

    def scan_history(self):
        yield {"train/nll": 2.0, "_step": 0}
        yield {**{f"val/{k}": v for k, v in self.base.items()}, "_step": 0}


def test_wandb_runs_and_offline(monkeypatch):
    api = type("Api", (), {"runs": lambda self, path: [FakeRun("opt-350m", "github", 0.42, 0.11),
                                                       FakeRun("opt-1.3b", "github", 0.55, 0.14)]})()
    rows = summary_rows(load_wandb("me/gap", api=api))
    r = row(rows, "opt-350m", "github", "classification")
    assert (r["mean"], r["baseline"], r["beat_next_larger"]) == (0.42, 0.40, 0.0)
    monkeypatch.setenv("WANDB_MODE", "offline")
    with pytest.raises(ConfigError, match="offline"):
        load_wandb("me/gap")


def test_runs_are_grouped_and_compared_by_method(tmp_path):
    """gap, npo and gap through LoRA on one model: a row (and a figure panel) per method, each against the
    same unchanged model (baseline: classification 0.40, dialogue 0.10)."""
    arms = {("gap", False): [(0.42, 0.11), (0.38, 0.13)], ("npo", False): [(0.41, 0.09)],
            ("gap", True): [(0.39, 0.12), (0.45, 0.08)]}
    for (name, lora), runs in arms.items():
        for i, (acc, f1) in enumerate(runs):
            results = results_json("opt-350m", "github", i, acc, f1)
            results["config"]["method"] = {"name": name, "lora": {"enabled": lora}}
            job = tmp_path / f"corpus.index={i},method={name},method.lora.enabled={lora}"
            job.mkdir()
            (job / "results.json").write_text(json.dumps(results))
    results = load_path(tmp_path)
    rows = summary_rows(results)
    assert [(r["method"], r["corpus"]) for r in rows if r["category"] == "classification"] == [
        ("gap", "github"), ("gap", "all"), ("gap+lora", "github"), ("gap+lora", "all"),
        ("npo", "github"), ("npo", "all")]
    beat = {(r["category"], r["method"]): (r["runs"], r["beat_baseline"], r["baseline"])
            for r in rows if r["corpus"] == "all"}
    assert beat == {("classification", "gap"): (2, 0.5, 0.40), ("classification", "gap+lora"): (2, 0.5, 0.40),
                    ("classification", "npo"): (1, 1.0, 0.40), ("dialog", "gap"): (2, 1.0, 0.10),
                    ("dialog", "gap+lora"): (2, 0.5, 0.10), ("dialog", "npo"): (1, 0.0, 0.10)}
    figure = write_figures(results, tmp_path, formats=("png",))["classification"]
    assert [ax.get_title() for ax in figure.axes] == ["gap", "gap+lora", "npo"]
    for ax, expected in zip(figure.axes, ([0.42, 0.38], [0.39, 0.45], [0.41])):
        points = next(c for c in ax.collections if c.get_gid() == "runs:opt-350m").get_offsets()
        assert sorted(points[:, 1]) == pytest.approx(sorted(expected))
        assert {line.get_gid(): list(line.get_ydata()) for line in ax.lines} == {"baseline:opt-350m": [0.40] * 2}


def test_report_writes_every_file(sweep, tmp_path):
    job = sweep / JOB.format(i=0, c="github", m="opt-350m")
    write_predictions(job)
    cfg = OmegaConf.merge(OmegaConf.load(ROOT / "conf" / "report.yaml"),
                          {"inputs": [str(sweep)], "run": str(job), "out": None})
    out = report(cfg)
    assert out == sweep / "report"
    names = {"summary.csv", "summary.md", "tasks.csv", "significance.csv"} | {
        f"figure_{c}.{f}" for c in ("dialog", "classification") for f in ("png", "svg")}
    assert names <= {p.name for p in out.iterdir()}
    assert len(list(csv.DictReader(open(out / "summary.csv")))) == 12
    assert "left out 1 of 13 jobs" in (out / "summary.md").read_text()
    with pytest.raises(DataError, match="no results.json"):
        load_path(tmp_path / "multiruns" / "grid" / "report")


def test_bare_paths_become_inputs():
    assert to_overrides(["a", "b/c", "out=/tmp/x", "run=s/corpus.index=1,model=m", "wandb=e/p"]) == [
        "out='/tmp/x'", "run='s/corpus.index=1,model=m'", "wandb.runs=e/p", "inputs=['a','b/c']"]
    assert to_overrides(["--cfg", "job", "inputs=[a]"]) == ["--cfg", "job", "inputs=[a]"]


def cli(*args, env=None):
    env = {**os.environ, "WANDB_MODE": "offline", **(env or {})}
    return subprocess.run([sys.executable, "-m", "gap.report", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_on_the_paper_csvs(tmp_path):
    proc = cli(PAPER, f"out={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list(csv.DictReader(open(tmp_path / "summary.csv")))) == 24
    assert (tmp_path / "figure_dialog.png").is_file() and (tmp_path / "figure_classification.svg").is_file()
    assert "epoch 0" in (tmp_path / "summary.md").read_text() and "| gap | 2.7B | all | dialog | 300 |" in proc.stdout
    assert not (tmp_path / "selection.csv").exists() and not (tmp_path / "null_arm.csv").exists()  # selected only


def test_cli_significance_of_a_job_named_by_hydra(sweep, tmp_path):
    job = sweep / JOB.format(i=0, c="github", m="opt-350m")  # `=` and `,` in the path
    write_predictions(job)
    proc = cli(f"run={job}", f"out={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp_path / "significance.csv")))
    assert [r["task"] for r in rows] == ["copa", "wizard_of_wikipedia"] and float(rows[0]["p_value"]) == 0.109375


@pytest.mark.parametrize("args", [["{tmp}/missing"], ["{tmp}"], ["wandb=me/gap"], []])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, args):
    proc = cli(*[a.format(tmp=tmp_path) for a in args], f"out={tmp_path / 'out'}")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    if args and args[0].startswith("{tmp}"):
        assert args[0].format(tmp=tmp_path) in lines[0]


def test_default_out_is_beside_a_sweep_but_never_in_the_papers_data_folder(sweep, tmp_path, monkeypatch):
    cfg = OmegaConf.load(ROOT / "conf" / "report.yaml")
    monkeypatch.chdir(tmp_path)
    from gap.report import _out_dir

    assert _out_dir(OmegaConf.merge(cfg, {"inputs": [str(sweep)]}), [str(sweep)]) == sweep / "report"
    paper = _out_dir(OmegaConf.merge(cfg, {"inputs": [str(PAPER)]}), [str(PAPER)])
    assert paper == Path("outputs/report/full_results") and (tmp_path / paper).is_dir()


# ---- the null arm, fixed epochs and the selection's optimism ----------------------------------------------
# classification (selected, after step 1, after the last step, held-out delta or None); dialogue stays at the
# baseline. Unchanged model: classification 0.40 (held-out 0.30), dialogue 0.10.
ARMS = {
    "gap": [(0.41, 0.39, 0.40, 0.00), (0.42, 0.41, 0.38, 0.01), (0.43, 0.42, 0.43, -0.01), (0.44, 0.38, 0.41, 0.02)],
    "random_direction": [(0.40, 0.38, 0.39, None), (0.40, 0.40, 0.37, None), (0.40, 0.39, 0.40, None),
                         (0.405, 0.405, 0.40, None)],
    "mle": [(0.39, 0.39, 0.37, None)],
}


def arm_results(method, index, selected, first, last, heldout_delta):
    history = [{"epoch": e, "step": e + 1, "train_nll": 2.0, "metrics": metrics(acc, 0.10), "seconds": {}}
               for e, acc in enumerate([first, selected, last])]
    config = {"model": {"name": "opt-350m"}, "corpus": {"name": "github", "index": index}, "method": {"name": method}}
    results = {"status": "ok", "config": config, "metrics": history[-1]["metrics"], "seconds": {},
               "baseline": metrics(0.40, 0.10), "history": history, "best": best_epochs(history)}
    if heldout_delta is not None:
        results["heldout"] = {"epochs": {"classification": 1, "dialog": 0}, "baseline": metrics(0.30, 0.10),
                              "selected": metrics(0.30 + heldout_delta, 0.10)}
    return results


@pytest.fixture
def arms(tmp_path):
    root = tmp_path / "arms"
    for method, runs in ARMS.items():
        for i, run in enumerate(runs):
            (root / f"corpus.index={i},method={method}").mkdir(parents=True)
            (root / f"corpus.index={i},method={method}" / "results.json").write_text(
                json.dumps(arm_results(method, i, *run)))
    return root


def group(rows, method, corpus="github", category="classification"):
    return next(r for r in rows if (r["method"], r["corpus"], r["category"]) == (method, corpus, category))


def test_shares_at_fixed_epochs_and_the_selections_optimism(arms):
    rows = selection_rows(load_path(arms))
    assert {(r["method"], r["corpus"], r["category"]) for r in rows} == {
        (m, c, k) for m in ARMS for c in ("github", "all") for k in ("classification", "dialog")}
    gap = group(rows, "gap")  # selected 4/4 above 0.40; after step 1: 0.41, 0.42 (2/4); after the last: 0.43, 0.41
    # Wilson by hand: 4 of 4, centre 0.75505 and half 0.24495; 2 of 4, centre 0.5 and half 0.34996
    wilson_4_of_4, wilson_2_of_4 = (0.51011, 1.0), (0.15004, 0.84996)
    assert (gap["runs"], gap["beat_baseline"], gap["beat_baseline_first"], gap["beat_baseline_last"]) == (
        4, 1, 0.5, 0.5)
    assert (gap["beat_baseline_lo"], gap["beat_baseline_hi"]) == pytest.approx(wilson_4_of_4, abs=1e-4)
    assert (gap["beat_baseline_first_lo"], gap["beat_baseline_first_hi"]) == pytest.approx(wilson_2_of_4, abs=1e-4)
    assert (gap["beat_baseline_last_lo"], gap["beat_baseline_last_hi"]) == pytest.approx(wilson_2_of_4, abs=1e-4)
    # optimism per run: (0.01 - 0.00, 0.02 - 0.01, 0.03 + 0.01, 0.04 - 0.02); only all-plus and all-minus of the
    # 16 sign patterns reach |mean| >= 0.02: p = 2/16, and no shift is ever rejected (2/16 > 0.05)
    assert (gap["heldout_runs"], gap["selected_delta"], gap["heldout_delta"], gap["optimism"]) == pytest.approx(
        (4, 0.025, 0.005, 0.02))
    assert (gap["optimism_lo"], gap["optimism_hi"], gap["optimism_p_value"]) == (-math.inf, math.inf, 0.125)
    null = group(rows, "random_direction")  # selected: only 0.405 beats 0.40 (so does its first); none at the last
    assert (null["beat_baseline"], null["beat_baseline_first"], null["beat_baseline_last"]) == (0.25, 0.25, 0)
    assert (null["heldout_runs"], null["optimism"], null["optimism_lo"]) == (0, None, None)
    assert group(rows, "gap", "all") == {**gap, "corpus": "all"}
    assert group(rows, "gap", category="dialog")["beat_baseline_last"] == 0  # equal to the baseline is not above it


def test_each_method_against_the_null_arm(arms):
    rows = null_rows(load_path(arms))
    assert {(r["method"], r["corpus"], r["category"]) for r in rows} == {
        (m, c, k) for m in ("gap", "mle") for c in ("github", "all") for k in ("classification", "dialog")}
    gap = group(rows, "gap")
    assert (gap["null_arm"], gap["runs"], gap["null_runs"], gap["beat_baseline"], gap["null_beat_baseline"]) == (
        "random_direction", 4, 4, 1.0, 0.25)
    # Fisher, 4/4 against 1/4: tables x = 1..4 above of 5 have probabilities 4, 24, 24, 4 (/56): p = 8/56.
    # Newcombe: 0.75 - hypot(1 - 0.51011, 0.69936 - 0.25), 0.75 + hypot(0, 0.25 - 0.04559)
    assert gap["share_diff"] == 0.75 and gap["share_p_value"] == pytest.approx(8 / 56)
    assert (gap["share_diff_lo"], gap["share_diff_hi"]) == pytest.approx((0.08523, 0.95441), abs=1e-4)
    # deltas (1, 2, 3, 4) against (0, 0, 0, 0.5), in hundredths: the observed split (sum 10) and (0, 0, 0, 0.5)
    # (sum 0.5) are the only ones of 70 with |difference| >= 2.375: p = 2/70. Shifted by 0.5 (and by 4) four
    # (eight) splits tie the observed, p = 4/70 (8/70) > 0.05; a little further only two: the interval is [0.5, 4]
    assert (gap["mean_delta"], gap["null_mean_delta"], gap["delta_diff"]) == pytest.approx((0.025, 0.00125, 0.02375))
    assert gap["delta_p_value"] == pytest.approx(2 / 70)
    assert (gap["delta_diff_lo"], gap["delta_diff_hi"]) == pytest.approx((0.005, 0.04), abs=1e-7)
    mle = group(rows, "mle")  # one run (-0.01) against four: only the observed split of 5 is as extreme
    assert (mle["runs"], mle["share_p_value"], mle["delta_p_value"]) == (1, 1.0, pytest.approx(1 / 5))
    assert (mle["delta_diff"], mle["delta_diff_lo"], mle["delta_diff_hi"]) == (pytest.approx(-0.01125), -math.inf,
                                                                               math.inf)
    dialog = group(rows, "gap", category="dialog")  # every run at the baseline: nothing to tell apart
    assert (dialog["share_diff"], dialog["share_p_value"], dialog["delta_p_value"]) == (0, 1.0, 1.0)


def test_permutation_tests_by_hand():
    # sign flips of 1..6: only all-plus and all-minus of 64 reach |sum| >= 21. Shifted by 1 (by 6) a zero's sign
    # is free, so 4 of 64 tie (p 0.0625 > 0.05); any further, 2: the interval of the mean is [1, 6]
    assert mean_test([1, 2, 3, 4, 5, 6]) == pytest.approx((3.5, 1.0, 6.0, 2 / 64), abs=1e-7)
    assert mean_test([1, 2, 3, 4, 5]) == (3.0, -math.inf, math.inf, pytest.approx(2 / 32))  # 2/32 > 0.05: unbounded
    # 3 against 3: 2 of the 20 splits as extreme as the observed; never fewer, so no 95% interval
    assert mean_difference_test([1, 2, 3], [0, 0, 0]) == (2.0, -math.inf, math.inf, pytest.approx(0.1))
    # more relabelings than `resamples`: that many random ones and the observed (seeded: the same twice)
    x, y = [0.1 * i for i in range(12)], [0.1 * i - 0.3 for i in range(12)]
    random = mean_difference_test(x, y, resamples=2000, seed=3)
    assert random == mean_difference_test(x, y, resamples=2000, seed=3) and random[0] == pytest.approx(0.3)
    assert random[1] < 0.3 < random[2] and 0.05 < random[3] < 0.8
    assert fisher_exact(3, 3, 0, 3) == pytest.approx(0.1) and fisher_exact(2, 4, 2, 4) == pytest.approx(1.0)


def test_the_figure_marks_the_null_arms_range_in_every_panel(arms, tmp_path):
    figure = write_figures(load_path(arms), tmp_path, formats=("png",))["classification"]
    assert [ax.get_title() for ax in figure.axes] == ["gap", "mle", "random_direction"]
    for ax in figure.axes:
        band = next(c for c in ax.collections if c.get_gid() == "null:opt-350m")
        ys = np.concatenate([p.vertices[:, 1] for p in band.get_paths()])
        assert (ys.min(), ys.max()) == pytest.approx((0.40, 0.405))
    points = next(c for c in figure.axes[0].collections if c.get_gid() == "runs:opt-350m").get_offsets()
    assert sorted(points[:, 1]) == pytest.approx([0.41, 0.42, 0.43, 0.44])
    assert "range of the null arm (random_direction)" in [t.get_text() for t in figure.axes[-1].get_legend().texts]


def test_the_report_writes_the_new_tables_and_fills_a_document(arms, tmp_path):
    document = tmp_path / "docs" / "study.md"
    document.parent.mkdir()
    document.write_text(f"# A study\n\nProse before.\n\n{BEGIN}\nold tables\n{END}\n\nProse after.\n")
    cfg = OmegaConf.merge(OmegaConf.load(ROOT / "conf" / "report.yaml"),
                          {"inputs": [str(arms)], "out": str(tmp_path / "docs" / "study"), "document": str(document)})
    out = report(cfg)
    null = list(csv.DictReader(open(out / "null_arm.csv")))
    assert len(null) == 8 and float(group(null, "gap")["delta_p_value"]) == pytest.approx(2 / 70, abs=1e-6)
    selection = list(csv.DictReader(open(out / "selection.csv")))
    assert group(selection, "gap")["optimism_hi"] == "inf" and group(selection, "random_direction")["optimism"] == ""
    text = document.read_text()
    assert text.startswith("# A study\n\nProse before.\n\n" + BEGIN) and text.endswith(END + "\n\nProse after.\n")
    assert "old tables" not in text and "\n## GAP report\n" in text and "\n### Against the null arm" in text
    assert "![figure_classification](study/figure_classification.png)" in text
    assert "| gap | opt-350m | github | classification | 4 | 4 | 1.00 | 0.25 | 0.75 [0.09, 0.95] | 0.143 |" in text
    report(cfg)
    assert document.read_text() == text  # the same tables again: the document does not change
    document.write_text("# no markers\n")
    with pytest.raises(ConfigError, match="document=.*holding the lines <!-- gap.report:begin -->"):
        report(cfg)


def test_the_study_script_runs_its_grid_and_fills_the_document(tmp_path):
    """A rehearsal of docs/study-smollm2.md on the tiny random model: scripts/study.sh runs the grid (gap and the
    null arm, 2 samples, held-out evaluation; W&B left out here, test_tracking.py runs it) and the report
    rewrites only the document's block."""
    document, prose = tmp_path / "study.md", (ROOT / "docs" / "study-smollm2.md").read_text()
    document.write_text(prose)
    env = {**os.environ, "PYTHON": sys.executable, "GAP_DATA_DIR": str(DATA_DIR), "STUDY_DIR": str(tmp_path / "sweep"),
           "STUDY_DOC": str(document)}
    grid = ["model=tiny-random", "method=gap,random_direction", "corpus.index=0,1", "tasks.include=[copa]",
            "trainer.max_epochs=2", "eval.limit=2", "eval.heldout=true", f"paths.baseline_dir={tmp_path / 'baselines'}",
            "logger=none"]
    proc = subprocess.run([str(ROOT / "scripts" / "study.sh"), *grid], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = [json.loads(p.read_text()) for p in sorted((tmp_path / "sweep").glob("*/results.json"))]
    assert [(j["status"], j["config"]["method"]["name"], j["config"]["method"].get("direction_seed"))
            for j in jobs] == [("ok", "gap", None), ("ok", "random_direction", "42/github/0"), ("ok", "gap", None),
                               ("ok", "random_direction", "42/github/1")]
    assert all(j["heldout"] and len(j["history"]) == 2 for j in jobs)
    text = document.read_text()
    assert text.startswith(prose.split(BEGIN)[0] + BEGIN) and text.endswith(END + prose.split(END)[1])
    assert "| gap | tiny-random | all | classification | 2 | 2 |" in text  # against the null arm: 2 runs each
    assert "![figure_classification](study/figure_classification.png)" in text
    assert (tmp_path / "study" / "figure_classification.png").is_file()
    assert {p.name for p in (tmp_path / "study").glob("*.csv")} == {"summary.csv", "selection.csv", "null_arm.csv",
                                                                   "tasks.csv"}
