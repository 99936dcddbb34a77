#!/usr/bin/env bash
# The GPU path end to end on the embedded model, in a few minutes on one GPU; prints timings and peak
# memory. Needs the package importable (`make setup`, or PYTHONPATH=.), the data (GAP_DATA_DIR) and the
# embedded model (`make model`, or GAP_CACHE_DIR). Writes under $GPU_CHECK_DIR (outputs/gpu_check).
#   gap_bf16: one GAP run in bf16 mixed precision: baseline + 4 ascent steps, 12 tasks x 32 examples
#   bench_fp32, bench_bf16, bench_bf16_weights: the evaluation benchmark (`make bench`) in fp32, in bf16
#     autocast (fp32 weights) and with bf16 weights (`model.dtype=bfloat16`)
#   bench_bf16_wide: bf16 weights, batches of up to 64 examples and as many tokens as the GPU holds (auto)
#   fsdp: the FSDP strategy on the visible GPUs: 1 step, 4 examples per task
#   paper_opt: `experiment=paper` (320 examples a task) on a randomly initialised OPT-1.3B-shaped model in
#     bf16, baseline + 2 ascent steps: seconds and memory per evaluation, to size a grid
# STEPS="bench_fp32 bench_bf16_weights" runs a subset.
set -uo pipefail
PY=${PYTHON:-python3}
OUT=${GPU_CHECK_DIR:-outputs/gpu_check}
LIMIT=${LIMIT:-32}
GPU=${ACCELERATOR:-gpu}      # ACCELERATOR=cpu and GPU_CHECK_ARGS="model=tiny-random" rehearse the script
STEPS=${STEPS:-gap_bf16 bench_fp32 bench_bf16 bench_bf16_weights bench_bf16_wide fsdp paper_opt}
mkdir -p "$OUT"
# shellcheck disable=SC2206
common=(logger=none "paths.baseline_dir=$OUT/baselines" eval.overwrite=true ${GPU_CHECK_ARGS:-})
status=0

step() {  # step NAME COMMAND...: run, time, and report without stopping the script (unless not in STEPS)
    local name=$1; shift
    [[ " $STEPS " == *" $name "* ]] || return 0
    local start=$SECONDS
    echo "== $name"
    if "$@" > "$OUT/$name.log" 2>&1; then echo "ok: $name, $((SECONDS - start)) s"
    else echo "FAILED: $name (exit $?), $((SECONDS - start)) s; last lines of $OUT/$name.log:"; tail -n 25 "$OUT/$name.log"; status=1; fi
    grep -E "peak memory|TFLOP/s|^\| \*\*|^\| (scoring|generation|outside)|^decoding:|without a CUDA graph" \
        "$OUT/$name.log" || true
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY -c "import torch, transformers, lightning; print('torch', torch.__version__, 'transformers', transformers.__version__, 'lightning', lightning.__version__)"
step gap_bf16 $PY -m gap.train "${common[@]}" trainer.accelerator=$GPU trainer.precision=bf16-mixed \
    eval.limit="$LIMIT" "hydra.run.dir=$OUT/gap_bf16"
step bench_fp32 $PY -m bench.evaluation "${common[@]}" trainer.accelerator=$GPU trainer.precision=32-true \
    eval.limit="$LIMIT" "+bench_out=$OUT/bench_fp32.json" "hydra.run.dir=$OUT/bench_fp32"
step bench_bf16 $PY -m bench.evaluation "${common[@]}" trainer.accelerator=$GPU trainer.precision=bf16-mixed \
    eval.limit="$LIMIT" "+bench_out=$OUT/bench_bf16.json" "hydra.run.dir=$OUT/bench_bf16"
step bench_bf16_weights $PY -m bench.evaluation "${common[@]}" trainer.accelerator=$GPU model.dtype=bfloat16 \
    trainer.precision=bf16-true eval.limit="$LIMIT" "+bench_out=$OUT/bench_bf16_weights.json" "hydra.run.dir=$OUT/bench_bf16_weights"
step bench_bf16_wide $PY -m bench.evaluation "${common[@]}" trainer.accelerator=$GPU model.dtype=bfloat16 \
    trainer.precision=bf16-true eval.batch_size=64 eval.max_batch_tokens=auto eval.limit="$LIMIT" \
    "+bench_out=$OUT/bench_bf16_wide.json" "hydra.run.dir=$OUT/bench_bf16_wide"
step fsdp $PY -m gap.train "${common[@]}" trainer=fsdp trainer.accelerator=$GPU trainer.max_epochs=1 eval.limit=4 "hydra.run.dir=$OUT/fsdp"
step paper_opt $PY -m gap.train "${common[@]}" experiment=paper model=tiny-random-opt model.name=opt-1.3b-shaped \
    model.random_init.hidden_size=2048 model.random_init.layers=24 model.random_init.heads=32 \
    model.dtype=bfloat16 trainer.precision=bf16-true trainer.accelerator=$GPU trainer.max_epochs=2 eval.max_batch_tokens=auto \
    ${PAPER_LIMIT:+eval.limit=$PAPER_LIMIT} "hydra.run.dir=$OUT/paper_opt"
$PY - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
for run in ("gap_bf16", "fsdp", "paper_opt"):
    path = out / run / "results.json"
    if path.is_file():
        r = json.loads(path.read_text())
        print(run, r["status"], r.get("resources"), {k: round(v, 4) for k, v in r["metrics"].items() if k.startswith("avg/")},
              "train_nll", [round(h["train_nll"], 3) for h in r.get("history", [])],
              "seconds per evaluation", [round(sum((h.get("seconds") or {}).values()), 1) for h in r.get("history", [])])
PY
exit $status
