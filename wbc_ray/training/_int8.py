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


def quantize_models(
    models_dir: str | os.PathLike[str],
    manifest: str | os.PathLike[str],
    names: list[str] | None = None,
    images: int = 256,
    batch: int = 32,
) -> list[Int8Report]:
    """For each model: ranges from the first `images` validation images, the range scheme that
    moves the malignant probability least on the rest of the validation split, and how often
    the int8 model decides as the fp32 one on the test split (reported, never used to choose)."""
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
        for scheme in INT8_SCHEMES:
            batches = (calib[i : i + batch] for i in range(0, len(calib), batch))
            q, ranges = measure_int8(model, batches, scheme)
            clf = Classifier(q, card, device="cpu", precision="int8")
            err = float(np.abs(clf.predict(held, batch)[:, 1] - p_held).mean()) if len(held) else 0.0
            if best is None or err < best[0]:
                best = (err, scheme, ranges)
        assert best is not None
        _, scheme, ranges = best
        path = int8_path(models_dir, name)
        save_int8(ranges, path, card.version, scheme)
        int8 = Classifier.load(models_dir, name, device="cpu", precision="int8")  # as served: compiled
        x = load_images(test, card.input_size)[0].numpy()
        same = ref.predict(x, batch).argmax(1) == int8.predict(x, batch).argmax(1)
        reports.append(Int8Report(name, path, scheme, len(calib), len(x), float(np.mean(same))))
    return reports
