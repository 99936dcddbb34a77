"""`python -m gap.data fetch [overrides]` (see `gap.data.fetch`)."""
import sys

from gap.cli import command
from gap.data.fetch import fetch


def report_fetch(cfg) -> None:
    for what, n in fetch(cfg).items():
        print(f"{what}: {n}")
    print(f"data: {cfg.paths.data_dir}")


def without_verb(args: list[str]) -> list[str]:
    """`fetch` is the one verb (anywhere among the overrides); the rest goes to Hydra."""
    if "fetch" not in args:
        sys.exit("usage: python -m gap.data fetch [model=NAME | fetch.models=[hub ids]] [paths.data_dir=DIR]")
    return [a for a in args if a != "fetch"]


main = command("fetch", report_fetch, without_verb)


if __name__ == "__main__":
    main()
