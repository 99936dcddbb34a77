"""lm-evaluation-harness tasks in GAP runs (`lm_eval.tasks=[...]`): loaded and checked before any model
loads, then evaluated through `GapLM` at every evaluation, with the harness's own prompts, few-shot
examples, filters, metrics and aggregation, on the documents of the selection slice (the first
`eval.limit` of each task's evaluation split) or on the held-out ones after it.

Each listed name (a task, a group or a tag) is one unit, `lm_eval/<name>` among the run's tasks. Its
metrics are `lm_eval/<task>/<metric>` for the unit and for every task under it (the harness's metric
names, with `,<filter>` unless the filter is `none`), and `lm_eval/<name>/score`: its primary metric (the
first the harness reports for it; for a unit with no metrics of its own, the mean of its tasks'), negated
where lower is better, so that higher is always better. The `lm_eval` category averages the scores.
"""
import contextlib
import difflib
import functools
import hashlib
import io
import json
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path

from gap.data.tasks import LM_EVAL_PREFIX
from gap.errors import ConfigError, DataError

EXTRA = "pip install 'gap[lm-eval]'"
NOT_METRICS = {"alias", "name", "sample_len"}  # entries of the harness's results that are no metric


@dataclass(frozen=True)
class HarnessDoc:
    """One document of a harness task: an evaluation item of its `lm_eval/<name>` unit."""
    task: str    # the harness task (a group's subtask)
    index: int   # its doc_id: the row in the task's evaluation split
    digest: str  # its content and its task's config, so that an edited task is another baseline setup


def require_harness() -> None:
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise ConfigError(f"lm_eval.tasks needs lm-evaluation-harness: {EXTRA}") from None


@functools.cache
def task_manager(include_path: str | None, defaults: bool = True):
    """The harness's index of the task YAMLs under `include_path` and (`defaults`) of its own (seconds: kept
    for the process). Without the hub, datasets are read from the local cache only (not retried for most
    of a minute)."""
    require_harness()
    if include_path is not None and not Path(include_path).is_dir():
        raise ConfigError(f"lm_eval.include_path={include_path} is not a folder (of task YAMLs)")
    from gap.hub import hub_endpoint, reachable

    if not reachable(hub_endpoint()):
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path, include_defaults=defaults)


def manager_for(names: list[str], include_path: str | None):
    """The index `names` are found in: `include_path`'s alone where it holds them all (its tasks take
    precedence over the harness's anyway; the harness's own take seconds to index), else with the harness's."""
    if include_path is not None and set(names) <= set(task_manager(include_path, defaults=False).all_tasks):
        return task_manager(include_path, defaults=False)
    return task_manager(include_path)


def check_names(names: list[str], include_path: str | None) -> None:
    """Refuse a name the harness does not know, with the closest ones (and any name without the harness)."""
    require_harness()
    known = manager_for(names, include_path).all_tasks
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
            raise ConfigError(f"unknown lm_eval task {name!r}" + (f"; closest: {', '.join(close)}" if close else "")
                              + " (lm_eval.include_path=DIR adds task YAMLs of your own)")


def load_unit(name: str, include_path: str | None):
    """The harness's tasks of one name (`TaskManager.load`); a dataset that cannot be read is one line naming
    the task and the command that fetches it."""
    from gap.harness.backend import SamplingRefused, greedy_settings

    try:
        with quiet():
            try:
                loaded = manager_for([name], include_path).load([name])
            except (TypeError, KeyError, ValueError):  # a YAML of one's own naming the harness's tasks (a group)
                loaded = task_manager(include_path).load([name])
    except OSError as err:  # the hub unreachable (ConnectionError), a file missing
        raise DataError(f"lm_eval task {name!r}: cannot read its dataset ({err}); fetch it where there is network: "
                        f"python -m gap.data fetch lm_eval.tasks=[{name}]") from None
    for task_name, task in loaded["tasks"].items():
        if task.get_config("output_type") == "generate_until":
            try:
                greedy_settings(task.get_config("generation_kwargs") or {}, task_name)
            except SamplingRefused as err:
                raise ConfigError(f"lm_eval {err}") from None
    return loaded


