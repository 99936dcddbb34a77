"""`python -m gap.dashboard group=<sweep name> [out=FILE]`: the W&B workspace and report of a sweep, as code.

`dashboard(tasks, harness)` describes the sections and panels as plain data that names only keys our runs log
(`gap.tracking`, `gap.report.publish`); `build` turns the description into wandb-workspaces objects. With
W&B credentials and network both are saved and their URLs printed; offline the description and the
workspace's specification are written to `out`, to be published by running the command again online.
"""
import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from gap.cli import command
from gap.data.tasks import AVERAGES, LM_EVAL_CATEGORY, LM_EVAL_PREFIX, TASKS
from gap.errors import ConfigError, GapError
from gap.files import write_atomic
from gap.report.publish import FIGURE_KEYS, TABLE_KEYS
from gap.resolvers import wandb_offline
from gap.tracking.metrics import STEP

GROUP_BY = ("model.name", "corpus.name")  # config keys the runs are grouped by in every panel


def task_keys(task: str) -> list[str]:
    """The metric keys of a task under `prompt_style=gap` (harness adds `acc_norm`, left out of the panels); of a
    harness unit (`lm_eval/<name>`) its score (its metrics' names are the harness's, known once it has run)."""
    if task.startswith(LM_EVAL_PREFIX):
        return [f"{task}/{LM_EVAL_CATEGORY.metric}"]
    metric = f"{task}/{TASKS[task].category.metric}"
    return [metric] if TASKS[task].scored else [metric, f"{task}/loss"]  # a dialogue task's target NLL too


def line(title: str, keys: list[str]) -> dict:
    return {"type": "line", "title": title, "history": keys}


def dashboard(tasks: list[str], harness: list[str] = ()) -> list[dict]:
    """The sections of a sweep's dashboard, each `{"name", "panels"}`; a panel names its keys by where they
    live: `history` (per step), `summary`, `config`, `media` and `tables`. `harness`: the sweep's
    lm-evaluation-harness tasks (`lm_eval.tasks`), a section each and the lm_eval category."""
    categories = {name: key for name, key in AVERAGES.items() if harness or name != LM_EVAL_CATEGORY.name}
    averages = list(categories.values())
    tasks = [*tasks, *(LM_EVAL_PREFIX + name for name in harness)]
    selected = [{"type": "bar", "title": f"selected epoch: {name}", "summary": [f"selected/{name}/epoch"]}
                for name in categories]
    selected += [{"type": "scatter", "title": f"selected {key} against corpus.index", "config": ["corpus.index"],
                  "summary": [f"selected/{name}/{key}"]} for name, key in categories.items()]
    return [
        {"name": "Averages", "panels": [line(key, [f"val/{key}"]) for key in averages]},
        {"name": "Against the unchanged model", "panels": [line(f"delta {key}", [f"delta/{key}"]) for key in averages]
         + [{"type": "bar", "title": "baseline", "summary": [f"baseline/{key}" for key in averages]}]},
        *({"name": task, "panels": [line(key, [f"val/{key}"]) for key in task_keys(task)]
           + [line(f"delta {key}", [f"delta/{key}"]) for key in task_keys(task)]} for task in tasks),
        {"name": "Selected epochs", "panels": selected},
        {"name": "Figure 1", "panels": [{"type": "media", "title": "Figure 1",
                                         "media": [FIGURE_KEYS[c] for c in categories]}]},
        {"name": "Tables", "panels": [{"type": "table", "title": name, "tables": [name]}
                                      for name in ("tasks", *TABLE_KEYS.values(), *(f"samples/{t}" for t in tasks))]},
        {"name": "Runs", "panels": [{"type": "comparer", "title": "run comparer"}]},
    ]


def _panel(spec: dict):
    import wandb_workspaces.reports.v2 as wr

    kind, title = spec["type"], spec["title"]
    if kind == "line":
        return wr.LinePlot(title=title, x=STEP, y=spec["history"])
    if kind == "bar":
        return wr.BarPlot(title=title, metrics=[wr.SummaryMetric(k) for k in spec["summary"]])
    if kind == "scatter":
        return wr.ScatterPlot(title=title, x=wr.Config(spec["config"][0]), y=wr.SummaryMetric(spec["summary"][0]))
    if kind == "media":
        return wr.MediaBrowser(title=title, media_keys=spec["media"])
    if kind == "table":
        return wr.WeavePanelSummaryTable(table_name=spec["tables"][0])
    return wr.RunComparer(diff_only="split")


def build(entity: str, project: str, group: str, sections: list[dict]):
    """(workspace, report) of a sweep: its runs (W&B group `group`) grouped by model and corpus."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    filters = f"Group == {json.dumps(group)}"
    workspace = ws.Workspace(
        entity=entity, project=project, name=f"gap sweep {group}",
        sections=[ws.Section(name=s["name"], panels=[_panel(p) for p in s["panels"]], is_open=True) for s in sections],
        settings=ws.WorkspaceSettings(x_axis=STEP, max_runs=1000),
        runset_settings=ws.RunsetSettings(filters=filters, groupby=[ws.Config(k) for k in GROUP_BY]))
    blocks = [wr.H1(f"GAP sweep {group}"),
              wr.P("Each run is one GAP job; runs are grouped by model and corpus. Deltas are against the "
                   "unchanged model's evaluation (step 0).")]
    for s in sections:
        runset = wr.Runset(entity=entity, project=project, filters=filters, groupby=[f"config.{k}" for k in GROUP_BY])
        blocks += [wr.H2(s["name"]), wr.PanelGrid(runsets=[runset], panels=[_panel(p) for p in s["panels"]])]
    report = wr.Report(entity=entity, project=project, title=f"GAP sweep {group}", blocks=blocks)
    return workspace, report


def publish(cfg: DictConfig) -> Path | None:
    """Save the dashboards (online) or write their specification (offline); returns the file written."""
    if OmegaConf.is_missing(cfg, "group") or not cfg.group:
        raise ConfigError("group is missing: give the sweep's name, `python -m gap.dashboard group=<sweep name>`")
    group, logger = str(cfg.group), (cfg.get("logger") or {}).get("wandb")
    if logger is None:
        raise ConfigError("the logger config has no W&B entry; the dashboard takes its entity and project from "
                          "logger=wandb (logger.wandb.entity=..., logger.wandb.project=...)")
    entity, project = logger.get("entity"), logger.project
    sections = dashboard(list(cfg.tasks.include), list(cfg.lm_eval.tasks))
    if wandb_offline():
        workspace, _ = build(entity or "your-entity", project, group, sections)
        out = Path(cfg.out or f"outputs/dashboard/{group}.json")
        spec = {"group": group, "entity": entity, "project": project, "sections": sections,
                "workspace": workspace._spec}
        write_atomic(out, json.dumps(spec, indent=1) + "\n")
        print(f"W&B is offline here: the dashboards of {group} are described in {out}; run the same command "
              "with W&B credentials and network to save them")
        return out
    try:
        import wandb

        workspace, report = build(entity or wandb.Api().default_entity, project, group, sections)
        workspace.save()
        report.save()
    except Exception as err:  # noqa: BLE001 - any failure to reach W&B is one line
        raise GapError(f"cannot save the dashboards of {group} to W&B: {type(err).__name__}: {err}") from None
    print(f"workspace: {workspace.url}\nreport: {report.url}")
    return None


main = command("dashboard", publish)


if __name__ == "__main__":
    main()
