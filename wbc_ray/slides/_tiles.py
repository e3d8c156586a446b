"""Reading one tile of a grid at its output size."""

from __future__ import annotations

import numpy as np
from PIL import Image

from ._reader import Slide


def read_tile(slide: Slide, x: int, y: int, level: int, read_px: int, tile_px: int) -> np.ndarray:
    """RGB uint8 (tile_px, tile_px, 3): `read_px` square at `level`, resized when they differ."""
    region = slide.read(x, y, level, (read_px, read_px))
    if read_px == tile_px:
        return region
    # BILINEAR with Pillow's reducing_gap is fast and close to area averaging when shrinking.
    img = Image.fromarray(region).resize((tile_px, tile_px), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(img)
