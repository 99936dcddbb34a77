"""lm-evaluation-harness tasks in GAP runs (`lm_eval.tasks`, gap.harness.tasks): one real run of the
fixture tasks of each request type beside copa (tiny-random, 2 steps, held-out evaluation, W&B offline)
read back from results.json, predictions, the console, W&B and the report, and its numbers checked
against the harness's own HF backend; the selection rules by hand; the errors before any model loads."""
import json
import sys

import pytest
from lm_eval.evaluator import evaluate
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
from omegaconf import open_dict

from gap.baselines import baseline_path
from gap.cli import run_cli
from gap.harness.tasks import HarnessSuite
from gap.modules.callbacks import AuthorsEarlyStop
from gap.results import best_epochs
from gap.scoring.metrics import with_averages
from gap.train import train
from tests.helpers import DATA_DIR, compose_cfg, gap
from tests.lm_eval_fixtures import FIXTURE_TASKS, write_fixture_tasks
from tests.wandb_files import offline_runs

LIMIT = 3
UNITS = [f"lm_eval/{name}" for name in FIXTURE_TASKS]
# each unit's score: its first metric, negated where lower is better
PRIMARY = {"fixture_mc": ("acc", 1), "fixture_ll": ("perplexity", -1), "fixture_rolling": ("word_perplexity", -1),
           "fixture_gen": ("exact_match,first-word", 1)}


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm_eval_tasks")
    write_fixture_tasks(root)
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory, fixtures, data_dir):
    """(run dir, results.json, stderr, its W&B run) of `gap.train` with the fixture tasks beside copa."""
    tmp = tmp_path_factory.mktemp("run")
    proc = gap("gap.train", "model=tiny-random", f"eval.limit={LIMIT}", "trainer.max_epochs=2", "eval.heldout=true",
               "tasks.include=[copa]", f"lm_eval.tasks=[{','.join(FIXTURE_TASKS)}]", f"lm_eval.include_path={fixtures}",
               "logger=wandb", "tracking.samples=2", tmp_path=tmp, env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wandb_run,) = offline_runs(tmp)
    return tmp, json.loads((tmp / "results.json").read_text()), proc.stderr, wandb_run


def test_every_evaluation_holds_the_harness_metrics_and_the_category_average(run):
    _, results, stderr, _ = run
    names = {f"lm_eval/{t}/{m}" for t, ms in {"fixture_mc": ["acc", "acc_norm"], "fixture_ll": ["perplexity", "acc"],
                                              "fixture_rolling": ["word_perplexity", "byte_perplexity",
                                                                  "bits_per_byte"],
                                              "fixture_gen": ["exact_match,first-word", "exact_match,whole"]}.items()
             for m in [*ms, "score"]}
    for metrics in [results["baseline"], *(h["metrics"] for h in results["history"])]:
        assert names | {"copa/acc", "avg/classification_acc", "avg/lm_eval_score"} == set(metrics)
        scores = [metrics[f"lm_eval/{t}/{m}"] * sign for t, (m, sign) in PRIMARY.items()]
        assert [metrics[f"lm_eval/{t}/score"] for t in PRIMARY] == scores
        assert metrics["avg/lm_eval_score"] == pytest.approx(sum(scores) / 4)
    # reported at the classification average's selection (lm_eval.select=false)
    chosen = results["best"]["classification"]["epoch"]
    score = results["history"][chosen]["metrics"]["avg/lm_eval_score"]
    assert results["best"]["lm_eval"] == {"epoch": chosen, "step": chosen + 1, "selected_by": "classification",
                                          "avg/lm_eval_score": score}
    step = next(line for line in stderr.splitlines() if line.startswith("eval step 2"))
    change = results["history"][1]["metrics"]["lm_eval/fixture_mc/acc"] - results["baseline"]["lm_eval/fixture_mc/acc"]
    assert f"lm_eval/fixture_mc/acc {results['history'][1]['metrics']['lm_eval/fixture_mc/acc']:.4f} ({change:+.4f})" \
        in step and "lm_eval/fixture_rolling/word_perplexity" in step


