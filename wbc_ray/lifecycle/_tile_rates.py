"""Share of malignant tile calls on slides of known composition: the slide estimate's curve.

A tile of a real slide lands anywhere: across cells, the gaps between fields, the glass at an
edge. The models' error rate on such tiles is not their error rate on whole, centred images,
so the slide aggregation needs the rates measured the way slides are tiled: here on slides
composed at several malignant fractions, from 0 to 1, from a held-out split (validation by
default: the test split stays for reporting).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ..config import DEFAULTS
from ..ensemble import FUSIONS, TileRates, fuse
from ..errors import InvalidInput, MissingInput
from ..manifest import read_manifest
from ..models import Classifier, available, cpu_has_bf16, int8_id, int8_path, tile_scale
from ..release import derived_dir
from ..slides import GridSpec, compose_slide, open_slide, read_tile, tile_grid, tissue_mask

RATES_FILE = "tile_rates.json"


def _tiles(path: Path, spec: GridSpec) -> np.ndarray:
    with open_slide(path) as slide:
        grid = tile_grid(slide, tissue_mask(slide), spec)
        return np.stack(
            [read_tile(slide, int(x), int(y), grid.level, grid.read_px, spec.tile_px) for x, y in grid.coords]
        )


def shipped_precisions(names: list[str]) -> list[dict[str, str]]:
    """The precisions a release (or an adapted one) ships tile rates for: fp32, and bf16 where this
    CPU computes it natively, as replicas there serve it by default (int8 rates are measured on
    the machine that builds int8).
    """
    return [{n: kind for n in names} for kind in ["fp32"] + (["bf16"] if cpu_has_bf16() else [])]


def measure_tile_rates(
    models_dir: str | os.PathLike[str],
    manifest: str | os.PathLike[str],
    *,
    split: str | None = "val",
    grid: int = 16,
    seed: int = 0,
    min_tissue: float = DEFAULTS.tiling.min_tissue,
    tile_threshold: float = DEFAULTS.ensemble.tile_threshold,
    fractions: tuple[float, ...] = (0.0, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0),
    precision: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Measure per-fusion TileRates; store them in `rates_path(models_dir)`; return the record.

    One slide per malignant fraction in `fractions` (which must include 0 and 1). `precision`
    maps model names to the precision they are served in, so the calls are the served ones.
    """
    if 0.0 not in fractions or 1.0 not in fractions:
        raise InvalidInput("fractions must include 0 and 1 (the benign-only and malignant-only ends)")
    names = available(models_dir)
    if not names:
        raise MissingInput(f"no model checkpoints in {models_dir}")
    # As the Serve replicas load them (default precision where an int8 model is missing).
    clfs = [Classifier.load_served(models_dir, n, (precision or {}).get(n))[0] for n in names]
    cards = [asdict(c.card) for c in clfs]
    mpp, px = tile_scale(cards)
    spec = GridSpec(tile_px=px, mpp=mpp, min_tissue=min_tissue)
    items = read_manifest(manifest, split)
    pools = {label: [it for it in items if it.label == label] for label in (0, 1)}
    for label, pool in pools.items():
        if not pool:
            kind = ("benign", "malignant")[label]
            raise InvalidInput(f"{manifest} has no {kind} images in split {split}")
    calls: dict[float, dict[str, np.ndarray]] = {}
    cells: dict[float, int] = {}  # distinct images on each slide
    with tempfile.TemporaryDirectory(prefix="wbc_rates_") as tmp:
        for frac in fractions:
            # The ends from one class only; mixed slides from the whole split.
            pool = pools[0] if frac == 0 else pools[1] if frac == 1 else items
            path = Path(tmp) / f"rates_{frac}.tiff"
            truth = compose_slide(pool, path, grid=(grid, grid), malignant_fraction=frac, seed=seed)
            tiles = _tiles(path, spec)
            probs = np.stack([c.predict(tiles) for c in clfs])  # (M, N, 2)
            true_frac = float(truth["malignant_fraction"])  # type: ignore[arg-type]
            cells[true_frac] = len({field["image"] for field in truth["fields"]})  # type: ignore[attr-defined]
            calls[true_frac] = {f: fuse(probs, f)[1] >= tile_threshold for f in FUSIONS}
    lo, hi = min(calls), max(calls)
    rates = {
        f: asdict(
            TileRates(
                tpr=float(calls[hi][f].mean()),
                fpr=float(calls[lo][f].mean()),
                n_pos=len(calls[hi][f]),
                n_neg=len(calls[lo][f]),
                curve=tuple((k, float(v[f].mean())) for k, v in sorted(calls.items())),
                pos_cells=cells[hi],
                neg_cells=cells[lo],
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
        "precision": {c.name: c.precision_id for c in clfs},
        "fusions": rates,
    }
    _store(rates_path(models_dir), record)
    return record


def rates_path(models_dir: str | os.PathLike[str]) -> Path:
    """Where rates measured on this machine go: beside the checkpoints, or for a release in its
    folder in the user cache (the release's own file holds the precisions it was cut with).
    """
    return derived_dir(models_dir) / RATES_FILE


def _records(path: Path) -> list[dict[str, Any]]:
    """The records of one rates file: one per set of served precisions."""
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    return list(data.get("records", [])) if "records" in data else [data]


def _store(path: Path, record: dict[str, Any]) -> None:
    """Add `record`, replacing one for the same models and precisions (written whole, then moved)."""
    keep = [
        r
        for r in _records(path)
        if r.get("models") == record["models"] and r.get("precision") != record["precision"]
    ]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"records": [*keep, record]}, indent=2))
    os.replace(tmp, path)


