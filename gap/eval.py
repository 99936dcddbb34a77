"""Zero-shot evaluation of any model, no update: `python -m gap.eval model=... tasks=...`.

The same run as `gap.train` with `method=none` (conf/eval.yaml), so the outputs are identical.
"""
import hydra
from omegaconf import DictConfig

from gap.choices import hydra_entry
from gap.train import run_cli, train


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def hydra_main(cfg: DictConfig) -> None:
    run_cli(train, cfg)


main = hydra_entry(hydra_main)


if __name__ == "__main__":
    main()
