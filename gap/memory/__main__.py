"""`python -m gap.memory`: the estimated peak memory per GPU of GAP runs (training + evaluation, the
default evaluation settings) for some model entries, as a markdown table."""
import argparse

from gap.memory.arch import model_arch
from gap.memory.estimate import GB, estimate, total
from gap.memory.plan import plan_of

SETUPS = {  # the three setups
    "fp32": dict(dtype="float32", precision="32-true", strategy="unsharded"),
    "bf16": dict(dtype="bfloat16", precision="bf16-true", strategy="unsharded"),
    "fsdp": dict(dtype="float32", precision="bf16-mixed", strategy="fsdp"),
}


def table(models: list[str], gpus: list[int], gb: float) -> str:
    """A markdown table of the estimated peak per GPU (GAP training + evaluation, the default eval
    settings) for each model and setup on `gpus` GPUs of `gb` GB."""
    from hydra import compose, initialize_config_dir

    from gap.cli import CONF

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfgs = {m: compose(config_name="train", overrides=[f"model={m}"]) for m in models}
    head = ["model", "params", "setup"] + [f"{n} x {gb:g} GB" for n in gpus]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, cfg in cfgs.items():
        arch = model_arch(cfg.model)
        if arch is None:
            lines.append(f"| {name} | ? | | " + " | ".join("" for _ in gpus) + " |")
            continue
        for setup, changes in SETUPS.items():
            cells = []
            for n in gpus:
                need = total(estimate(arch, plan_of(cfg, world=n, **changes))) / GB
                cells.append(f"{need:.1f} GB {'fits' if need <= gb else '**no**'}")
            label = "fsdp (full shard, bf16-mixed)" if setup == "fsdp" else setup
            lines.append(f"| {name} | {arch.params / 1e9:.2f}B | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gap.memory", description=__doc__.splitlines()[0].split(": ", 1)[1])
    parser.add_argument("models", nargs="*", default=["opt-350m", "opt-1.3b", "opt-2.7b", "opt-6.7b"],
                        help="names of conf/model entries")
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 8], help="GPU counts (columns)")
    parser.add_argument("--gb", type=float, default=80, help="memory of one GPU")
    args = parser.parse_args(argv)
    print(table(args.models, args.gpus, args.gb))


if __name__ == "__main__":
    main()
