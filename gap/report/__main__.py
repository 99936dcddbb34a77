"""`python -m gap.report PATH... [overrides]`: bare arguments become `inputs=[...]` before Hydra parses argv."""
import os

from gap.cli import command
from gap.report import report

FLAGS_WITH_VALUE = {"-cp", "--config-path", "-cn", "--config-name", "-cd", "--config-dir", "-c", "--cfg",
                    "-p", "--package"}


def _quote(value: str) -> str:
    """A Hydra-quoted string, so paths holding `=` or `,` (sweep job directories do) stay one value."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def to_overrides(args: list[str]) -> list[str]:
    """Bare arguments (no `key=`, or an existing path) -> one `inputs=[...]` override; `run=`/`out=`/`document=` quoted;
    `wandb=ENTITY/PROJECT` -> `wandb.runs=...`."""
    overrides, paths, flag_value = [], [], False
    for arg in args:
        key, eq, value = arg.partition("=")
        if flag_value or arg.startswith(("-", "+", "~")):
            overrides.append(arg)
            flag_value = arg in FLAGS_WITH_VALUE
        elif not eq or os.path.exists(arg):
            paths.append(arg)
        elif key in ("run", "out", "document") and value not in ("null", "") and not value.startswith(("'", '"')):
            overrides.append(f"{key}={_quote(value)}")
        elif key == "wandb":  # the shorthand of wandb.runs=ENTITY/PROJECT
            overrides.append(f"wandb.runs={value}")
        else:
            overrides.append(arg)
    if paths:
        overrides.append("inputs=[" + ",".join(_quote(p) for p in paths) + "]")
    return overrides


main = command("report", report, to_overrides)


if __name__ == "__main__":
    main()
