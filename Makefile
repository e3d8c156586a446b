# wbc-ray: every target installs what it needs first (`setup` is idempotent).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
OSD     := wbc_ray/serve/viewer/vendor/openseadragon/VERSION
DATA    ?= $(abspath ../shared/data)
export WBC_RAY_DATA ?= $(DATA)
export RAY_AUTH_MODE ?= disabled
export RAY_USAGE_STATS_ENABLED := 0
export OMP_NUM_THREADS ?= 2

.PHONY: setup browser test lint docs bench bench-peers gpu-check demo screenshots models release image kuberay clean

setup: $(STAMP) $(OSD)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# The review workspace's OpenSeadragon: a pinned release from the npm registry, hash-checked
# (wbc_ray/serve/_viewer.py pins it); fetched again when the pin changes.
$(OSD): wbc_ray/serve/_viewer.py | $(STAMP)
	$(BIN)/python -c 'from wbc_ray.serve._viewer import main; main(["--force"])'

# The UI tests drive a real headless Chromium: Debian's (Playwright's own browser download is not
# reachable from every machine). Without root or sudo this warns, and the UI tests skip, except in
# CI (.ci/run sets WBC_RAY_REQUIRE_BROWSER=1), where they fail.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null 2>&1 || $(SUDO) apt-get install -y -q chromium >/dev/null \
	  || ($(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q chromium >/dev/null) \
	  || echo "WARNING: could not install chromium: the UI browser tests will skip"

test: setup browser
	$(BIN)/python -m pytest -q -x -n 2 --durations=15 tests

lint: setup
	$(BIN)/ruff check wbc_ray tests benchmarks
	$(BIN)/mypy

# The docs site (MkDocs, strict: a broken link or reference fails), into build/site. The REST page
# is generated from the app's OpenAPI schema first.
docs: setup
	$(BIN)/python -m wbc_ray.serve._rest_doc docs/rest.md
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -q

bench: setup  ## each writes bench_results/<name>.json
	$(BIN)/python -m benchmarks.tiling
	$(BIN)/python -m benchmarks.inference
	$(BIN)/python -m benchmarks.screening
	$(BIN)/python -m benchmarks.domain_choice
	$(BIN)/python -m benchmarks.analyze
	$(BIN)/python -m benchmarks.cluster
	$(BIN)/python -m benchmarks.load
	$(BIN)/python -m benchmarks.tail

# wbc-ray against TIAToolbox (2.1.3, and 1.3.2 on the small slide) and WSInfer on a small slide
# and one of a real scan's size (each peer in a venv of its own under .peers/, made once: about
# 6 GB each, as each holds its own torch); then the README's table, the plot and the timelines in
# docs/performance.md (about an hour on 2 cores; PEERS_ARGS="--slides small" for the small one).
PEERS_ARGS ?=
bench-peers: setup
	$(BIN)/python -m benchmarks.peers $(PEERS_ARGS)

# On a machine with an NVIDIA GPU: installs what is missing, GPU tests, benchmarks, a short
# training run; bench_results/gpu/gpu_check.json.
gpu-check:
	bash benchmarks/gpu_check.sh

# The trained models are a release committed in weights/ (checked against weights/release.json
# whenever they load); everything uses it unless WBC_RAY_MODELS or --models says otherwise.
#
# `make models` trains a candidate set into weights_train/ (ignored by git) with the sturdier
# recipe (STURDY below), one network after
# another (on 2 cores, side by side they take as long in all, and each far longer), each within
# about 27 minutes: the recipe's epochs (DEFAULT_EPOCHS) where this CPU fits them, fewer where a
# probe of a few steps says it does not (the card records how many; `--epochs N` repeats a run).
# InceptionV3 and Xception see a quarter of every batch as slide-like views (windows across
# fields on glass); all three learn the subtype alongside (--subtype-weight). Xception trains at
# 96 px (a cheaper step, so about twice the epochs fit). `INIT=weights make
# models` continues from the release instead of from scratch (training time adds up across
# machines). `make release` then cuts a new release from the candidates, only if it is better on
# validation and not worse on test, and regenerates the README's metrics table.
MODELS ?= $(abspath weights)
TRAINED ?= $(abspath weights_train)
INIT ?=
export WBC_RAY_MODELS ?= $(MODELS)
MINUTES ?= 27
# The sturdier recipe of release 3 (docs/models.md): cells zoomed to half and twice their size,
# blur, and 800 of another lab's normal cells (PBC, at their 0.1 um/px) among the benign examples.
STURDY := --zoom 0.5 2 --blur 0.2 --patience 12 --mix pbc/labels.csv --mix-mpp 0.1 --mix-limit 800
TRAIN := $(BIN)/wbc-ray train --minutes $(MINUTES) --subtype-weight 0.5 $(STURDY) --out $(TRAINED) $(if $(INIT),--init $(INIT))
models: setup
	$(TRAIN) --model mobilenet
	$(TRAIN) --model inception_v3 --mosaic 0.25 --seed 1
	$(TRAIN) --model xception --input-size 96 --mosaic 0.25

release: setup
	$(BIN)/wbc-ray release --from $(TRAINED) --out $(MODELS)
	$(BIN)/wbc-ray release --readme README.md docs/domain.md --out $(MODELS)

# The container image, one recipe for both variants: VARIANT=cpu (default) or cuda. Needs a
# Docker daemon and Docker Hub (the Ray base images).
VARIANT ?= cpu
image: setup
	docker build --build-arg VARIANT=$(VARIANT) -f deploy/Dockerfile \
	  -t wbc-ray:$$($(BIN)/python -c 'import wbc_ray; print(wbc_ray.__version__)')-$(VARIANT) .

# KubeRay resources in deploy/, rendered from configs/serve*.yaml and validated against the CRDs.
kuberay: setup
	$(BIN)/wbc-ray deploy render

# The README's and docs' pictures, retaken from the real page and review workspace (Chromium).
screenshots: setup browser
	$(BIN)/python docs/screenshots.py

demo: setup
	$(BIN)/python -m wbc_ray.demo

clean:
	rm -rf $(VENV) results .pytest_cache .mypy_cache .ruff_cache
