"""Labelled images from a manifest, resized as training, evaluation and slide tiling resize them."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image

from ..manifest import Item


def load_images(items: list[Item], size: int, workers: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H, W, 3) uint8 images at `size`, and (N,) int64 labels."""

    def one(it: Item) -> np.ndarray:
        with Image.open(it.path) as raw:
            im = raw.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
        return np.asarray(im)

    with ThreadPoolExecutor(workers) as pool:
        arrs = list(pool.map(one, items))
    x = torch.from_numpy(np.stack(arrs))
    y = torch.tensor([it.label for it in items], dtype=torch.int64)
    return x, y