def _identity(cards: list[dict[str, Any]]) -> dict[str, str]:
    # The rates depend on the weights and on each model's operating point (temperature, bias).
    return {c["name"]: f"{c['version']}/T={c['temperature']:.6g}/b={c['bias']:.6g}" for c in cards}


def load_tile_rates(
    models_dir: str | os.PathLike[str],
    cards: list[dict[str, Any]],
    precision: Mapping[str, str] | None = None,
) -> dict[str, Any] | None:
    """The rates measured with exactly these model versions and, where known, in these served
    precisions ({model: precision id}; or from the cards' "precision_id", as the Ensemble passes
    them); else None. Looks in what this machine measured first, then beside the checkpoints.
    """
    if precision is None and cards and all("precision_id" in c for c in cards):
        precision = {c["name"]: c["precision_id"] for c in cards}
    identity = _identity(cards)
    paths = dict.fromkeys([rates_path(models_dir), Path(models_dir, RATES_FILE)])
    for path in paths:
        for record in _records(path):
            # Measured for other weights or operating points, or on other calls: it would bias
            # every slide.
            if record.get("models") != identity:
                continue
            if precision is not None and record.get("precision") != dict(precision):
                continue
            return record
    return None


def _int8_id(models_dir: str | os.PathLike[str], name: str) -> str | None:
    version = json.loads(Path(models_dir, f"{name}.json").read_text())["version"]
    return int8_id(int8_path(models_dir, name), version)


def has_int8(models_dir: str | os.PathLike[str], name: str) -> bool:
    """Whether an int8 model for the model's current weights is stored beside them."""
    return _int8_id(models_dir, name) is not None


def served_precisions(
    models_dir: str | os.PathLike[str], precision: Mapping[str, str] | None
) -> dict[str, str]:
    """The precision each model is served in when `precision` is requested (`Classifier.precision_id`):
    int8 only where a usable int8 model is stored (else the default, as `Classifier.load_served` does).
    """
    out = {}
    for n in available(models_dir):
        p = (precision or {}).get(n)
        if p == "int8":
            qid = _int8_id(models_dir, n)
            p = f"int8:{qid}" if qid else None
        out[n] = p or Classifier.default_precision()
    return out


def ensure_tile_rates(
    models_dir: str | os.PathLike[str],
    manifest: str | os.PathLike[str],
    precision: Mapping[str, str] | None = None,
    **measure: Any,
) -> dict[str, Any]:
    """The stored rates when they belong to these weights and were measured in the precisions
    they are served in (`precision`, as in a Serve config), else freshly measured ones.
    """
    cards = [json.loads(Path(models_dir, f"{n}.json").read_text()) for n in available(models_dir)]
    # Only rates measured on the calls the app makes (e.g. not before an int8 model existed).
    record = load_tile_rates(models_dir, cards, served_precisions(models_dir, precision))
    if record is None:
        print(
            f"measuring tile call rates of the models in {models_dir} (`wbc-ray calibrate`)", file=sys.stderr
        )
        record = measure_tile_rates(models_dir, manifest, precision=precision, **measure)
    return record


def rates_for(record: dict[str, Any] | None, fusion: str) -> TileRates | None:
    if not record or fusion not in record.get("fusions", {}):
        return None
    d = dict(record["fusions"][fusion])
    r = TileRates(**{**d, "curve": tuple(tuple(p) for p in d.get("curve", ()))})
    # Rates that barely separate the classes would blow every estimate up: refuse them.
    return r if r.tpr - r.fpr >= 0.3 else None
