"""Per-model inference speed in three precisions on real test images, and low-precision/fp32 agreement.

fp32 (NCHW) is the baseline; channels_last (fp32) and channels_last + autocast (bf16 on CPU,
fp16 AMP with `--device cuda`) are measured in the same run, on the same images, at batch 32
(`--batch`). Agreement: the share of test-split images whose calibrated decision is the same
in the autocast precision as in fp32 (target >= 99.5 %). On CPU, models with an int8 model
(`wbc-ray quantize`) are also timed in int8, with their int8/fp32 agreement.
On a CPU without native bf16 (AVX2), oneDNN emulates it 7-15x slower than fp32: there the bf16
column is one timed pass over the test images that also gives its decisions (`bf16_native`
false in the JSON), instead of warm passes over 256 images plus a second pass for agreement.
Writes bench_results/inference.json (CPU) or inference_cuda.json.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from benchmarks._common import verdict, write_result
from wbc_ray.config import load_settings
from wbc_ray.lifecycle import load_images
from wbc_ray.manifest import read_manifest
from wbc_ray.models import Classifier, available, cpu_has_bf16, int8_path, load_checkpoint


def rate(clf: Classifier, x: np.ndarray, batch: int, repeats: int = 3) -> float:
    """Best of `repeats` passes: this machine is shared, so the fastest pass is the least disturbed."""
    clf.predict(x[:batch], batch_size=batch)  # warm-up (oneDNN / cuDNN pick kernels on first call)
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        clf.predict(x, batch_size=batch)  # returns host arrays: the GPU work is done when it returns
        best = max(best, len(x) / (time.perf_counter() - t0))
    return best


def timed_predict(clf: Classifier, x: np.ndarray, batch: int) -> tuple[float, np.ndarray]:
    """One warm-up batch, then one timed pass over all of `x`: its rate and its decisions."""
    clf.predict(x[:batch], batch_size=batch)
    t0 = time.perf_counter()
    pred = clf.predict(x, batch_size=batch).argmax(1)
    return len(x) / (time.perf_counter() - t0), pred


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args(argv)
    s = load_settings()
    names = available(s.models_dir)
    if not names:
        print(f"no models in {s.models_dir} (the release is in weights/; WBC_RAY_MODELS)", file=sys.stderr)
        return 2
    gpu = args.device.startswith("cuda")
    low = "amp" if gpu else "bf16"  # the autocast precision of the device
    variants_base = {
        "fp32": ("fp32", False),
        "channels_last": ("fp32", True),
        f"{low}_channels_last": (low, True),
    }
    if gpu:
        device_name = torch.cuda.get_device_name(torch.device(args.device))
    else:
        torch.set_num_threads(2)
        device_name = "cpu"
    items = read_manifest(s.data_dir / "all_taleqani" / "split.csv", "test")
    emulated = not gpu and not cpu_has_bf16()
    result: dict = {
        "device": device_name,
        **({} if gpu else {"bf16_native": not emulated}),
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "models": {},
    }
    ok = True
    for name in names:
        model, card = load_checkpoint(s.models_dir, name)
        x = load_images(items, card.input_size)[0].numpy()
        timed = x if gpu else x[:256]
        row: dict = {"input_size": card.input_size, "img_per_s": {}}
        preds = {}
        variants = dict(variants_base)
        if not gpu and int8_path(s.models_dir, name).exists():
            variants["int8"] = ("int8", False)
        for label, (precision, cl) in variants.items():
            clf = Classifier.load(
                s.models_dir, name, device=args.device, precision=precision, channels_last=cl
            )
            if emulated and precision == "bf16":
                speed, preds[label] = timed_predict(clf, x, args.batch)
                row["img_per_s"][label] = round(speed, 1)
                continue
            row["img_per_s"][label] = round(rate(clf, timed, args.batch, repeats=5 if gpu else 3), 1)
            if label in {"fp32", f"{low}_channels_last", "int8"}:
                preds[label] = clf.predict(x, batch_size=args.batch).argmax(1)
        base = row["img_per_s"]["fp32"]
        row["speedup_vs_fp32"] = {k: round(v / base, 2) for k, v in row["img_per_s"].items()}
        row["fastest"] = max(row["img_per_s"], key=row["img_per_s"].get)
        agree = float((preds["fp32"] == preds[f"{low}_channels_last"]).mean())
        row[f"{low}_fp32_decision_agreement"] = round(agree, 4)
        row["agreement_status"] = verdict(agree >= 0.995)
        if "int8" in preds:
            same = preds["fp32"] == preds["int8"]
            row["int8_fp32_decision_agreement"] = round(float(same.mean()), 4)
        ok &= agree >= 0.995
        result["models"][name] = row
        print(name, row, flush=True)
    result["agreement_target"] = ">= 0.995"
    result["all_agree"] = verdict(ok)
    path = write_result("inference_cuda" if gpu else "inference", result)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
