"""`python -m gap.report SWEEP wandb.publish=true`: the report as a W&B run (`job_type=report`) in the
sweep's group: both figures as images, `summary`, `tasks`, `selection` and `null_arm` as tables (the last two
empty where no run allows them), and per category an interactive
scatter of the runs (model, corpus, index, selected value, baseline, method) against the corpus sample."""
import io
import os
from pathlib import Path

from gap.data.tasks import CATEGORIES
from gap.errors import ConfigError
from gap.files import read_results
from gap.report.runs import Results

RUN_COLUMNS = ("model", "corpus", "index", "category", "selected", "baseline", "method")
# the report run's W&B keys, which gap.dashboard's panels name
FIGURE_KEYS = {category: f"report/figure_{category}" for category in CATEGORIES}
TABLE_KEYS = {name: f"report/{name}" for name in ("summary", "tasks", "selection", "null_arm", "runs")}


def sweep_target(inputs: list[str]) -> dict:
    """The W&B project, entity and group the sweep's jobs logged to (from their `results.json`)."""
    for path in inputs:
        for file in sorted(Path(path).rglob("results.json")):
            config = (read_results(file) or {}).get("config", {})
            wandb = (config.get("logger") or {}).get("wandb")
            if wandb and config.get("group"):
                return {"project": wandb["project"], "entity": wandb.get("entity"), "group": config["group"]}
    raise ConfigError("wandb.publish=true needs a sweep directory whose jobs logged to W&B (logger=wandb); "
                      f"none among: {', '.join(inputs) or 'no inputs'}")


def run_rows(results: Results) -> list[list]:
    rows = []
    for r in results.runs:
        baseline = results.baseline(r.model, r.corpus, r.category)
        rows.append([r.model, r.corpus, r.index, r.category, r.average, baseline.average if baseline else None,
                     r.method])
    return rows


def _image(figure):
    from PIL import Image

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    buffer.seek(0)
    return Image.open(buffer)


def publish(results: Results, tables: dict, figures: dict, target: dict, out) -> str:
    """Log the report run to `target` (`sweep_target`; offline without credentials: under `out/wandb`) with
    `tables` ({name: (rows, columns)}); returns its URL, or its folder offline."""
    import wandb

    from gap.resolvers import wandb_offline

    os.environ.setdefault("WANDB_SILENT", "true")
    run = wandb.init(project=target["project"], entity=target["entity"], group=target["group"], job_type="report",
                     name=f"report-{target['group']}", dir=str(out), mode="offline" if wandb_offline() else "online")
    try:
        logged = {FIGURE_KEYS[c]: wandb.Image(_image(figure), caption=f"Figure 1: {c}")
                  for c, figure in figures.items()}
        for name, (rows, columns) in tables.items():
            logged[TABLE_KEYS[name]] = wandb.Table(columns=list(columns), data=[[r[c] for c in columns] for r in rows])
        runs = wandb.Table(columns=list(RUN_COLUMNS), data=run_rows(results))
        logged[TABLE_KEYS["runs"]] = runs
        for category in figures:
            mine = wandb.Table(columns=list(RUN_COLUMNS), data=[r for r in runs.data if r[3] == category])
            logged[f"report/scatter_{category}"] = wandb.plot.scatter(
                mine, "index", "selected", title=f"{category}: selected average per corpus sample")
        run.log(logged)
        where = run.url or f"{Path(run.dir).parent} (offline: upload it with `wandb sync`)"
    finally:
        run.finish()
    return where
