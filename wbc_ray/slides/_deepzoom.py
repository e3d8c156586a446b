"""Deep Zoom (DZI) over any slide this package opens: the descriptor and its tiles.

One generator for every reader (OpenSlide, the direct TIFF reader, Pillow images), on top of
`Slide.read`: a Deep Zoom level is the full image halved `levels - 1 - level` times; each tile is
read from the slide level whose downsample is the largest not above the tile's, then resized. The
smallest levels (the whole image within `thumb_px`) are cut from the slide's thumbnail, so a slide
with no pyramid is never read whole for a tile of a few pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ._error import SlideError
from ._reader import Slide

TILE_PX = 254  # with a 1 px overlap, 256 px per tile: OpenSlide's and OpenSeadragon's default
OVERLAP_PX = 1


@dataclass(frozen=True)
class DeepZoomGrid:
    """The Deep Zoom pyramid of an image of `width` x `height` level-0 pixels."""

    width: int
    height: int
    tile: int = TILE_PX
    overlap: int = OVERLAP_PX

    @property
    def levels(self) -> int:
        """Number of levels: level `levels - 1` is full resolution, level 0 one pixel."""
        return max(1, math.ceil(math.log2(max(self.width, self.height, 1)))) + 1

    def scale(self, level: int) -> int:
        """Level-0 pixels per pixel of `level`."""
        return 2 ** (self.levels - 1 - level)

    def level_size(self, level: int) -> tuple[int, int]:
        """(width, height) of `level`."""
        s = self.scale(level)
        return max(1, math.ceil(self.width / s)), max(1, math.ceil(self.height / s))

    def tile_count(self, level: int) -> tuple[int, int]:
        """(columns, rows) of tiles at `level`."""
        w, h = self.level_size(level)
        return math.ceil(w / self.tile), math.ceil(h / self.tile)

    def tile_box(self, level: int, col: int, row: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of a tile in `level`'s pixels, overlap included; SlideError when the
        tile does not exist.
        """
        if not 0 <= level < self.levels:
            raise SlideError("deep zoom", f"level {level} does not exist (0-{self.levels - 1})")
        cols, rows = self.tile_count(level)
        if not (0 <= col < cols and 0 <= row < rows):
            raise SlideError("deep zoom", f"tile {col}_{row} does not exist at level {level} ({cols}x{rows})")
        w, h = self.level_size(level)
        x0 = col * self.tile - (self.overlap if col else 0)
        y0 = row * self.tile - (self.overlap if row else 0)
        return (
            x0,
            y0,
            min(w, (col + 1) * self.tile + self.overlap),
            min(h, (row + 1) * self.tile + self.overlap),
        )

    def dzi(self, fmt: str) -> str:
        """The DZI descriptor (XML) for tiles in format `fmt` ("jpeg" or "png")."""
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" Format="{fmt}" '
            f'Overlap="{self.overlap}" TileSize="{self.tile}"><Size Width="{self.width}" '
            f'Height="{self.height}"/></Image>\n'
        )


def deepzoom_grid(slide: Slide) -> DeepZoomGrid:
    """The Deep Zoom pyramid of `slide`'s level 0."""
    w, h = slide.dimensions
    return DeepZoomGrid(int(w), int(h))


def read_deepzoom_tile(
    slide: Slide, grid: DeepZoomGrid, level: int, col: int, row: int, thumb: np.ndarray | None = None
) -> np.ndarray:
    """RGB uint8 pixels of one Deep Zoom tile; `thumb`, the slide's thumbnail (whole image), serves
    the levels no larger than it.
    """
    x0, y0, x1, y1 = grid.tile_box(level, col, row)
    w, h = x1 - x0, y1 - y0
    lw, lh = grid.level_size(level)
    if thumb is not None and lw <= thumb.shape[1] and lh <= thumb.shape[0]:
        sx, sy = thumb.shape[1] / lw, thumb.shape[0] / lh
        box = (x0 * sx, y0 * sy, x1 * sx, y1 * sy)
        return np.asarray(Image.fromarray(thumb).resize((w, h), Image.Resampling.BILINEAR, box=box))
    scale = grid.scale(level)
    downs = slide.info.level_downsamples
    best = max((i for i, d in enumerate(downs) if d <= scale * (1 + 1e-6)), default=0)
    ds = float(downs[best])
    size = (max(1, math.ceil(w * scale / ds)), max(1, math.ceil(h * scale / ds)))
    px = slide.read(x0 * scale, y0 * scale, best, size)
    if px.shape[1] == w and px.shape[0] == h:
        return px
    return np.asarray(Image.fromarray(px).resize((w, h), Image.Resampling.LANCZOS))
