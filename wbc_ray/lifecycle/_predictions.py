"""Each image's recorded answers (`predictions.csv` of an evaluation): what a release's int8
builds, and later runs, are checked against image by image.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..ensemble import FUSIONS, fuse
from ..manifest import image_key

PREDICTIONS = "predictions.csv"


def write_predictions(
    path: Path, manifest: str | os.PathLike[str], items: list[Any], names: list[str], p: np.ndarray
) -> None:
    """Each image's calibrated malignant probability per model and its fused scores: what a
    release's int8 builds and later runs are checked against, image by image.
    """
    fused = {m: fuse(p, m)[1] for m in FUSIONS}
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", *names, *(f"fused_{m}" for m in FUSIONS)])
        for i, it in enumerate(items):
            rel = image_key(it.path, manifest)
            probs = [f"{v:.7f}" for v in p[:, i, 1]]
            w.writerow([rel, it.label, *probs, *(f"{fused[m][i]:.7f}" for m in FUSIONS)])


def read_predictions(path: str | os.PathLike[str]) -> dict[str, dict[str, float]]:
    """{image path relative to the manifest: {column: probability}} from a predictions.csv."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {r.pop("path"): {k: float(v) for k, v in r.items() if k != "label"} for r in rows}
