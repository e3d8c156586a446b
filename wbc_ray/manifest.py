"""Labelled image manifests: CSV with `path` (relative to the CSV), `label`, optional `split`,
`subtype` and `mpp` (the image's microns per pixel, where known).
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import InvalidInput

CLASSES = ("benign", "malignant")


@dataclass(frozen=True)
class Item:
    """One labelled image of a manifest."""

    path: Path
    label: int  # 0 benign, 1 malignant
    split: str | None
    subtype: str | None
    mpp: float | None = None  # microns per pixel; None: not given (the caller says what it assumes)


def read_manifest(csv_path: str | os.PathLike[str], split: str | None = None) -> list[Item]:
    """The rows of a manifest CSV (`path`, `label`, optional `split` and `subtype`), paths
    resolved against the CSV's folder; only `split`'s rows if given.
    """
    root = Path(csv_path).resolve().parent
    items: list[Item] = []
    with open(csv_path, newline="") as fh:
        reader = csv.DictReader(fh)
        cols = set(reader.fieldnames or [])
        if not {"path", "label"} <= cols:
            raise InvalidInput(f"{csv_path}: manifest needs columns 'path' and 'label', has {sorted(cols)}")
        for line, row in enumerate(reader, start=2):
            label = row["label"].strip().lower()
            if label not in CLASSES:
                raise InvalidInput(f"{csv_path}:{line}: label {label!r} is not one of {CLASSES}")
            row_split = (row.get("split") or "").strip() or None
            mpp = _mpp(row.get("mpp"), f"{csv_path}:{line}")
            if split is not None and row_split != split:
                continue
            items.append(
                Item(
                    path=root / row["path"],
                    label=CLASSES.index(label),
                    split=row_split,
                    subtype=(row.get("subtype") or "").strip() or None,
                    mpp=mpp,
                )
            )
    if not items:
        raise InvalidInput(f"{csv_path}: no rows" + (f" in split {split!r}" if split else ""))
    return items


def _mpp(text: str | None, where: str) -> float | None:
    if text is None or not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        raise InvalidInput(f"{where}: mpp {text!r} is not a number (microns per pixel)") from None
    if not 0.01 <= value <= 100:
        raise InvalidInput(f"{where}: mpp {value} is outside 0.01-100 microns per pixel")
    return value


def manifest_hash(items: list[Item]) -> str:
    """Content hash of a manifest selection: paths and labels, order-independent."""
    h = hashlib.sha256()
    for key in sorted(f"{it.path.name}\t{it.label}" for it in items):
        h.update(key.encode())
    return h.hexdigest()


def image_key(path: str | os.PathLike[str], csv_path: str | os.PathLike[str]) -> str:
    """An image's name in reports: its path relative to the manifest's folder where it lies
    under it (so reports do not depend on where the data is mounted), else its absolute path.
    """
    p, root = Path(path).resolve(), Path(csv_path).resolve().parent
    return p.relative_to(root).as_posix() if p.is_relative_to(root) else p.as_posix()
