# Every target sets up .venv itself: a fresh machine needs only Python 3.11.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_DIR ?= demo_output
# Only the code folders that exist (a fresh clone may not have all of them yet).
LINT_DIRS := $(wildcard src tests examples benchmarks)

.PHONY: demo test lint format bench clean

$(STAMP): setup.cfg pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install torch==2.13.0
	$(BIN)/python -m pip install -e ".[test]"
	# test-only: the independent FID Inception network the tests compare ours with
	# (--no-deps: its torchvision requirement cannot be installed beside this torch, and the
	# tests import only its torchvision-free network module; see tests/test_inception_parity.py)
	$(BIN)/python -m pip install --no-deps torch-fidelity==0.4.0
	touch $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/d2c demo --output-dir $(DEMO_DIR)

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q
	$(BIN)/ruff check $(LINT_DIRS)
	$(BIN)/ruff format --check $(LINT_DIRS)

lint: $(STAMP)
	$(BIN)/ruff check $(LINT_DIRS)
	$(BIN)/ruff format --check $(LINT_DIRS)

format: $(STAMP)
	$(BIN)/ruff check --fix $(LINT_DIRS)
	$(BIN)/ruff format $(LINT_DIRS)

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/bench_scoring.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) build dist src/*.egg-info