def fetch_datasets(names: list[str], include_path: str | None) -> dict[str, int]:
    """The datasets of the harness tasks of `names` into the datasets cache (the harness downloads them as it
    loads its tasks; `gap.data fetch`): the documents of each name's evaluation splits."""
    check_names(names, include_path)
    return {f"lm_eval {name}": sum(len(task.eval_docs) for task in load_unit(name, include_path)["tasks"].values())
            for name in names}


def _digest(value) -> str:
    """A digest of a task's config or a document, the same in every process (a function by its name)."""
    from lm_eval.utils import handle_non_serializable

    def plain(o):
        return f"{o.__module__}.{o.__qualname__}" if callable(o) and hasattr(o, "__qualname__") else \
            handle_non_serializable(o)

    return hashlib.sha256(json.dumps(value, sort_keys=True, default=plain).encode()).hexdigest()


class HarnessSuite:
    """The harness tasks of a run, loaded once (`lm_eval` config: `tasks`, `include_path`, `num_fewshot`,
    `bootstrap_iters`), each name a unit (`lm_eval/<name>`), evaluated through `GapLM(model, tokenizer,
    **lm_options)`."""

    def __init__(self, names: list[str], include_path: str | None = None, num_fewshot: int | None = None,
                 bootstrap_iters: int = 0, lm_options: dict | None = None):
        check_names(names, include_path)
        self.bootstrap_iters, self.lm_options = bootstrap_iters, lm_options or {}
        self.units = {LM_EVAL_PREFIX + name: load_unit(name, include_path) for name in names}
        for loaded in self.units.values():
            for task in loaded["tasks"].values():  # as `simple_evaluate` sets them
                default = task.get_config("num_fewshot")
                if num_fewshot is not None and default != 0:
                    task.set_config(key="num_fewshot", value=num_fewshot)
                elif default is None:
                    task.set_config(key="num_fewshot", value=0)

    def examples(self, limit: int | None, heldout: bool = False) -> dict[str, list[HarnessDoc]]:
        """Each unit's documents: the first `limit` of each of its tasks' evaluation split, or (`heldout`)
        the `limit` after them (what there is)."""
        out = {}
        for unit, loaded in self.units.items():
            out[unit] = []
            for name, task in loaded["tasks"].items():
                config, docs = _digest(task.dump_config()), task.eval_docs
                start = limit if heldout else 0
                stop = len(docs) if limit is None else min(len(docs), start + limit)
                out[unit] += [HarnessDoc(name, i, _digest([config, docs[i]])) for i in range(start, stop)]
        return out

    def evaluate(self, model, tokenizer, unit: str, docs: list[HarnessDoc]) -> tuple[list[dict], dict]:
        """The harness's evaluation of a unit's documents by the model (`lm_eval.evaluator.evaluate`, seeded as
        `simple_evaluate` seeds it, every time alike): the logged samples (with `task` and `index`: the doc_id)
        and the unit's section (`results`, `versions`, `n-samples`, `n-shot`, `higher_is_better`, and `score`:
        the metric keys its score averages)."""
        from lm_eval.defaults import DEFAULT_OTHER_SEED
        from lm_eval.evaluator import evaluate
        from lm_eval.utils import handle_non_serializable

        from gap.harness.backend import GapLM

        lm = GapLM(model, tokenizer, **self.lm_options)
        loaded = self.units[unit]
        chosen: dict[str, list[int]] = {}
        for doc in docs:
            chosen.setdefault(doc.task, []).append(doc.index)
        chosen = {task: sorted(ids) for task, ids in chosen.items()}
        tasks = {name: task for name, task in loaded["tasks"].items() if name in chosen}
        for task in tasks.values():
            task.set_fewshot_seed(seed=DEFAULT_OTHER_SEED)
        # the first documents of every task: the harness's `limit`, else its `samples`
        longest = max(len(ids) for ids in chosen.values())
        prefix = all(ids == list(range(min(longest, len(tasks[t].eval_docs)))) for t, ids in chosen.items())
        with _seeded(), quiet():
            out = evaluate(lm=lm, task_dict={**loaded, "tasks": tasks}, limit=longest if prefix else None,
                           samples=None if prefix else chosen, bootstrap_iters=self.bootstrap_iters, log_samples=True)
        samples = [{"task": name, "index": s["doc_id"], **s} for name in tasks for s in out["samples"][name]]
        section = {key: out[key] for key in ("results", "versions", "n-samples", "n-shot", "higher_is_better")}
        section["score"] = _score_signs(unit.removeprefix(LM_EVAL_PREFIX), list(tasks), out)
        return json.loads(json.dumps([samples, section], default=handle_non_serializable))

    @staticmethod
    def metrics(unit: str, section: dict) -> dict[str, float]:
        """`lm_eval/<task>/<metric>` for every task and group of a unit's section, and the unit's score."""
        metrics = {}
        for task, entry in section["results"].items():
            for key, value in entry.items():
                if _is_metric(key, value):
                    metrics[_our_key(task, key)] = float(value)
        signed = [metrics[key] * sign for key, sign in section["score"].items()]
        metrics[f"{unit}/score"] = sum(signed) / len(signed) if signed else float("nan")
        return metrics


