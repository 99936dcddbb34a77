"""Config group choices (`model=...`, `trainer=...`) checked before Hydra composes, so a misspelt
entry is one `error:` line with the valid names and exit code 2, like every other bad input."""
import sys
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep

from gap.errors import ConfigError, fail

CONF = Path(__file__).resolve().parents[1] / "conf"


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def check_choices(args: list[str]) -> None:
    """Refuse a group override naming no file of that group in `conf/` (skipped when the command adds
    config search paths, whose groups may hold more entries)."""
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


def hydra_entry(hydra_main):
    """`hydra_main` (a `@hydra.main` function), after `check_choices` on the command line's overrides."""
    def main():
        try:
            check_choices(sys.argv[1:])
        except ConfigError as err:
            fail(err)
        hydra_main()
    return main
