"""`python -m gap.data fetch [overrides]` (see `gap.data.fetch`)."""
import sys

import hydra
from omegaconf import DictConfig

from gap.data.fetch import fetch
from gap.errors import GapError, fail


@hydra.main(version_base="1.3", config_path="../../conf", config_name="fetch")
def _main(cfg: DictConfig) -> None:
    try:
        counts = fetch(cfg)
    except GapError as err:
        fail(err)
    for what, n in counts.items():
        print(f"{what}: {n}")
    print(f"data: {cfg.paths.data_dir}")


def main() -> None:
    """`fetch` is the one verb (anywhere among the overrides); the rest goes to Hydra."""
    if "fetch" not in sys.argv[1:]:
        sys.exit("usage: python -m gap.data fetch [model=NAME | fetch.models=[hub ids]] [paths.data_dir=DIR]")
    sys.argv.remove("fetch")
    _main()


if __name__ == "__main__":
    main()
