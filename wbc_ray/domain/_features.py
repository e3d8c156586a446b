"""Image statistics of a tile: stain colour, texture and the size of stained objects.

The domain check compares these with the training images' (a Mahalanobis distance). They are
computed on the tile as the models see it (`FEATURE_PX`, the field of 112 um), so an image
at another scale shows up as different object sizes and edge energies, not only colours.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# Pixels per tile side at which the statistics are taken (the models' largest input).
FEATURE_PX = 128
# Optical density (-log10 of transmitted light) above which a pixel counts as stained, and above
# which it counts as darkly stained (nuclei, ink, debris).
OD_STAINED = 0.15
OD_DARK = 0.6
# Lags (px) of the stained mask's self-overlap: how large the stained objects are.
LAGS = (2, 6, 16)

FEATURES: tuple[str, ...] = (
    "od_r",
    "od_g",
    "od_b",
    "od_std_r",
    "od_std_g",
    "od_std_b",
    "stained",
    "dark",
    "saturation",
    "hue_cos",
    "hue_sin",
    "grad_fine",
    "grad_coarse",
    "grad_ratio",
    "lap",
    *(f"overlap_{lag}" for lag in LAGS),
)


def at_feature_size(tiles: np.ndarray) -> np.ndarray:
    """Tiles (N, H, W, 3) uint8 resized to FEATURE_PX (a no-op for slide tiles, read at that size)."""
    if tiles.shape[1] == FEATURE_PX and tiles.shape[2] == FEATURE_PX:
        return tiles
    out = np.empty((len(tiles), FEATURE_PX, FEATURE_PX, 3), np.uint8)
    for i, t in enumerate(tiles):
        out[i] = np.asarray(
            Image.fromarray(t).resize((FEATURE_PX, FEATURE_PX), Image.Resampling.BILINEAR, reducing_gap=2.0)
        )
    return out


GRAY3 = 3 * 255.0  # the channel sum of white
# Optical density of each uint8 value: a table lookup instead of a logarithm per pixel.
_OD = -np.log10((np.arange(256, dtype=np.float32) + 1.0) / 256.0)


def optical_density(tiles: np.ndarray) -> np.ndarray:
    """Optical density per channel, float32 (0 for white glass, about 1 for dense stain)."""
    return _OD[np.asarray(tiles, np.uint8)]


class TileMaps:
    """Per-pixel maps of a batch of tiles that both the statistics and quality control use,
    computed once (screening costs time in every read task, beside the models).
    """

    def __init__(self, tiles: np.ndarray) -> None:
        self.tiles = at_feature_size(np.asarray(tiles, np.uint8))
        # Channel by channel: reductions over a last axis of 3 are several times slower in NumPy.
        r, g, b = self.tiles[..., 0], self.tiles[..., 1], self.tiles[..., 2]
        self.od = optical_density(self.tiles)
        self.od_sum = _OD[r] + _OD[g] + _OD[b]
        # Gray as the integer sum of the channels (0..765): differences and the Laplacian in 16-bit
        # integers, several times cheaper than in floats, scaled to gray 0..1 where they are used.
        self.gray3 = r.astype(np.int16) + g + b
        self.lap = laplacian(self.gray3).astype(np.float32) * np.float32(1 / GRAY3)
        self.max = np.maximum(np.maximum(r, g), b)
        self.min = np.minimum(np.minimum(r, g), b)


def _overlap(mask: np.ndarray, lag: int) -> np.ndarray:
    """Share of stained pixels whose neighbours `lag` px right and down are stained too."""
    a = mask[:, :-lag, :-lag]
    both = (a & mask[:, lag:, :-lag]).sum((1, 2)) + (a & mask[:, :-lag, lag:]).sum((1, 2))
    return both / (2.0 * np.maximum(a.sum((1, 2)), 1))


def _hue(m: TileMaps, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean saturation and the circular mean hue (cos, sin) of the stained pixels (`mask`)."""
    n = len(m.tiles)
    which = np.nonzero(mask)
    tile = which[0]
    px = m.tiles[which].astype(np.float32) / np.float32(255.0)  # the stained pixels only
    mx, mn = m.max[which].astype(np.float32) / 255.0, m.min[which].astype(np.float32) / 255.0
    sat = (mx - mn) / np.maximum(mx, 1e-6)
    # Hue angle from the opponent axes (as in YIQ), cheaper than HSV's piecewise formula; its
    # cosine and sine straight from the axes (no trigonometry; an achromatic pixel counts as 0).
    i = 0.596 * px[:, 0] - 0.274 * px[:, 1] - 0.322 * px[:, 2]
    q = 0.211 * px[:, 0] - 0.523 * px[:, 1] + 0.312 * px[:, 2]
    r = np.hypot(i, q)
    cos = np.where(r > 0, i / np.where(r > 0, r, 1), 1.0)
    sin = np.where(r > 0, q / np.where(r > 0, r, 1), 0.0)
    count = np.maximum(np.bincount(tile, minlength=n), 1e-6)
    return (
        np.bincount(tile, sat, minlength=n) / count,
        np.bincount(tile, cos, minlength=n) / count,
        np.bincount(tile, sin, minlength=n) / count,
    )


