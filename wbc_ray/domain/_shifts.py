"""Shifted copies of images: what another lab, scanner or slide does to a field.

Each shift is a function of one RGB image (uint8, H x W x 3) taken at the training scale, and
models one way a slide from elsewhere differs (docs/domain.md lists them with what they stand
for). They are deterministic, so a report can be reproduced.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter


def _stain(x: np.ndarray) -> np.ndarray:
    # Another lab's Romanowsky stain: hue turned 25 degrees in the YIQ chroma plane, chroma at
    # 0.7 and a darker, more contrasted field (a bluer, heavier May-Grunwald-Giemsa).
    f = x.astype(np.float32) / 255.0
    m = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)
    yiq = f @ m.T
    a = np.deg2rad(25.0)
    i, q = yiq[..., 1], yiq[..., 2]
    yiq[..., 1], yiq[..., 2] = 0.7 * (i * np.cos(a) - q * np.sin(a)), 0.7 * (i * np.sin(a) + q * np.cos(a))
    yiq[..., 0] = yiq[..., 0] ** 1.3
    rgb = yiq @ np.linalg.inv(m).T
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _half_scale(x: np.ndarray) -> np.ndarray:
    # Cells at half their size (a scanner at half the magnification the metadata claims): the
    # field shrunk to half and repeated 2 x 2, mirrored, so the field holds four times the area.
    h, w = x.shape[:2]
    small = np.asarray(
        Image.fromarray(x).resize((w // 2, h // 2), Image.Resampling.BILINEAR, reducing_gap=2.0)
    )
    top = np.concatenate([small, small[:, ::-1]], axis=1)
    out = np.concatenate([top, top[::-1]], axis=0)
    return np.ascontiguousarray(out[:h, :w])


def _double_scale(x: np.ndarray) -> np.ndarray:
    # Cells at twice their size (twice the magnification claimed): the centre half enlarged.
    h, w = x.shape[:2]
    crop = x[h // 4 : h // 4 + h // 2, w // 4 : w // 4 + w // 2]
    return np.asarray(Image.fromarray(crop).resize((w, h), Image.Resampling.BICUBIC))


def _blur(x: np.ndarray) -> np.ndarray:
    # Out of focus: a Gaussian of 2 px at the training scale (1 um).
    return np.asarray(Image.fromarray(x).filter(ImageFilter.GaussianBlur(2.0)))


def _jpeg(x: np.ndarray) -> np.ndarray:
    # A scanner or export at JPEG quality 15 (blocks and lost fine detail).
    buf = io.BytesIO()
    Image.fromarray(x).save(buf, format="JPEG", quality=15)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"))


def _grayscale(x: np.ndarray) -> np.ndarray:
    # A monochrome camera (or a grayscale export): luma in all three channels.
    y = x.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.repeat(np.clip(y + 0.5, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)


SHIFTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "stain": _stain,
    "scale_0.5": _half_scale,
    "scale_2": _double_scale,
    "blur": _blur,
    "jpeg": _jpeg,
    "grayscale": _grayscale,
}
SHIFT_MEANING = {
    "stain": "another lab's stain: hue turned 25 degrees, chroma x0.7, darker (gamma 1.3)",
    "scale_0.5": "cells at half size: the field shrunk x0.5 and mirrored 2 x 2 (magnification misread)",
    "scale_2": "cells at twice the size: the centre half enlarged x2 (magnification misread)",
    "blur": "out of focus: Gaussian blur, sigma 2 px (1 um)",
    "jpeg": "heavy compression: JPEG quality 15",
    "grayscale": "monochrome camera: luma in all channels",
}


def shift_image(x: np.ndarray, name: str) -> np.ndarray:
    """`x` (H, W, 3 uint8) with the named shift applied ("none" returns it unchanged)."""
    if name == "none":
        return x
    if name not in SHIFTS:
        raise ValueError(f"unknown shift {name!r}; known: none, {', '.join(SHIFTS)}")
    return SHIFTS[name](x)
