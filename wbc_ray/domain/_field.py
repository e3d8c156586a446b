"""Images of any scale onto the models' field, as slide tiles are read."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from ..scale import FIELD_PX, TRAINING_MPP

FIELD_UM = FIELD_PX * TRAINING_MPP


def to_field(x: np.ndarray, mpp: float | None, out_px: int) -> np.ndarray:
    """An image (H, W, 3 uint8) as one field of FIELD_UM at `out_px` pixels.

    With `mpp` (microns per pixel), the image is resized so that a micron spans what it spans in
    a slide tile, then centred on the field: cut to it when larger, filled by mirroring it about
    its edges when smaller. Without, the whole image is taken as one field;
    callers say so, since that is a guess about the scale.
    """
    h, w = x.shape[:2]
    if mpp is None:
        side = (out_px, out_px)
        if (w, h) == side:
            return x
        return np.asarray(Image.fromarray(x).resize(side, Image.Resampling.BILINEAR, reducing_gap=2.0))
    target = FIELD_UM / out_px
    nw, nh = max(1, round(w * mpp / target)), max(1, round(h * mpp / target))
    im = np.asarray(Image.fromarray(x).resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=2.0))
    if nh < out_px or nw < out_px:
        # Smaller than the field: filled by mirroring the image about its edges, so the cell keeps
        # its true size among mirrored copies of its surroundings (a flat fill would be a field no
        # smear has: no texture, an edge all round).
        py, px = max(0, out_px - nh), max(0, out_px - nw)
        while im.shape[0] < out_px or im.shape[1] < out_px:
            im = np.pad(
                im,
                ((min(py // 2 + 1, im.shape[0]),) * 2, (min(px // 2 + 1, im.shape[1]),) * 2, (0, 0)),
                mode="symmetric",
            )
        nh, nw = im.shape[:2]
    # Centred on the field; whatever overhangs is cut.
    sy, sx = (nh - out_px) // 2, (nw - out_px) // 2
    return np.ascontiguousarray(im[sy : sy + out_px, sx : sx + out_px])


def read_field(
    path: str | os.PathLike[str], mpp: float | None, out_px: int, shift: str = "none"
) -> np.ndarray:
    """An image file as one field (`to_field`), after an optional shift (`_shifts`), which
    acts at the image's own scale.
    """
    from ._shifts import shift_image

    with Image.open(path) as raw:
        x = np.asarray(raw.convert("RGB"))
    return to_field(shift_image(x, shift), mpp, out_px)


def read_fields(
    paths: Sequence[str | os.PathLike[str]],
    mpp: float | None | Sequence[float | None],
    out_px: int,
    shift: str = "none",
    workers: int = 4,
) -> np.ndarray:
    """Image files as fields (N, out_px, out_px, 3); `mpp` one for all or one per image."""
    per = list(mpp) if isinstance(mpp, Sequence) else [mpp] * len(paths)
    with ThreadPoolExecutor(workers) as pool:
        arrs = list(pool.map(lambda a: read_field(a[0], a[1], out_px, shift), zip(paths, per, strict=True)))
    return np.stack(arrs) if arrs else np.zeros((0, out_px, out_px, 3), np.uint8)
