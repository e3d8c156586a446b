"""`wbc-ray quantize`: measure int8 activation ranges on validation images, check the decisions."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..manifest import read_manifest
from ..models import Classifier, available, int8_path, load_checkpoint, measure_int8
from ._data import load_images


@dataclass(frozen=True)
class Int8Report:
    name: str
    path: Path
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
    """For each model: ranges from the first `images` validation images, agreement on the test split."""
    reports = []
    val = read_manifest(manifest, "val")[:images]
    test = read_manifest(manifest, "test")
    for name in names or available(models_dir):
        model, card = load_checkpoint(models_dir, name)
        ref = Classifier(model, card, device="cpu", precision="fp32")
        calib = ref.inputs(load_images(val, card.input_size)[0].numpy())
        path = int8_path(models_dir, name)
        q = measure_int8(
            model, (calib[i : i + batch] for i in range(0, len(calib), batch)), card.version, path
        )
        int8 = Classifier(q, card, device="cpu", precision="int8")
        x = load_images(test, card.input_size)[0].numpy()
        same = ref.predict(x, batch).argmax(1) == int8.predict(x, batch).argmax(1)
        reports.append(Int8Report(name, path, len(calib), len(x), float(np.mean(same))))
    return reports