def _abs_diff_mean(x: np.ndarray) -> np.ndarray:
    """Mean |difference| of neighbours along rows plus along columns, per image (integers in)."""
    return np.abs(np.diff(x, axis=1)).mean((1, 2)) + np.abs(np.diff(x, axis=2)).mean((1, 2))


def _texture(gray3: np.ndarray, lap: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean gradient magnitude (gray 0..1) at full and half resolution, and the Laplacian's mean
    |value|, from the channel sum `gray3` (0..765).
    """
    fine = _abs_diff_mean(gray3) / GRAY3
    h = gray3.shape[1] // 2 * 2
    half = gray3[:, :h, :h].reshape(len(gray3), h // 2, 2, h // 2, 2).sum((2, 4), dtype=np.int16)
    coarse = _abs_diff_mean(half) / (4 * GRAY3)
    return fine, coarse, lap.mean((1, 2))


def laplacian(gray: np.ndarray) -> np.ndarray:
    """|4-neighbour Laplacian| of gray images (N, H, W), on the inner (H-2, W-2) pixels."""
    c = gray[:, 1:-1, 1:-1]
    return np.abs(4 * c - gray[:, :-2, 1:-1] - gray[:, 2:, 1:-1] - gray[:, 1:-1, :-2] - gray[:, 1:-1, 2:])


def image_stats(tiles: np.ndarray | TileMaps) -> np.ndarray:
    """The statistics named in FEATURES for each tile: (N, len(FEATURES)) float64.

    Parameters
    ----------
    tiles : ndarray or TileMaps
        uint8 RGB tiles (N, H, W, 3) of one field each (resized to FEATURE_PX first), or their
        maps already computed.
    """
    m = tiles if isinstance(tiles, TileMaps) else TileMaps(tiles)
    if len(m.tiles) == 0:
        return np.zeros((0, len(FEATURES)))
    od, total = m.od, m.od_sum
    stained = total > OD_STAINED * 3
    dark = total > OD_DARK * 3
    sat, hc, hs = _hue(m, stained)
    fine, coarse, lap = _texture(m.gray3, m.lap)
    cols = [
        *(od[..., c].mean((1, 2)) for c in range(3)),
        *(od[..., c].std((1, 2)) for c in range(3)),
        stained.mean((1, 2)),
        dark.mean((1, 2)),
        sat,
        hc,
        hs,
        np.log(fine + 1e-4),
        np.log(coarse + 1e-4),
        np.log((coarse + 1e-4) / (fine + 1e-4)),
        np.log(lap + 1e-4),
        *(_overlap(stained, lag) for lag in LAGS),
    ]
    return np.stack(cols, axis=1).astype(np.float64)