def _is_metric(key: str, value) -> bool:
    """Whether an entry of the harness's results is a metric's value (not its name, size or stderr)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return number and key not in NOT_METRICS and "_stderr" not in key


def _score_signs(name: str, tasks: list[str], out: dict) -> dict[str, int]:
    """The metric keys a unit's score averages, each with its sign (-1 where lower is better): the unit's
    first metric, or where it has none (a tag, a group without aggregation), each of its tasks' first."""
    signs = {}
    for task in [name] if _first_metric(out["results"].get(name, {})) else tasks:
        key = _first_metric(out["results"][task])
        if key is None:
            continue
        metric = key.split(",")[0]
        directions = out["higher_is_better"]  # a group's metric: as its tasks' of that name
        higher = (directions.get(task) or {}).get(metric, next((d[metric] for d in directions.values()
                                                                 if metric in d), True))
        signs[_our_key(task, key)] = 1 if higher else -1
    return signs


def _our_key(task: str, key: str) -> str:
    """`lm_eval/<task>/<metric>` of the harness's `<metric>,<filter>` (the filter dropped where it is `none`)."""
    metric, _, kept = key.partition(",")
    return f"{LM_EVAL_PREFIX}{task}/{metric if kept in ('', 'none') else key}"


def _first_metric(entry: dict) -> str | None:
    return next((k for k, v in entry.items() if _is_metric(k, v)), None)


def quiet():
    """The harness's progress bars (and the datasets library's) kept off the console, unless `hydra.verbose=gap`
    (`gap.cli.quiet_libraries`)."""
    if logging.getLogger("gap").isEnabledFor(logging.DEBUG):
        return contextlib.nullcontext()
    return contextlib.redirect_stderr(io.StringIO())


@contextlib.contextmanager
def _seeded():
    """Python's, NumPy's and torch's random states as `simple_evaluate` seeds them, restored after, so that
    an evaluation in the middle of a run changes nothing else."""
    import numpy as np
    import torch
    from lm_eval.defaults import DEFAULT_OTHER_SEED, DEFAULT_RANDOM_SEED

    state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(DEFAULT_RANDOM_SEED)
        np.random.seed(DEFAULT_OTHER_SEED)
        torch.manual_seed(DEFAULT_OTHER_SEED)
        try:
            yield
        finally:
            random.setstate(state)
            np.random.set_state(np_state)
