"""What W&B gets from a run, read back from real offline runs' own files (`tests.wandb_files`): metric
definitions, deltas, baselines, status and exit codes, tables, artifacts, a re-run's run id, the report run,
and the dashboard specification against the keys the runs really log."""
import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gap.data.tasks import load_examples
from gap.loggers import run_id
from tests.helpers import DATA_DIR, ROOT, compose_cfg, gap
from tests.wandb_files import offline_runs

TASKS = ["copa", "wizard_of_wikipedia"]
JOB = ["eval.limit=2", "logger=wandb", "model=tiny-random", "tasks=quick"]
ENV = {**os.environ, "WANDB_MODE": "offline", "GAP_DATA_DIR": str(DATA_DIR)}


def multirun(tmp_path, *overrides, name="grid") -> subprocess.Popen:
    """A sweep (`--multirun`) into `tmp_path`, started."""
    return subprocess.Popen([sys.executable, "-m", "gap.train", "--multirun", f"paths.log_dir={tmp_path}",
                             f"paths.baseline_dir={tmp_path}/baselines", f"sweep.name={name}", *JOB, *overrides],
                            cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def md5_b64(path: Path) -> str:
    return base64.b64encode(hashlib.md5(path.read_bytes()).digest()).decode()


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, data_dir):
    """One finished job (2 steps, held-out evaluation, checkpoints, 1 sample row per task) and the report
    published from its sweep: (job dir, its W&B run, results.json, the report's W&B run)."""
    tmp = tmp_path_factory.mktemp("sweep")
    proc = multirun(tmp, "trainer.max_epochs=2", "eval.heldout=true", "save_checkpoint=true", "tracking.samples=1",
                    "corpus.index=3", "logger.wandb.entity=my-team")
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    assert "anonymous setting has no effect" not in err  # what Lightning's own WandbLogger makes wandb print
    sweep_dir = tmp / "train" / "multiruns" / "grid"
    job = next(p for p in sweep_dir.iterdir() if p.name.startswith("corpus.index=3"))
    report = subprocess.run([sys.executable, "-m", "gap.report", str(sweep_dir), "wandb.publish=true",
                             "figure.formats=[png]"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert report.returncode == 0, report.stderr[-3000:]
    assert "published to W&B (group grid, job_type=report)" in report.stdout
    (run,) = offline_runs(job)
    (report_run,) = offline_runs(sweep_dir / "report")
    return job, run, json.loads((job / "results.json").read_text()), report_run


def evaluation_rows(run) -> list[dict]:
    return [row for row in run.history if "val/avg/classification_acc" in row]


def test_every_key_is_defined_against_the_step_with_its_summaries(sweep):
    _, run, results, _ = sweep
    keys = {k for k in run.history_keys() if k.startswith(("val/", "delta/", "train/", "heldout/"))}
    assert {"val/copa/acc", "delta/avg/dialog_f1", "train/nll", "heldout/selected/copa/acc"} <= keys
    for key in keys:
        metric = run.metrics[key]
        assert metric.step_metric == "trainer/global_step", key
        higher = key.endswith(("acc", "f1"))
        lower = key.endswith(("loss", "nll"))
        # a metric keeps its first value beside the best and the last; other keys (step_taken) the last
        assert (metric.summary.first, metric.summary.last) == (higher or lower, True), key
        assert (metric.summary.max, metric.summary.min) == (higher, lower), key
    # the summary W&B keeps: the loss's first value is the baseline's, its min the lowest evaluation
    losses = [row["val/wizard_of_wikipedia/loss"] for row in evaluation_rows(run)]
    assert run.summary["val/wizard_of_wikipedia/loss"] == {"first": losses[0], "min": min(losses), "last": losses[-1]}


def test_deltas_at_every_evaluation_against_the_unchanged_model(sweep):
    _, run, results, _ = sweep
    baseline = results["baseline"]
    rows = evaluation_rows(run)
    assert [row["trainer/global_step"] for row in rows] == [0, 1, 2]  # the baseline, then after each step
    assert rows[0]["val/wizard_of_wikipedia/loss"] == pytest.approx(baseline["wizard_of_wikipedia/loss"])
    zeros = next(row for row in run.history if "delta/copa/acc" in row)  # the baseline's own deltas
    assert all(zeros[f"delta/{k}"] == 0 for k in baseline)
    for row, evaluation in zip(rows[1:], results["history"]):
        for key, value in evaluation["metrics"].items():
            assert row[f"val/{key}"] == pytest.approx(value, rel=1e-6)  # Lightning logs float32
            assert row[f"delta/{key}"] == pytest.approx(row[f"val/{key}"] - baseline[key], abs=1e-12)
    assert rows[-1]["delta/wizard_of_wikipedia/loss"] > 0  # ascent raised the dialogue loss


def test_summary_holds_status_baseline_and_selection(sweep):
    job, run, results, _ = sweep
    assert run.summary["status"] == "ok" and run.exit_code == 0
    assert {k: run.summary[f"baseline/{k}"] for k in results["baseline"]} == pytest.approx(results["baseline"])
    for category, best in results["best"].items():
        assert run.summary[f"selected/{category}/epoch"] == best["epoch"]
    assert run.run.run_id == run_id(job) and run.run.run_group == "grid" and run.run.entity == "my-team"


def test_tables_per_task_and_samples(sweep):
    _, run, results, _ = sweep
    tasks = run.table("tasks")
    rows = {(r[0], r[2]): dict(zip(tasks["columns"], r)) for r in tasks["data"]}
    assert set(rows) == {tuple(k.split("/", 1)) for k in results["metrics"]}
    loss = rows[("wizard_of_wikipedia", "loss")]
    epoch = results["best"]["dialog"]["epoch"]
    selected = results["history"][epoch]["metrics"]["wizard_of_wikipedia/loss"]
    assert loss["kind"] == "dialog" and loss["selected_epoch"] == epoch
    assert loss["baseline"] == pytest.approx(results["baseline"]["wizard_of_wikipedia/loss"])
    assert loss["selected"] == pytest.approx(selected)
    assert loss["delta"] == pytest.approx(selected - loss["baseline"])
    assert loss["last"] == pytest.approx(results["metrics"]["wizard_of_wikipedia/loss"])
    assert loss["heldout_selected"] == pytest.approx(results["heldout"]["selected"]["wizard_of_wikipedia/loss"])

    copa = run.table("samples/copa")
    assert copa["columns"] == ["index", "input", "target", "baseline", "baseline_score", "selected", "selected_score"]
    (row,) = copa["data"]  # tracking.samples=1
    example = load_examples(DATA_DIR, "copa", "validation", limit=1)[0]
    baseline_pred = json.loads((sweep[0] / "predictions" / "baseline" / "copa.jsonl").read_text().splitlines()[0])
    assert row[1] == example.context and row[2] == example.choices[example.label]
    assert row[3] == example.choices[baseline_pred["pred"]] and row[4] == float(baseline_pred["pred"] == example.label)
    dialogue = run.table("samples/wizard_of_wikipedia")["data"][0]
    reply = json.loads((sweep[0] / "predictions/baseline/wizard_of_wikipedia.jsonl").read_text().splitlines()[0])
    assert dialogue[2] == reply["target"] and dialogue[3] == reply["pred"] and dialogue[4] == reply["f1"]


def test_results_and_checkpoints_are_artifacts(sweep):
    job, run, _, _ = sweep
    (results,) = [a for a in run.artifacts if a.type == "eval_results"]
    assert results.name == f"results-{run.run.run_id}" and "ok" in results.aliases
    files = {c.path: c.digest for c in results.manifest.contents}
    assert files["results.json"] == md5_b64(job / "results.json")
    assert files["predictions/copa.jsonl"] == md5_b64(job / "predictions" / "copa.jsonl")
    assert "predictions/heldout/baseline/wizard_of_wikipedia.jsonl" in files
    models = {alias: a for a in run.artifacts if a.type == "model" for alias in a.aliases if alias != "latest"}
    assert set(models) == {"last", "selected-classification", "selected-dialog"}
    for alias, folder in (("last", "checkpoint"), ("selected-dialog", "checkpoint-selected-dialog")):
        artifact = models[alias]
        assert artifact.name == f"model-{run.run.run_id}"
        weights = next(c for c in artifact.manifest.contents if c.path == "model.safetensors")
        assert weights.ref == (job / folder / "model.safetensors").resolve().as_uri()  # by reference, not uploaded
        assert weights.digest == md5_b64(job / folder / "model.safetensors")


def test_the_report_run_in_the_sweeps_group(sweep):
    _, _, results, report = sweep
    assert report.run.run_group == "grid" and report.run.job_type == "report" and report.exit_code == 0
    runs = report.table("report/runs")
    assert runs["columns"] == ["model", "corpus", "index", "category", "selected", "baseline", "method"]
    by_category = {r[3]: r for r in runs["data"]}
    assert by_category["dialog"][:3] == ["tiny-random", "github", 3] and by_category["dialog"][6] == "gap"
    assert by_category["dialog"][4] == pytest.approx(results["best"]["dialog"]["avg/dialog_f1"])
    assert by_category["dialog"][5] == pytest.approx(results["baseline"]["avg/dialog_f1"])
    summary = report.table("report/summary")
    assert summary["columns"][:5] == ["method", "model", "corpus", "category", "runs"] and len(summary["data"]) == 4
    # the selection's question as a table, computed by hand from the one run's results.json; no null arm ran
    selection = report.table("report/selection")
    dialog = next(dict(zip(selection["columns"], r)) for r in selection["data"] if r[3] == "dialog")
    selected, base = results["best"]["dialog"]["avg/dialog_f1"], results["baseline"]["avg/dialog_f1"]
    heldout = {k: results["heldout"][k]["avg/dialog_f1"] for k in ("selected", "baseline")}
    assert (dialog["runs"], dialog["heldout_runs"], dialog["beat_baseline"]) == (1, 1, float(selected > base))
    assert dialog["heldout_delta"] == pytest.approx(heldout["selected"] - heldout["baseline"])
    assert dialog["optimism"] == pytest.approx(selected - base - dialog["heldout_delta"])
    assert report.table("report/null_arm")["data"] == []
    for category in ("classification", "dialog"):
        image = report.history_value(f"report/figure_{category}/path")
        assert (report.folder / "files" / image).stat().st_size > 10_000


def test_the_dashboard_names_only_keys_the_runs_log(sweep, tmp_path, monkeypatch, capsys):
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces.expr import expr_to_filters

    from gap.dashboard import GROUP_BY, build, publish

    _, run, _, report = sweep
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = publish(compose_cfg("dashboard", ["group=grid", "tasks=quick", f"out={tmp_path}/dash.json"]))
    assert "run the same command with W&B credentials and network" in capsys.readouterr().out
    spec = json.loads(out.read_text())
    assert spec["group"] == run.run.run_group and spec["project"] == run.run.project
    assert [s["name"] for s in spec["sections"]] == [
        "Averages", "Against the unchanged model", *TASKS, "Selected epochs", "Figure 1", "Tables", "Runs"]
    panels = [p for s in spec["sections"] for p in s["panels"]]
    logged = run.history_keys() | report.history_keys()
    for panel in panels:
        assert set(panel.get("history", [])) <= run.history_keys(), panel
        assert set(panel.get("summary", [])) <= set(run.summary), panel
        for key in panel.get("config", []):
            section, name = key.split(".")
            assert name in run.config[section], panel
        for key in panel.get("media", []) + panel.get("tables", []):
            assert f"{key}/path" in logged, panel
    assert {p["type"] for p in panels} == {"line", "bar", "scatter", "media", "table", "comparer"}
    # the workspace W&B stores: one section per described section, grouped by model and corpus, this group only
    workspace = spec["workspace"]["spec"]["section"]
    assert [s["name"] for s in workspace["panelBankConfig"]["sections"]] == [s["name"] for s in spec["sections"]]
    runset = workspace["runSets"][0]
    assert [g["name"] for g in runset["grouping"]] == ["model.value.name", "corpus.value.name"]
    (only,) = runset["filters"]["filters"]
    assert only["key"]["name"] == "group" and only["value"] == "grid"
    # the report: per section a heading and its panels, over the runs of this sweep's group, grouped by config
    # keys they hold (W&B turns the runset's filter expression into the filter below when the report is saved)
    blocks = build("me", spec["project"], spec["group"], spec["sections"])[1].blocks
    assert [b.text for b in blocks if isinstance(b, wr.H2)] == [s["name"] for s in spec["sections"]]
    grids = [b for b in blocks if isinstance(b, wr.PanelGrid)]
    assert [len(g.panels) for g in grids] == [len(s["panels"]) for s in spec["sections"]]
    for grid in grids:
        (runset,) = grid.runsets
        where = expr_to_filters(runset.filters)
        assert (where.key.name, where.op, where.value) == ("group", "=", run.run.run_group)
        assert runset.groupby == [f"config.{key}" for key in GROUP_BY]
    assert all(run.config[section][name] for section, name in (key.split(".") for key in GROUP_BY))


def test_a_failed_job_says_so_in_wandb(tmp_path, data_dir):
    # a real failure after the baseline: early stopping on a metric no evaluation logs
    proc = gap("gap.train", *JOB, "tasks.include=[copa]", "trainer.max_epochs=2",
               "+callbacks.stop._target_=lightning.pytorch.callbacks.EarlyStopping",
               "+callbacks.stop.monitor=val/no_such_metric", tmp_path=tmp_path)
    assert proc.returncode != 0
    (run,) = offline_runs(tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"] == "failed" and "no_such_metric" in results["error"]
    assert run.summary["status"] == "failed" and run.exit_code == 1
    assert run.summary["baseline/copa/acc"] == pytest.approx(results["baseline"]["copa/acc"])
    assert "failed" in next(a for a in run.artifacts if a.type == "eval_results").aliases


def preempt(tmp_path) -> Path:
    """Start the one-job sweep, SIGTERM it after its first step's evaluation; returns the job's directory."""
    def written():  # results.json files and when they were written
        return {f: f.stat().st_mtime_ns for f in (tmp_path / "train" / "multiruns" / "grid").glob("*/results.json")}

    before, proc = written(), multirun(tmp_path, "tasks.include=[copa]", "trainer.max_epochs=500")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        files = [f for f, stamp in written().items() if before.get(f) != stamp]
        if files and len(json.loads(files[0].read_text()).get("history", [])) >= 1:
            break
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    return files[0].parent


def test_a_preempted_job_run_again_resumes_its_wandb_run(tmp_path, data_dir):
    job = preempt(tmp_path)
    (first,) = offline_runs(job)
    assert first.summary["status"] == "preempted" and first.preempting and first.exit_code == 143
    baseline = json.loads((job / "results.json").read_text())["baseline"]["avg/classification_acc"]
    assert first.summary["baseline/avg/classification_acc"] == pytest.approx(baseline)
    assert preempt(tmp_path) == job  # the same job, run again
    runs = offline_runs(job)
    assert len(runs) == 2 and runs[0].run.run_id == runs[1].run.run_id == run_id(job)


def test_the_offline_check_honours_a_self_hosted_servers_host(tmp_path, monkeypatch):
    from gap.resolvers import wandb_offline

    netrc = tmp_path / ".netrc"
    netrc.write_text(f"machine wandb.example.org login user password {'x' * 40}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    assert wandb_offline()  # a login for another server is no login for W&B's cloud
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")
    assert not wandb_offline()
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_offline()


@pytest.mark.parametrize("overrides, message", [([], "group is missing"),
                                                (["group=grid", "logger=none"], "no W&B entry")])
def test_the_dashboard_refuses_bad_input(overrides, message):
    from gap.dashboard import publish
    from gap.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        publish(compose_cfg("dashboard", overrides))


def test_sample_rows_in_both_prompt_styles(data_dir):
    from gap.data.evaluation import load_eval_examples
    from gap.tracking.tables import MAX_CHARS, sample_rows

    for style in ("gap", "harness"):
        (piqa,) = load_eval_examples(data_dir, ["piqa"], "validation", 3, style).values()
        records = [{"index": e.index, "label": e.label, "pred": 1 - e.label} for e in piqa]  # all wrong
        after = [dict(r, pred=r["label"]) for r in records[:1]]  # the selected weights right on the first
        rows = sample_rows(piqa, records, after, 2)
        assert len(rows) == 2 and [r[0] for r in rows] == [e.index for e in piqa[:2]]
        first = piqa[0]
        assert rows[0][2] == first.choices[first.label] and rows[0][3] == first.choices[1 - first.label]
        assert rows[0][4:] == [0.0, first.choices[first.label], 1.0] and rows[1][5:] == [None, None]
        assert first.choices[0].strip() and 0 < len(rows[0][1]) <= MAX_CHARS + 1
        assert rows[0][1].startswith((first.context if style == "gap" else first.requests[0][0])[:20])


def test_publishing_a_report_needs_a_sweep_that_logged_to_wandb(tmp_path):
    from gap.errors import ConfigError
    from gap.report import report

    with pytest.raises(ConfigError, match="wandb.publish=true needs a sweep directory whose jobs logged to W&B"):
        report(compose_cfg("report", [f"inputs=[{tmp_path}]", "wandb.publish=true"]))
    assert not list(tmp_path.iterdir())  # refused before anything was written


@pytest.mark.parametrize("override, message", [
    ("tracking.samples=-1", "tracking.samples=-1 is not valid: input should be greater than or equal to 0"),
    ("tracking.upload_checkpoints=maybe",
     "tracking.upload_checkpoints='maybe' is not valid: input should be a valid boolean")])
def test_tracking_settings_are_checked(override, message):
    from gap.errors import ConfigError
    from gap.schema import validate_config

    with pytest.raises(ConfigError) as err:
        validate_config(compose_cfg("train", [override]))
    assert str(err.value) == message