def test_the_harness_section_and_its_logged_samples(run):
    out, results, _, _ = run
    section = results["lm_eval"]["lm_eval/fixture_gen"]
    assert section["results"]["fixture_gen"]["exact_match,first-word"] == \
        results["metrics"]["lm_eval/fixture_gen/exact_match,first-word"]
    assert section["versions"] == {"fixture_gen": 1.0}
    assert section["n-samples"] == {"fixture_gen": {"original": 6, "effective": LIMIT}}
    samples = [json.loads(line) for line in (out / "predictions/lm_eval/fixture_gen.jsonl").read_text().splitlines()]
    assert [(s["doc_id"], s["filter"]) for s in samples] == [(i, f) for i in range(LIMIT)
                                                              for f in ("first-word", "whole")]
    assert {"doc_id", "arguments", "resps", "filtered_resps", "exact_match"} <= set(samples[0])
    assert samples[0]["arguments"][0][1] == {"until": ["\n", "."], "max_gen_toks": 12, "do_sample": False}
    # the held-out documents are the ones after the selection slice: fixture_rolling has 6, fixture_mc 8
    for unit, ids in (("fixture_rolling", [3, 4, 5]), ("fixture_mc", [3, 4, 5])):
        for where in ("heldout", "heldout/baseline"):
            rows = (out / f"predictions/{where}/lm_eval/{unit}.jsonl").read_text().splitlines()
            assert [json.loads(line)["doc_id"] for line in rows] == ids
    assert set(results["heldout"]["epochs"]) == {"classification", "lm_eval"}
    assert results["heldout"]["epochs"]["lm_eval"] == results["heldout"]["epochs"]["classification"]
    assert "lm_eval/fixture_mc/acc" in results["heldout"]["selected"]


def test_the_run_equals_the_harness_with_its_own_hf_backend(run, fixtures, tiny):
    """The unchanged model's metrics, selection slice and held-out rows, as `HFLM` scores the same model."""
    _, results, _, _ = run
    model, tokenizer = tiny
    hf = HFLM(pretrained=model, tokenizer=tokenizer, max_length=512, batch_size=4)
    loaded = TaskManager(include_path=str(fixtures), include_defaults=False).load(FIXTURE_TASKS)
    heldout = {t: list(range(LIMIT, min(2 * LIMIT, n))) for t, n in (("fixture_mc", 8), ("fixture_ll", 8),
                                                                   ("fixture_rolling", 6), ("fixture_gen", 6))}
    for metrics, slice_ in ((results["baseline"], {"limit": LIMIT}), (results["heldout"]["baseline"],
                                                                     {"samples": heldout})):
        theirs = evaluate(lm=hf, task_dict=loaded, bootstrap_iters=0, **slice_)["results"]
        for task, (metric, _) in PRIMARY.items():
            key = metric if "," in metric else f"{metric},none"
            assert metrics[f"lm_eval/{task}/{metric}"] == pytest.approx(theirs[task][key], rel=1e-4)


def test_wandb_gets_the_same_keys_as_our_tasks(run):
    _, results, _, wandb_run = run
    keys = wandb_run.history_keys()
    assert {"val/lm_eval/fixture_mc/acc", "delta/lm_eval/fixture_ll/perplexity", "val/avg/lm_eval_score",
            "heldout/selected/lm_eval/fixture_gen/exact_match,first-word"} <= keys
    higher, lower = wandb_run.metrics["val/lm_eval/fixture_mc/acc"].summary, \
        wandb_run.metrics["val/lm_eval/fixture_rolling/word_perplexity"].summary
    assert (higher.max, higher.min, lower.max, lower.min) == (True, False, False, True)
    assert wandb_run.metrics["val/lm_eval/fixture_gen/exact_match,first-word"].summary.max
    assert wandb_run.summary["selected/lm_eval/epoch"] == results["best"]["lm_eval"]["epoch"]
    table = wandb_run.table("tasks")
    rows = {(r[0], r[2]): dict(zip(table["columns"], r)) for r in table["data"]}
    ppl = rows[("lm_eval/fixture_ll", "perplexity")]
    assert ppl["kind"] == "lm_eval"
    assert ppl["baseline"] == pytest.approx(results["baseline"]["lm_eval/fixture_ll/perplexity"])
    samples = wandb_run.table("samples/lm_eval/fixture_gen")["data"]
    assert [r[0] for r in samples] == [0, 0] and samples[0][2] == "the"  # doc 0 under both filters; its target


