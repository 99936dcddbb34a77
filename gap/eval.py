"""Zero-shot evaluation of any model, no update: `python -m gap.eval model=... tasks=...`.

The same run as `gap.train` with `method=none` (conf/eval.yaml), so the outputs are identical.
"""
from gap.cli import command
from gap.train import train

main = command("eval", train)


if __name__ == "__main__":
    main()
