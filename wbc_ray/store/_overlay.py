"""The calls over the slide, as transparent tiles on any grid (the viewer's Deep Zoom grid): each
scored tile in its score's colour, translucent; tiles called malignant outlined; tiles quality
control rejected in grey, tiles of mostly glass (not counted) light grey; tiles outside the
domain check's range outlined in magenta.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ._exports import (
    EXCLUDED_RGB,
    OUT_OF_RANGE_RGB,
    REJECTED_RGB,
    _colormap,
    _screening,
    _threshold,
    excluded_tiles,
)
from ._zarr import array, attrs, open_store

FILL_ALPHA = 110  # of 255: the cells stay readable under the colour
CALLED_RGB = (120, 0, 20)


@dataclass(frozen=True)
class CallOverlay:
    """A finished job's tiles on their grid, ready to draw any level-0 box."""

    index: np.ndarray  # (rows, cols) tile number, -1 where no tile
    fused: np.ndarray
    qc: np.ndarray
    far: np.ndarray  # outside the domain check's range
    excluded: np.ndarray  # mostly glass: scored, not counted
    called: np.ndarray
    stride0: float
    size0: float

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CallOverlay:
        """The overlay of the job store at `path`."""
        g = open_store(path)
        meta = attrs(g)
        heat = np.asarray(array(g, "heatmap")[:])
        cells = np.asarray(array(g, "cells")[:])
        fused = np.asarray(array(g, "fused")[:])
        qc, dist, _ = _screening(g, meta)
        index = np.full(heat.shape, -1, np.int64)
        index[cells[:, 0], cells[:, 1]] = np.arange(len(cells))
        tiling = meta["tiling"]
        return cls(
            index=index,
            fused=fused,
            qc=qc,
            far=np.nan_to_num(dist, nan=-np.inf) > _threshold(meta),
            excluded=excluded_tiles(g, meta),
            called=fused >= float(meta["result"]["tile_threshold"]),
            stride0=float(tiling["stride0"]),
            size0=float(tiling["size0"]),
        )

    def render(self, box0: tuple[float, float, float, float], size: tuple[int, int]) -> np.ndarray:
        """RGBA uint8 (h, w, 4) of the level-0 box (x0, y0, x1, y1) drawn at `size` (w, h)."""
        x0, y0, x1, y1 = box0
        w, h = size
        sx, sy = w / (x1 - x0), h / (y1 - y0)
        out = np.zeros((h, w, 4), np.uint8)
        rows, cols = self.index.shape
        c_lo, c_hi = max(0, int((x0 - self.size0) // self.stride0)), min(cols, int(x1 // self.stride0) + 1)
        r_lo, r_hi = max(0, int((y0 - self.size0) // self.stride0)), min(rows, int(y1 // self.stride0) + 1)
        line = max(1, round(min(sx, sy) * self.size0 / 40))  # outlines scale with the tile, >= 1 px
        for r in range(r_lo, r_hi):
            for c in range(c_lo, c_hi):
                i = int(self.index[r, c])
                if i < 0:
                    continue
                px0 = max(0, int((c * self.stride0 - x0) * sx))
                py0 = max(0, int((r * self.stride0 - y0) * sy))
                px1 = min(w, int(np.ceil((c * self.stride0 + self.size0 - x0) * sx)))
                py1 = min(h, int(np.ceil((r * self.stride0 + self.size0 - y0) * sy)))
                if px1 <= px0 or py1 <= py0:
                    continue
                if self.qc[i] or self.excluded[i]:
                    out[py0:py1, px0:px1] = (*(REJECTED_RGB if self.qc[i] else EXCLUDED_RGB), FILL_ALPHA)
                    continue
                out[py0:py1, px0:px1] = (*_colormap(self.fused[i : i + 1])[0], FILL_ALPHA)
                edge = OUT_OF_RANGE_RGB if self.far[i] else CALLED_RGB if self.called[i] else None
                if edge is not None:
                    for sl in (
                        np.s_[py0 : py0 + line, px0:px1],
                        np.s_[max(py0, py1 - line) : py1, px0:px1],
                        np.s_[py0:py1, px0 : px0 + line],
                        np.s_[py0:py1, max(px0, px1 - line) : px1],
                    ):
                        out[sl] = (*edge, 255)
        return out
