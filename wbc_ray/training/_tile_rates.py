"""Tile call rates on slides of known composition, for the slide-level adjusted count.

A tile of a real slide lands anywhere: across cells, the gaps between fields, the glass at an
edge. The models' error rate on such tiles is not their error rate on whole, centred images,
so the slide aggregation needs the rates measured the way slides are tiled: here on one
benign-only and one malignant-only slide composed from a held-out split (validation by
default: the test split stays for reporting).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ..ensemble import FUSIONS, TileRates, fuse
from ..manifest import read_manifest
from ..models import Classifier, available, tile_scale
from ..slides import GridSpec, compose_slide, open_slide, read_tile, tile_grid, tissue_mask

RATES_FILE = "tile_rates.json"


def _tiles(path: Path, spec: GridSpec) -> np.ndarray:
    with open_slide(path) as slide:
        grid = tile_grid(slide, tissue_mask(slide), spec)
        return np.stack(
            [read_tile(slide, int(x), int(y), grid.level, grid.read_px, spec.tile_px) for x, y in grid.coords]
        )


def measure_tile_rates(
    models_dir: str | os.PathLike[str],
    manifest: str | os.PathLike[str],
    *,
    split: str | None = "val",
    grid: int = 16,
    seed: int = 0,
    min_tissue: float = 0.25,
    tile_threshold: float = 0.5,
) -> dict[str, Any]:
    """Measure per-fusion TileRates; write <models_dir>/tile_rates.json; return its content."""
    names = available(models_dir)
    if not names:
        raise FileNotFoundError(f"no model checkpoints in {models_dir}")
    clfs = [Classifier.load(models_dir, n) for n in names]
    cards = [asdict(c.card) for c in clfs]
    mpp, px = tile_scale(cards)
    spec = GridSpec(tile_px=px, mpp=mpp, min_tissue=min_tissue)
    items = read_manifest(manifest, split)
    calls: dict[int, dict[str, np.ndarray]] = {}
    with tempfile.TemporaryDirectory(prefix="wbc_rates_") as tmp:
        for label in (0, 1):
            pool = [it for it in items if it.label == label]
            if not pool:
                raise ValueError(
                    f"{manifest} has no {('benign', 'malignant')[label]} images in split {split}"
                )
            path = Path(tmp) / f"rates_{label}.tiff"
            compose_slide(pool, path, grid=(grid, grid), malignant_fraction=float(label), seed=seed)
            tiles = _tiles(path, spec)
            probs = np.stack([c.predict(tiles) for c in clfs])  # (M, N, 2)
            calls[label] = {f: fuse(probs, f)[1] >= tile_threshold for f in FUSIONS}
    rates = {
        f: asdict(
            TileRates(
                tpr=float(calls[1][f].mean()),
                fpr=float(calls[0][f].mean()),
                n_pos=len(calls[1][f]),
                n_neg=len(calls[0][f]),
            )
        )
        for f in FUSIONS
    }
    record = {
        "models": _identity(cards),
        "tile_mpp": mpp,
        "tile_px": px,
        "min_tissue": min_tissue,
        "tile_threshold": tile_threshold,
        "split": split,
        "grid": grid,
        "seed": seed,
        "fusions": rates,
    }
    Path(models_dir, RATES_FILE).write_text(json.dumps(record, indent=2))
    return record


def _identity(cards: list[dict[str, Any]]) -> dict[str, str]:
    # The rates depend on the weights and on each model's operating point (temperature, bias).
    return {c["name"]: f"{c['version']}/T={c['temperature']:.6g}/b={c['bias']:.6g}" for c in cards}


def load_tile_rates(models_dir: str | os.PathLike[str], cards: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The rates file, if it was measured with exactly these model versions; else None."""
    path = Path(models_dir, RATES_FILE)
    if not path.is_file():
        return None
    record: dict[str, Any] = json.loads(path.read_text())
    if record.get("models") != _identity(cards):
        return None  # measured for other weights or operating points: it would bias every slide
    return record


def rates_for(record: dict[str, Any] | None, fusion: str) -> TileRates | None:
    if not record or fusion not in record.get("fusions", {}):
        return None
    r = TileRates(**record["fusions"][fusion])
    # Rates that barely separate the classes would blow every estimate up: refuse them.
    return r if r.tpr - r.fpr >= 0.3 else None
