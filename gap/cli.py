"""The command lines (`gap.train`, `gap.eval`, `gap.report`, `gap.data fetch`): config entries checked
before Hydra composes, one job run under Hydra, and every `GapError` ended as one `error:` line.

Light at import (no torch or Lightning), so `gap.data fetch` starts fast."""
import logging
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import hydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep

from gap.errors import ConfigError, GapError, exit_code

CONF = Path(__file__).resolve().parents[1] / "conf"
log = logging.getLogger("gap")


def fail(err: GapError) -> NoReturn:
    """The command line's end for a `GapError`: one `error:` line on stderr and `exit_code(err)`."""
    print(f"error: {err}", file=sys.stderr)
    sys.exit(exit_code(err))


def group_options(group: str) -> list[str]:
    """The entries of a config group: the names of its files in `conf/<group>/`."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def check_config_entries(args: list[str]) -> None:
    """Refuse a group override (`model=...`, `trainer=...`) naming no file of that group in `conf/`, with
    the valid names (skipped when the command adds config search paths, whose groups may hold more)."""
    if any(a.lstrip("+~").startswith("hydra.searchpath") for a in args):
        return
    overrides = [a for a in args if not a.startswith("-")]
    for override in OverridesParser.create().parse_overrides(overrides):
        group = override.key_or_group
        if override.package is not None or not (CONF / group).is_dir():
            continue
        value = override.value()
        names = value.list if isinstance(value, ChoiceSweep) else value if isinstance(value, list) else [value]
        valid = group_options(group)
        for name in names:
            if isinstance(name, str) and name not in valid:
                raise ConfigError(f"{group}={name} is not a {group} entry; valid: {', '.join(valid)} "
                                  f"(or add conf/{group}/{name}.yaml)")


def quiet_libraries() -> None:
    """Keep library chatter (accelerator banners, tips, deprecations, download bars) off the console;
    `hydra.verbose=gap` keeps it (the gap logger at DEBUG)."""
    if log.isEnabledFor(logging.DEBUG):
        return
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("lm_eval").setLevel(logging.ERROR)  # the harness notes every default it applies
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    warnings.filterwarnings("ignore", ".*overridden `transfer_batch_to_device`.*")
    try:
        import transformers
    except ImportError:
        return
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def run_cli(job: Callable, cfg) -> None:
    """Run one job. A `GapError` becomes one `error:` line and exit code 2 (bad input) or 1; in a sweep,
    a failed job (any error) is reported and the grid goes on. SIGTERM ends the job, and a sweep, with
    exit code 143; a job that submitit stops at its time limit is preempted too (`gap.preemption`). The job
    itself records its failure (`results.json`)."""
    from gap.preemption import EXIT_CODE, is_preemption, raise_on_sigterm, stop_reason
    from gap.sweep import in_multirun

    quiet_libraries()
    try:
        with raise_on_sigterm():
            job(cfg)
    except GapError as err:
        if not in_multirun():
            fail(err)
        print(f"error: {err}", file=sys.stderr)
    except BaseException as err:
        if reason := stop_reason(err):
            print(f"preempted ({reason.split(':')[0]}): results so far in {cfg.paths.output_dir}; run it again to "
                  "redo the job", file=sys.stderr)
        if is_preemption(err):
            sys.exit(EXIT_CODE)
        if reason and isinstance(err, Exception):  # submitit's error at the time limit: the grid goes on
            return
        if not in_multirun() or not isinstance(err, Exception):
            raise
        log.exception("job failed: %s", cfg.paths.output_dir)
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)


def command(config_name: str, job: Callable, argv: Callable[[list[str]], list[str]] = list) -> Callable[[], None]:
    """The console entry point of a Hydra command: `argv` rewrites the arguments (bare paths, a verb),
    config entries are checked, then Hydra composes `conf/<config_name>.yaml` and `run_cli` runs `job`."""
    @hydra.main(version_base="1.3", config_path=str(CONF), config_name=config_name)
    def hydra_main(cfg) -> None:
        run_cli(job, cfg)

    def main() -> None:
        args = argv(sys.argv[1:])
        try:
            check_config_entries(args)
        except ConfigError as err:
            fail(err)
        sys.argv = [sys.argv[0], *args]
        hydra_main()
    return main
