"""A picture of what the grid kept: thumbnail, tissue mask tint, tile outlines."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from ._grid import TileGrid
from ._reader import Slide
from ._tissue import TissueMask


def grid_preview(slide: Slide, mask: TissueMask, grid: TileGrid, max_side: int = 1024) -> Image.Image:
    thumb = Image.fromarray(slide.thumbnail(max_side))
    m = Image.fromarray(mask.mask.astype(np.uint8) * 255).resize(thumb.size, Image.Resampling.NEAREST)
    tint = Image.new("RGB", thumb.size, (0, 160, 255))
    base = Image.composite(Image.blend(thumb, tint, 0.35), thumb, m)
    draw = ImageDraw.Draw(base)
    s = slide.dimensions[0] / thumb.size[0]
    for (x, y), frac in zip(grid.coords, grid.tissue, strict=True):
        x0, y0 = x / s, y / s
        x1, y1 = (x + grid.size0) / s, (y + grid.size0) / s
        shade = int(80 + 175 * float(frac))
        draw.rectangle((x0, y0, x1, y1), outline=(shade, 30, 30))
    return base
