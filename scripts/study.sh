#!/usr/bin/env bash
# The study of docs/study-smollm2.md end to end: a --multirun grid of gap, the null arm (random_direction)
# and mle on the embedded model (CPU, W&B offline), then `gap.report`, which writes the tables and figures
# into docs/study-smollm2/ and between the markers of docs/study-smollm2.md. Arguments replace the grid's
# overrides; STUDY_DIR (the sweep directory) and STUDY_DOC (the document) move it elsewhere, e.g. the
# rehearsal on the tiny random model (docs/study-smollm2.md, "Rehearsal"). `make study` runs it.
set -euo pipefail
PY=${PYTHON:-.venv/bin/python}
STUDY_DIR=${STUDY_DIR:-outputs/train/multiruns/study-smollm2}
STUDY_DOC=${STUDY_DOC:-docs/study-smollm2.md}
[[ $# -gt 0 ]] || set -- model=smollm2-135m method=gap,random_direction corpus=github,pile_cc \
    corpus.index=0,1 trainer.max_epochs=3 eval.limit=16 eval.heldout=true
WANDB_MODE=offline "$PY" -m gap.train --multirun "sweep.name=$(basename "$STUDY_DIR")" "hydra.sweep.dir=$STUDY_DIR" "$@"
"$PY" -m gap.report "$STUDY_DIR" "out=${STUDY_DOC%.md}" "document=$STUDY_DOC"
