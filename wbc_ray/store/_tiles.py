"""A finished job's tiles as the reviewer sees them: one tile's record, the tile under a point of
the slide, and the review queue (the fields worth a pathologist's eyes first).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._exports import _screening, _threshold, excluded_tiles
from ._zarr import array, attrs, open_store

# The queue's groups, in the order a reviewer works through them.
QUEUE_GROUPS = ("suspicious", "uncertain", "out_of_range")


@dataclass(frozen=True)
class TileTable:
    """Positions, scores and screening of every tile of a finished job (small: numbers only)."""

    coords: np.ndarray  # (N, 2) level-0 x, y of each tile's top-left corner
    size0: float  # a tile's side in level-0 pixels
    stride0: float
    tissue: np.ndarray
    fused: np.ndarray
    probs: np.ndarray  # (N, models) probability of malignant per model
    models: list[str]
    qc: np.ndarray  # reason code per tile (0 usable)
    reasons: list[str]
    domain: np.ndarray  # distance from the release's images (NaN where not measured)
    domain_limit: float
    threshold: float  # the tile threshold: fused at or above it is a malignant call
    excluded: np.ndarray  # mostly glass: scored, not counted in the slide's share

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TileTable:
        """The table of the job store at `path`."""
        g = open_store(path)
        meta = attrs(g)
        qc, dist, reasons = _screening(g, meta)
        probs = np.asarray(array(g, "probs")[:])
        return cls(
            coords=np.asarray(array(g, "coords")[:]).astype(np.int64),
            size0=float(meta["tiling"]["size0"]),
            stride0=float(meta["tiling"]["stride0"]),
            tissue=np.asarray(array(g, "tissue")[:]),
            fused=np.asarray(array(g, "fused")[:]),
            probs=probs[:, :, 1] if probs.ndim == 3 else probs,
            models=[m["name"] for m in meta.get("models", [])],
            qc=qc,
            reasons=reasons,
            domain=dist,
            domain_limit=_threshold(meta),
            threshold=float(meta["result"]["tile_threshold"]),
            excluded=excluded_tiles(g, meta),
        )

    def __len__(self) -> int:
        return len(self.coords)

    def call(self, i: int) -> str:
        """The models' call on tile `i`: malignant, benign, rejected (by quality control), or
        excluded (mostly glass: scored, not counted).
        """
        if self.qc[i]:
            return "rejected"
        if self.excluded[i]:
            return "excluded"
        return "malignant" if self.fused[i] >= self.threshold else "benign"

    def out_of_range(self, i: int) -> bool:
        """Whether tile `i` lies outside the domain check's range."""
        d = float(self.domain[i])
        return d == d and d > self.domain_limit

    def record(self, i: int) -> dict[str, Any]:
        """Everything known about tile `i` (scores are null for a rejected tile)."""
        rejected = bool(self.qc[i])
        dist = float(self.domain[i])
        return {
            "tile": int(i),
            "x": int(self.coords[i, 0]),
            "y": int(self.coords[i, 1]),
            "size": self.size0,
            "tissue": round(float(self.tissue[i]), 4),
            "call": self.call(i),
            "qc": self.reasons[self.qc[i]] if self.qc[i] < len(self.reasons) else str(self.qc[i]),
            "fused": None if rejected else round(float(self.fused[i]), 5),
            "tile_threshold": self.threshold,
            "models": {
                m: None if rejected else round(float(self.probs[i, j]), 5) for j, m in enumerate(self.models)
            },
            "domain_distance": None if dist != dist else round(dist, 4),
            "out_of_range": self.out_of_range(i),
        }

    def at(self, x: float, y: float) -> int | None:
        """The tile covering level-0 point (x, y) (where tiles overlap, the one whose centre is
        nearest), or None.
        """
        inside = (
            (self.coords[:, 0] <= x)
            & (x < self.coords[:, 0] + self.size0)
            & (self.coords[:, 1] <= y)
            & (y < self.coords[:, 1] + self.size0)
        )
        hits = np.flatnonzero(inside)
        if not len(hits):
            return None
        centre = self.coords[hits] + self.size0 / 2
        return int(hits[np.argmin(((centre - (x, y)) ** 2).sum(1))])

    def queue(self, per_group: int) -> list[dict[str, Any]]:
        """The review queue: the most suspicious malignant calls first, then the calls nearest the
        tile threshold either way (the most uncertain), then tiles outside the domain check's
        range; each tile once, at most `per_group` per group.

        Suspicious calls are ranked by the fused score, ties (the rank fusion saturates at 1) by
        the models' mean probability and then their lowest one: the tile all models are surest of
        comes first.
        """
        usable = (self.qc == 0) & ~self.excluded
        mean, low = self.probs.mean(1), self.probs.min(1)
        called = np.flatnonzero(usable & (self.fused >= self.threshold))
        order = called[np.lexsort((-low[called], -mean[called], -self.fused[called]))]
        groups = {"suspicious": order[:per_group]}
        taken = set(groups["suspicious"].tolist())
        rest = np.array([i for i in np.flatnonzero(usable) if i not in taken], np.int64)
        near = rest[np.argsort(np.abs(self.fused[rest] - self.threshold), kind="stable")]
        groups["uncertain"] = near[:per_group]
        taken |= set(groups["uncertain"].tolist())
        far = [i for i in range(len(self)) if self.out_of_range(i) and i not in taken]
        far.sort(key=lambda i: -float(self.domain[i]))
        groups["out_of_range"] = np.array(far[:per_group], np.int64)
        return [{**self.record(int(i)), "group": name} for name in QUEUE_GROUPS for i in groups[name]]
