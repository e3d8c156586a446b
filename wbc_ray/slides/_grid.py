"""Tile grid at a target scale: metadata only, built on the driver from the tissue mask."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ..config import DEFAULTS
from ..errors import InvalidInput
from ._error import SlideError
from ._reader import Slide
from ._tissue import TissueMask

# Tiles are ordered in bands of this many grid rows, column by column within a band, so a run
# of consecutive tiles (one work unit) is a compact block: neighbours share the slide's own
# compressed tiles, which a reader then decodes once instead of once per grid row.
BAND_ROWS = 8


@dataclass(frozen=True)
class GridSpec:
    tile_px: int = DEFAULTS.tiling.tile_px  # output tile side, pixels
    mpp: float = DEFAULTS.tiling.mpp  # target microns per pixel of the output tiles
    stride_px: int | None = None  # step in output pixels; defaults to tile_px (no overlap)
    min_tissue: float = DEFAULTS.tiling.min_tissue  # minimum tissue fraction for a tile to be kept

    def __post_init__(self) -> None:
        if self.tile_px < 8:
            raise InvalidInput(f"tile_px must be at least 8, got {self.tile_px}")
        if not self.mpp > 0:
            raise InvalidInput(f"mpp must be positive, got {self.mpp}")
        if self.stride_px is not None and self.stride_px < 1:
            raise InvalidInput(f"stride_px must be positive, got {self.stride_px}")
        if not 0.0 <= self.min_tissue <= 1.0:
            raise InvalidInput(f"min_tissue must be within [0, 1], got {self.min_tissue}")


@dataclass(frozen=True)
class TileGrid:
    """Tiles that pass the tissue filter, in bands of BAND_ROWS grid rows, column-major within a band."""

    spec: GridSpec
    level: int  # pyramid level the tiles are read from
    read_px: int  # side of the region read at `level`, resized to tile_px
    size0: float  # side of a tile in level-0 pixels
    stride0: float  # step in level-0 pixels
    shape: tuple[int, int]  # full grid (rows, cols), tissue or not
    coords: np.ndarray  # (N, 2) int64 level-0 x, y of each kept tile
    cells: np.ndarray  # (N, 2) int64 grid row, col of each kept tile
    tissue: np.ndarray  # (N,) float32 tissue fraction of each kept tile

    def __len__(self) -> int:
        return int(self.coords.shape[0])

    def settings(self) -> dict[str, object]:
        return {
            **asdict(self.spec),
            "level": self.level,
            "read_px": self.read_px,
            "size0": self.size0,
            "stride0": self.stride0,
            "grid_shape": list(self.shape),
        }


def choose_level(slide: Slide, target_mpp: float) -> tuple[int, float]:
    """The coarsest level still at least as fine as the target, and the downsample wanted."""
    mpp0 = slide.mpp
    if mpp0 is None:
        raise SlideError(
            slide.path,
            "slide has no resolution (mpp) in its metadata; pass --slide-mpp or set "
            "slides.default_mpp in the config",
        )
    want = target_mpp / mpp0
    level = 0
    for i, ds in enumerate(slide.info.level_downsamples):
        if ds <= want * 1.01:
            level = i
    return level, want


def _box_fractions(mask: TissueMask, x0: np.ndarray, y0: np.ndarray, size0: float) -> np.ndarray:
    """Mean of the mask over each tile's box, via a summed-area table."""
    m = mask.mask
    # Integer sums: exact, and half the memory traffic of float64 on a 2048 px mask.
    sat = np.zeros((m.shape[0] + 1, m.shape[1] + 1), np.int64)
    sat[1:, 1:] = m.cumsum(0, dtype=np.int32).cumsum(1, dtype=np.int32)
    s = mask.scale

    def clip(v: np.ndarray, hi: int) -> np.ndarray:
        return np.clip(np.rint(v).astype(np.int64), 0, hi)

    c0, c1 = clip(x0 / s, m.shape[1]), clip((x0 + size0) / s, m.shape[1])
    r0, r1 = clip(y0 / s, m.shape[0]), clip((y0 + size0) / s, m.shape[0])
    # Tiles smaller than a mask pixel still look at the pixel they sit in.
    c1 = np.maximum(c1, np.minimum(c0 + 1, m.shape[1]))
    r1 = np.maximum(r1, np.minimum(r0 + 1, m.shape[0]))
    total = sat[r1, c1] - sat[r0, c1] - sat[r1, c0] + sat[r0, c0]
    area = np.maximum((r1 - r0) * (c1 - c0), 1)
    # Normalise by the full tile area so tiles hanging off the slide edge count the overhang as glass.
    full = max((size0 / s) ** 2, 1.0)
    return (total / np.maximum(area, full)).astype(np.float32)


def tile_grid(slide: Slide, mask: TissueMask, spec: GridSpec) -> TileGrid:
    level, want = choose_level(slide, spec.mpp)
    ds = slide.info.level_downsamples[level]
    read_px = max(1, round(spec.tile_px * want / ds))
    size0 = spec.tile_px * want
    stride0 = (spec.stride_px or spec.tile_px) * want
    w, h = slide.dimensions
    cols = max(1, math.ceil((w - size0) / stride0) + 1) if w > size0 else 1
    rows = max(1, math.ceil((h - size0) / stride0) + 1) if h > size0 else 1
    mesh_r, mesh_c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    rr, cc = mesh_r.ravel(), mesh_c.ravel()
    x0 = np.floor(cc * stride0).astype(np.int64)
    y0 = np.floor(rr * stride0).astype(np.int64)
    frac = _box_fractions(mask, x0.astype(np.float64), y0.astype(np.float64), size0)
    keep = frac >= spec.min_tissue if spec.min_tissue > 0 else np.ones_like(frac, bool)
    keep_idx = np.flatnonzero(keep)
    keep = keep_idx[np.lexsort((rr[keep_idx], cc[keep_idx], rr[keep_idx] // BAND_ROWS))]
    return TileGrid(
        spec=spec,
        level=level,
        read_px=read_px,
        size0=size0,
        stride0=stride0,
        shape=(rows, cols),
        coords=np.stack([x0[keep], y0[keep]], axis=1),
        cells=np.stack([rr[keep], cc[keep]], axis=1).astype(np.int64),
        tissue=frac[keep],
    )
