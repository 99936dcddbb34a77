"""Runs of a W&B project, as our runs log them: config, `selected/<category>/...` summary keys (see
`gap.loggers.summarize_run`), and the unchanged model's evaluation as the first `val/...` row of the history."""
from gap.data.tasks import AVERAGES
from gap.errors import ConfigError, DataError
from gap.report.runs import Baseline, Results, Run, category_metrics, method_label
from gap.resolvers import wandb_offline


def _unwrap(value):
    return value["value"] if isinstance(value, dict) and set(value) == {"value"} else value


def _get(config: dict, dotted: str, default=None):
    """`model.name` from a nested, a flattened (`model/name`, `model.name`) or a {"value": ...} W&B config."""
    for key in (dotted, dotted.replace(".", "/")):
        if key in config:
            return _unwrap(config[key])
    node = config
    for part in dotted.split("."):
        node = _unwrap(node)
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return _unwrap(node)


def _first_evaluation(run) -> dict | None:
    """The first history row with validation averages: the unchanged model (logged at step 0)."""
    for row in run.scan_history():
        if any(row.get(f"val/{key}") is not None for key in AVERAGES.values()):
            return {k[len("val/"):]: v for k, v in row.items() if k.startswith("val/") and v is not None}
    return None


def load_wandb(path: str, api=None) -> Results:
    """Finished (`status: ok`) runs of `ENTITY/PROJECT`. Offline (no credentials or WANDB_MODE=offline) it
    fails at once: `api` is for tests."""
    if path.count("/") != 1 or not all(path.split("/")):
        raise ConfigError(f"wandb={path!r} is not valid; give ENTITY/PROJECT")
    if api is None:
        if wandb_offline():
            raise ConfigError(f"wandb={path}: W&B is offline here (no WANDB_API_KEY or netrc entry, or WANDB_MODE="
                              "offline); log in with network access, or report the sweep directory instead")
        import wandb

        try:
            api = wandb.Api(timeout=30)
        except Exception as err:  # noqa: BLE001 - any failure to reach W&B is one line
            raise ConfigError(f"wandb={path}: cannot reach W&B: {err}") from None
    out, seen_models = Results(), set()
    try:
        runs = list(api.runs(path))
    except Exception as err:  # noqa: BLE001
        raise DataError(f"wandb={path}: cannot list its runs: {err}") from None
    for run in runs:
        summary, config = dict(run.summary), dict(run.config)
        if summary.get("status") != "ok":
            continue
        model, corpus = _get(config, "model.name"), _get(config, "corpus.name")
        method = method_label(_get(config, "method.name", "gap"), bool(_get(config, "method.lora.enabled", False)))
        for category, key in AVERAGES.items():
            prefix = f"selected/{category}/"
            if summary.get(prefix + key) is None:
                continue
            tasks = category_metrics({k[len(prefix):]: v for k, v in summary.items() if k.startswith(prefix)},
                                     category)
            out.runs.append(Run(model, corpus, category, summary[prefix + key], tasks,
                                summary.get(prefix + "epoch"), method))
        if model not in seen_models and (first := _first_evaluation(run)):  # identical in every job of a model
            seen_models.add(model)
            for category, key in AVERAGES.items():
                if key in first:
                    out.baselines[(model, corpus, category)].append(Baseline(first[key],
                                                                             category_metrics(first, category)))
    if not out.runs:
        raise DataError(f"wandb={path}: no finished runs with selected evaluations")
    return out
