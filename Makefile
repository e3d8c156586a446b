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

.PHONY: setup browser test lint bench demo models clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# The UI tests drive a real headless Chromium: Debian's (Playwright's own browser download is not
# reachable from every machine). Without root or sudo this warns, and the UI tests skip, except in
# CI (.ci/run sets WBC_RAY_REQUIRE_BROWSER=1), where they fail.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null 2>&1 || $(SUDO) apt-get install -y -q chromium >/dev/null \
	  || ($(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q chromium >/dev/null) \
	  || echo "WARNING: could not install chromium: the UI browser tests will skip"

test: setup browser
	$(BIN)/python -m pytest -q -x --durations=15 tests

lint: setup
	$(BIN)/ruff check wbc_ray tests benchmarks
	$(BIN)/mypy

bench: setup  ## each writes bench_results/<name>.json
	$(BIN)/python -m benchmarks.tiling
	$(BIN)/python -m benchmarks.inference
	$(BIN)/python -m benchmarks.analyze

# The three CNNs from scratch on the train split (no model hub here), one after another (on 2 cores,
# side by side they take as long in all and each takes 3x longer), each within about 30 minutes:
# the recipe's epochs (DEFAULT_EPOCHS) where this CPU fits them in 27 minutes, fewer where a probe
# of a few steps says it does not (CPUs here differ 2-3x; the log and the model card say how many,
# and `--epochs N` repeats a run exactly), leaving a few minutes for calibration and test metrics.
# Then the int8 models configs/serve.yaml serves, then the tile call rates the slide estimate is
# read through (validation split, in the served precisions). InceptionV3 and Xception see a quarter
# of every batch as slide-like views (windows across fields on glass). All three learn the subtype
# alongside (--subtype-weight); InceptionV3 with seed 1, the run chosen on validation (seed 0 with
# the head was not better there). Precision: fp32 on CPUs without AMX (bf16 autocast trains slower
# there). Xception trains at 96 px (the others at 128): at 128 px a 2-core AVX2 CPU fits only 5 of its
# 14 epochs in 27 minutes (test balanced accuracy 0.866), at 96 px a step costs 2.2x less and 13 fit.
# Tiles are still read at 128 px over the same field of view; Xception resizes them down, as it does
# its training images. Weights stay out of git.
MODELS ?= $(abspath weights)
export WBC_RAY_MODELS ?= $(MODELS)
MANIFEST := $(WBC_RAY_DATA)/all_taleqani/split.csv
models: setup
	$(BIN)/wbc-ray train --model mobilenet --minutes 27 --subtype-weight 0.5 --manifest $(MANIFEST) --out $(MODELS)
	$(BIN)/wbc-ray train --model inception_v3 --minutes 27 --mosaic 0.25 --subtype-weight 0.5 --seed 1 --manifest $(MANIFEST) --out $(MODELS)
	$(BIN)/wbc-ray train --model xception --input-size 96 --minutes 27 --mosaic 0.25 --subtype-weight 0.5 --manifest $(MANIFEST) --out $(MODELS)
	$(BIN)/wbc-ray quantize --models $(MODELS) --manifest $(MANIFEST)
	$(BIN)/wbc-ray calibrate --models $(MODELS) --manifest $(MANIFEST)
	$(BIN)/wbc-ray evaluate --models $(MODELS) --manifest $(MANIFEST) --split test --out $(MODELS)/eval_test
	$(BIN)/wbc-ray evaluate --models $(MODELS) --manifest $(MANIFEST) --split test --perturb grayscale --out $(MODELS)/eval_test_grayscale
	$(BIN)/wbc-ray evaluate --models $(MODELS) --manifest $(MANIFEST) --split test --served --out $(MODELS)/eval_test_served
	$(BIN)/wbc-ray evaluate --models $(MODELS) --manifest $(MANIFEST) --split test --served --perturb grayscale --out $(MODELS)/eval_test_grayscale_served

demo: setup
	$(BIN)/python -m wbc_ray.demo

clean:
	rm -rf $(VENV) results .pytest_cache .mypy_cache .ruff_cache
