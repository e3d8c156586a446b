# wbc-ray: every target installs what it needs first (`setup` is idempotent).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DATA    ?= $(abspath ../shared/data)
export WBC_RAY_DATA ?= $(DATA)
export RAY_AUTH_MODE ?= disabled
export RAY_USAGE_STATS_ENABLED := 0
export OMP_NUM_THREADS ?= 2

.PHONY: setup test lint bench demo models clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

test: setup
	$(BIN)/python -m pytest -q -x --durations=15 tests

lint: setup
	$(BIN)/ruff check wbc_ray tests benchmarks
	$(BIN)/mypy

bench: setup  ## each writes bench_results/<name>.json
	$(BIN)/python -m benchmarks.tiling
	$(BIN)/python -m benchmarks.inference
	$(BIN)/python -m benchmarks.analyze

# The three CNNs from scratch on the train split (no model hub here); weights stay out of git.
MODELS ?= $(abspath weights)
export WBC_RAY_MODELS ?= $(MODELS)
# Sequential: on 2 cores, three models side by side take as long in all and each takes 3x longer.
models: setup
	$(BIN)/wbc-ray train --model all --sequential --manifest $(WBC_RAY_DATA)/all_taleqani/split.csv --out $(MODELS)
	$(BIN)/wbc-ray evaluate --models $(MODELS) --manifest $(WBC_RAY_DATA)/all_taleqani/split.csv --split test --out $(MODELS)/eval_test
	$(BIN)/wbc-ray evaluate --models $(MODELS) --manifest $(WBC_RAY_DATA)/all_taleqani/split.csv --split test --perturb grayscale --out $(MODELS)/eval_test_grayscale

demo: setup
	$(BIN)/python -m wbc_ray.demo

clean:
	rm -rf $(VENV) results .pytest_cache .mypy_cache .ruff_cache
