# SynthMed Lightning. `make help` lists the targets. Each target installs what it needs into .venv.
PYTHON     ?= python3
VENV       ?= .venv
# torch first, pinned: a looser spec pulls a multi-GB CUDA build on CPU machines. Override freely,
# e.g. make install TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
BIN        := $(VENV)/bin
PYTEST_ARGS ?=
# Test processes (pytest-xdist); 0 runs the tests in pytest's own process. `--dist loadfile` keeps each
# test file on one worker, so a module-scoped fixture (a smoke run) still runs once.
TEST_WORKERS ?= 2
PYTEST_XDIST = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)
# make reproduce-paper: DATA_ROOT holds DRIVE/ (default: ./data, or $SYNTHMED_DATA_ROOT); DATA=phantom needs no data.
DATA_ROOT  ?= $(or $(SYNTHMED_DATA_ROOT),data)
DATA       ?= drive
PROFILE    ?= quick
OUT        ?=
ARGS       ?=

.DEFAULT_GOAL := help
.PHONY: help install lint test test-fast reproduce-paper bench clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-18s %s\n", $$1, $$2}'

install: $(VENV)/.installed ## create .venv: torch (TORCH_SPEC, default torch==2.13.0), then the package (editable, with the test and SLURM-launcher extras)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[dev,slurm,dp]"
	touch $@

test: install ## run the whole test suite (CPU, TEST_WORKERS=2 processes, < 15 min)
	$(BIN)/python -m pytest -q $(PYTEST_XDIST) $(PYTEST_ARGS)

lint: install ## pyflakes-level checks (unused imports and names, undefined names) with ruff
	$(BIN)/python -m ruff check --select F src tests benchmarks

test-fast: install ## the tests that train nothing longer than a few seconds
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_XDIST) $(PYTEST_ARGS)

reproduce-paper: install ## the synthetic-vs-real study: DATA_ROOT=<folder with DRIVE/> PROFILE=smoke|quick|paper OUT=<dir, default results/DATA-PROFILE> (DATA=phantom: no data)
	$(BIN)/python -m synthmed_lightning stage=study data=$(DATA) paths.data_root=$(abspath $(DATA_ROOT)) \
		profile=$(PROFILE) $(if $(OUT),study.out_dir=$(abspath $(OUT))) $(ARGS)

BENCHMARKS := step_rate precision data_throughput generate_throughput postprocess_cost ddp_scaling memory
bench: install ## side-by-side benchmarks (benchmarks/, ~15 min on 2 CPU cores): summary in outputs/bench/summary.md
	for b in $(BENCHMARKS); do OMP_NUM_THREADS=1 $(BIN)/python benchmarks/$$b.py || exit 1; done
	$(BIN)/python benchmarks/summary.py

clean: ## remove run outputs (not the .venv)
	rm -rf outputs multirun .pytest_cache
