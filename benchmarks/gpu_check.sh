#!/usr/bin/env bash
# Everything that needs an NVIDIA GPU, in one step, in under 8 minutes:
#   1. install what is missing (the project's venv; with WHEELS=dir, offline from a wheelhouse)
#   2. the GPU tests (tests/serve/test_gpu.py: GPU replicas analyse a slide, agree with CPU fp32)
#   3. the inference benchmark on CUDA (fp32 / channels_last / AMP per model, agreement)
#   4. an end-to-end analysis with GPU replicas (configs/serve.gpu.yaml), tiles/s
#   5. a short training run continued from the release (AMP), its epoch time
# Each step has its own time limit and is recorded even when it fails; the summary goes to
# $OUT_DIR/gpu_check.json (default bench_results/gpu/), with the benchmark's own JSON beside it.
#
#   bash benchmarks/gpu_check.sh                 # data at ../shared/data, or WBC_RAY_DATA=...
set -uo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
OUT_DIR=${OUT_DIR:-bench_results/gpu}
mkdir -p "$OUT_DIR"
export WBC_RAY_BENCH_OUT="$OUT_DIR" RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled PYTHONUNBUFFERED=1
export WBC_RAY_DATA=${WBC_RAY_DATA:-$(cd .. && pwd)/shared/data}
STEPS="$OUT_DIR/steps.jsonl"
: >"$STEPS"

if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu_check: no NVIDIA GPU here (nvidia-smi finds none); nothing to check" >&2
  exit 2
fi
if [ ! -f "$WBC_RAY_DATA/all_taleqani/split.csv" ]; then
  echo "gpu_check: no data at $WBC_RAY_DATA (set WBC_RAY_DATA to the folder ../shared/data holds)" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT_DIR/gpu.txt"

# 1. Install. A venv that sees the machine's own CUDA PyTorch (--system-site-packages), so a GPU
# image's torch is used rather than a multi-GB download; the project's other needs go in it.
PY=.venv-gpu/bin/python
if [ ! -x "$PY" ]; then
  python3 -m venv --system-site-packages .venv-gpu
fi
if ! "$PY" -c "import wbc_ray, ray, zarr, openslide" 2>/dev/null; then
  if [ -n "${WHEELS:-}" ]; then
    "$PY" -m pip install -q --no-index --find-links "$WHEELS" -e '.[dev]' || exit 3
  else
    # Keep the image's torch (a CUDA build) if it has one: install the rest around it.
    "$PY" -m pip install -q -e '.[dev]' --no-deps || exit 3
    "$PY" - <<'EOF' >"$OUT_DIR/requirements.txt"
import tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]
for d in deps["dependencies"] + deps["optional-dependencies"]["dev"]:
    if not d.split("=")[0].split("<")[0].split(">")[0].strip() in ("torch", "torchvision"):
        print(d)
EOF
    "$PY" -m pip install -q -r "$OUT_DIR/requirements.txt" || exit 3
  fi
fi
"$PY" -c "import torch; assert torch.cuda.is_available(), 'torch sees no GPU'; print('torch', torch.__version__, torch.cuda.get_device_name(0))" || exit 3

# step NAME LIMIT_S COMMAND...: run it under a time limit, record its exit code and seconds.
step() {
  local name=$1 limit=$2
  shift 2
  local t0 rc
  t0=$(date +%s)
  echo "== $name (at most ${limit} s)"
  timeout "$limit" "$@" 2>&1 | tee "$OUT_DIR/$name.log"
  rc=${PIPESTATUS[0]}
  printf '{"step": "%s", "rc": %d, "seconds": %d}\n' "$name" "$rc" "$(($(date +%s) - t0))" >>"$STEPS"
}

# 2-5, within the 8 minutes (installation above excluded where the venv was already there).
step gpu_tests 150 "$PY" -m pytest -q -x tests/serve/test_gpu.py
step inference 100 "$PY" -m benchmarks.inference --device cuda
SLIDE="$OUT_DIR/slide.tiff"
step make_slide 40 "$PY" -m wbc_ray.cli make-slide --split test --grid 40 40 --out "$SLIDE" --quiet
step analyze 120 "$PY" -m wbc_ray.cli analyze "$SLIDE" --out "$OUT_DIR/results" --json
step train 90 "$PY" -m wbc_ray.cli train --model mobilenet --init weights --epochs 1 --out "$OUT_DIR/train"

"$PY" - "$OUT_DIR" "$START" <<'EOF'
import json, sys, time
from pathlib import Path
out, start = Path(sys.argv[1]), int(sys.argv[2])
steps = [json.loads(l) for l in (out / "steps.jsonl").read_text().splitlines() if l.strip()]
summary = {"gpu": (out / "gpu.txt").read_text().strip(), "steps": steps, "total_s": int(time.time()) - start}
res = out / "results"
for store in sorted(res.glob("*.zarr")) if res.exists() else []:
    meta = json.loads((store / "zarr.json").read_text()).get("attributes", {})
    t = meta.get("result", {}).get("timings", {})
    summary["analysis"] = {"tiles": meta.get("result", {}).get("n_tiles"), **{k: t.get(k) for k in ("total_s", "tiles_per_s")}}
card = out / "train" / "mobilenet.json"
if card.exists():
    tr = json.loads(card.read_text()).get("training", {})
    summary["training"] = {k: tr.get(k) for k in ("epochs_run", "train_seconds", "precision_used")}
bench = out / "inference_cuda.json"
if bench.exists():
    summary["inference"] = json.loads(bench.read_text()).get("models")
(out / "gpu_check.json").write_text(json.dumps(summary, indent=2))
print(json.dumps({k: v for k, v in summary.items() if k != "inference"}, indent=2))
sys.exit(0 if all(s["rc"] == 0 for s in steps) else 1)
EOF