def test_the_report_and_the_dashboard_take_the_category(run, tmp_path):
    from gap.dashboard import dashboard
    from gap.report import report

    out, results, _, wandb_run = run
    cfg = compose_cfg("report", [f"inputs=[{out}]", f"out={tmp_path}", "figure.formats=[png]"])
    report(cfg)
    summary = (tmp_path / "summary.csv").read_text()
    assert "lm_eval" in summary and (tmp_path / "figure_lm_eval.png").stat().st_size > 10_000
    tasks = (tmp_path / "tasks.csv").read_text()
    assert "lm_eval/fixture_mc/acc" in tasks
    panels = [p for s in dashboard(["copa"], FIXTURE_TASKS) for p in s["panels"]]
    history = {k for p in panels for k in p.get("history", []) if "lm_eval" in k}
    assert {"val/lm_eval/fixture_mc/score", "delta/avg/lm_eval_score"} <= history <= wandb_run.history_keys()


# ---------------------------------------------------------------- by hand

def evaluation(epoch, acc, score):
    return {"epoch": epoch, "step": epoch + 1, "metrics": {"avg/classification_acc": acc, "avg/lm_eval_score": score}}


def test_lm_eval_is_reported_at_the_run_selection_unless_selected_on_or_alone():
    history = [evaluation(0, 0.5, -9.0), evaluation(1, 0.7, -12.0), evaluation(2, 0.6, -3.0)]
    assert best_epochs(history)["lm_eval"] == {"epoch": 1, "step": 2, "avg/lm_eval_score": -12.0,
                                               "selected_by": "classification"}
    assert best_epochs(history, select_lm_eval=True)["lm_eval"] == {"epoch": 2, "step": 3, "avg/lm_eval_score": -3.0}
    alone = [{**h, "metrics": {"avg/lm_eval_score": h["metrics"]["avg/lm_eval_score"]}} for h in history]
    assert best_epochs(alone) == {"lm_eval": {"epoch": 2, "step": 3, "avg/lm_eval_score": -3.0}}
    # early stop: the lm_eval score (negative where lower is better) counts only when selected on
    for select, strikes in ((False, 1), (True, 0)):
        stop = AuthorsEarlyStop(first_epoch=1, patience=9, select_lm_eval=select)
        for h in history:
            stop.update(h["epoch"], h["metrics"])
        assert stop.strikes == strikes


def test_unit_metrics_and_score_from_the_harness_results():
    """Metric keys (filter kept unless `none`, stderrs left out), the score of a group (its own first metric)
    and of a tag (its tasks' first metrics, each signed)."""
    group = {"results": {"suite": {"alias": "suite", "acc,none": 0.5, "acc_stderr,none": 0.1, "sample_len": 8},
                         "a": {"alias": "a", "acc,none": 0.25, "acc_norm,none": 0.75},
                         "b": {"alias": "b", "perplexity,none": 12.0, "exact_match,strict": 0.5}},
             "score": {"lm_eval/suite/acc": 1}}
    assert HarnessSuite.metrics("lm_eval/suite", group) == {
        "lm_eval/suite/acc": 0.5, "lm_eval/a/acc": 0.25, "lm_eval/a/acc_norm": 0.75, "lm_eval/b/perplexity": 12.0,
        "lm_eval/b/exact_match,strict": 0.5, "lm_eval/suite/score": 0.5}
    tag = {**group, "score": {"lm_eval/a/acc": 1, "lm_eval/b/perplexity": -1}}
    metrics = HarnessSuite.metrics("lm_eval/tag", tag)
    assert metrics["lm_eval/tag/score"] == (0.25 - 12.0) / 2
    assert with_averages({**metrics, "lm_eval/other/score": 1.0})["avg/lm_eval_score"] == ((0.25 - 12.0) / 2 + 1.0) / 2


def test_harness_settings_key_the_baseline_cache(tmp_path):
    def path(*overrides):
        return baseline_path(compose_cfg("train", ["model=tiny-random", "lm_eval.tasks=[fixture_mc]",
                                                   f"paths.baseline_dir={tmp_path}", *overrides]), {})

    assert path() != path("lm_eval.num_fewshot=2") and path() == path("lm_eval.select=true")
    assert path() != baseline_path(compose_cfg("train", ["model=tiny-random", f"paths.baseline_dir={tmp_path}"]), {})


# ---------------------------------------------------------------- refused before any model loads

