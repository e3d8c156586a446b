"""`wbc-ray quantize`: measure int8 activation ranges on validation images, check the decisions."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..manifest import read_manifest
from ..models import INT8_SCHEMES, Classifier, available, int8_path, load_checkpoint, measure_int8, save_int8
from ._data import load_images


@dataclass(frozen=True)
class Int8Report:
    name: str
    path: Path
    scheme: str  # how activation ranges were fitted, chosen on held-out validation images
    calibration_images: int
    test_images: int
    agreement: float  # share of test images with the same calibrated decision as fp32
    held_agreement: float  # the same on held-out validation images fp32 is sure of (see below)
    held_shift: float  # mean |int8 - fp32| malignant probability on held-out validation images
    kept: bool


# A sound int8 graph moves probabilities a little and flips a decision now and then near the
# threshold; a broken one (wrong ranges, or kernels that saturate: see models._cpu.cpu_has_vnni)
# moves them a lot and flips decisions fp32 was sure of. Ranges that do either on held-out
# validation images are not stored, so the app serves the default precision. Decisions count
# only where fp32 is at least 0.1 from the threshold: an untrained model (the quick preset)
# scores everything within 0.01 of 0.5, where any rounding flips half its calls.
MAX_MEAN_SHIFT = 0.05
MIN_AGREEMENT = 0.97


def quantize_models(
    models_dir: str | os.PathLike[str],
    manifest: str | os.PathLike[str],
    names: list[str] | None = None,
    images: int = 256,
    batch: int = 32,
    schemes: tuple[str, ...] = INT8_SCHEMES,
) -> list[Int8Report]:
    """For each model: ranges from the first `images` validation images, the range scheme (of
    `schemes`) that moves the malignant probability least on the rest of the validation split, and how often
    the int8 model decides as the fp32 one on the test split (reported, never used to choose).
    Ranges that move held-out probabilities or decisions too far (MAX_MEAN_SHIFT, MIN_AGREEMENT)
    are not kept."""
    reports = []
    val = read_manifest(manifest, "val")
    test = read_manifest(manifest, "test")
    for name in names or available(models_dir):
        model, card = load_checkpoint(models_dir, name)
        ref = Classifier(model, card, device="cpu", precision="fp32")
        x_val = load_images(val, card.input_size)[0].numpy()
        calib, held = ref.inputs(x_val[:images]), x_val[images:]
        p_held = ref.predict(held, batch)[:, 1]
        best = None
        for scheme in schemes:
            batches = (calib[i : i + batch] for i in range(0, len(calib), batch))
            q, ranges = measure_int8(model, batches, scheme)
            clf = Classifier(q, card, device="cpu", precision="int8")
            p_q = clf.predict(held, batch)[:, 1]
            err = float(np.abs(p_q - p_held).mean()) if len(held) else 0.0
            if best is None or err < best[0]:
                sure = np.abs(p_held - 0.5) >= 0.1
                same = (p_q >= 0.5) == (p_held >= 0.5)
                best = (err, scheme, ranges, float(same[sure].mean()) if sure.any() else 1.0)
        assert best is not None
        shift, scheme, ranges, held_agree = best
        path = int8_path(models_dir, name)
        if shift > MAX_MEAN_SHIFT or held_agree < MIN_AGREEMENT:
            path.unlink(missing_ok=True)  # stale ranges must not be served either
            reports.append(
                Int8Report(name, path, scheme, len(calib), 0, float("nan"), held_agree, shift, False)
            )
            continue
        save_int8(ranges, path, card.version, scheme)
        int8 = Classifier.load(models_dir, name, device="cpu", precision="int8")  # as served: compiled
        x = load_images(test, card.input_size)[0].numpy()
        same = ref.predict(x, batch).argmax(1) == int8.predict(x, batch).argmax(1)
        reports.append(
            Int8Report(name, path, scheme, len(calib), len(x), float(np.mean(same)), held_agree, shift, True)
        )
    return reports