def run_in_process(tmp_path, *overrides, config="eval"):
    """`gap.eval` (or `gap.train`) as its command line runs a composed config: the exit code, the last line
    on stderr and results.json."""
    cfg = compose_cfg(config, ["model=tiny-random", "logger=none", "tasks.include=[]", "eval.limit=2",
                               f"paths.data_dir={DATA_DIR}", f"paths.baseline_dir={tmp_path}/baselines", *overrides])
    with open_dict(cfg):
        del cfg.hydra  # as Hydra hands the job its config
        cfg.paths.output_dir = str(tmp_path)
    try:
        run_cli(train, cfg)
        code = 0
    except SystemExit as exited:
        code = exited.code
    return code, json.loads((tmp_path / "results.json").read_text())


def test_harness_tasks_alone(tmp_path, fixtures):
    """`tasks.include=[]`: the harness tasks are the run's only category."""
    code, results = run_in_process(tmp_path, "lm_eval.tasks=[fixture_mc]", f"lm_eval.include_path={fixtures}")
    assert code == 0 and set(results["metrics"]) == {"lm_eval/fixture_mc/acc", "lm_eval/fixture_mc/acc_norm",
                                                     "lm_eval/fixture_mc/score", "avg/lm_eval_score"}


@pytest.mark.parametrize("case", ["no task", "no extra", "unknown task", "sampling", "dataset offline"])
def test_refused_before_the_model_loads_in_one_line(case, tmp_path, fixtures, monkeypatch, capsys):
    import datasets.config

    import gap.train

    write_fixture_tasks(tmp_path / "tasks")
    (tmp_path / "tasks" / "hub_task.yaml").write_text(  # a dataset of the hub, in no cache
        "task: hub_task\ndataset_path: gap-tests/never-cached\noutput_type: loglikelihood\n"
        "validation_split: validation\ndoc_to_text: '{{q}}'\ndoc_to_target: '{{a}}'\nmetric_list:\n  - metric: acc\n")
    sampled = tmp_path / "tasks" / "fixture_gen.yaml"
    sampled.write_text(sampled.read_text().replace("do_sample: false", "do_sample: true\n  temperature: 0.8"))
    monkeypatch.setattr(gap.train, "load_pretrained", lambda *a, **k: pytest.fail("the model was loaded"))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # as a process with no hub sets it
    if case == "no extra":
        monkeypatch.setitem(sys.modules, "lm_eval", None)  # `import lm_eval` fails
    names = {"no task": [], "no extra": ["arc_easy"], "unknown task": ["fixture_mcq"], "sampling": ["fixture_gen"],
             "dataset offline": ["hub_task"]}[case]
    code, results = run_in_process(tmp_path / "run", f"lm_eval.tasks=[{','.join(names)}]",
                                   f"lm_eval.include_path={tmp_path / 'tasks'}")
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and results["status"] == "failed" and results["metrics"] == {}
    start, end = {
        "no task": ("tasks.include=[] and lm_eval.tasks=[]: no task to evaluate", ""),
        "no extra": ("lm_eval.tasks needs lm-evaluation-harness: pip install 'gap[lm-eval]'", ""),
        "unknown task": ("unknown lm_eval task 'fixture_mcq'; closest: fixture_mc",
                         " (lm_eval.include_path=DIR adds task YAMLs of your own)"),
        "sampling": ("lm_eval task 'fixture_gen': generation asks for sampling (do_sample=True, temperature=0.8); "
                     "the gap backend decodes greedily only", ""),
        "dataset offline": ("lm_eval task 'hub_task': cannot read its dataset (Couldn't reach "
                            "'gap-tests/never-cached'", "; fetch it where there is network: python -m gap.data "
                                                        "fetch lm_eval.tasks=[hub_task]")}[case]
    assert last.startswith("error: " + start) and last.endswith(end), last


def test_fetching_without_network_names_the_harness_tasks(tmp_path):
    fetch = gap("gap.data", "fetch", "lm_eval.tasks=[hub_task]", "fetch.gap_files=false", "fetch.hub_tasks=false",
                tmp_path=tmp_path, env={"HF_ENDPOINT": "https://hub.invalid"}, timeout=120)
    assert fetch.returncode == 2 and fetch.stderr.strip().splitlines()[-1] == (
        "error: cannot reach the Hugging Face hub (https://hub.invalid): run `python -m gap.data fetch "
        "lm_eval.tasks=[hub_task]` on a machine with network (a login node), then point GAP_DATA_DIR / HF_HOME at "
        "what it wrote")
