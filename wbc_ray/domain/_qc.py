"""Tile quality control before scoring: glass, blur, pen ink and debris.

Each tile gets one reason code (0: usable). The checks are simple pixel statistics at the
models' tile scale, with thresholds in `QcSettings` set on the training images (each passes
nearly all of them: docs/domain.md has the figures). A rejected tile is not scored, is
drawn on the heatmap and is counted in the result, so the slide estimate rests on usable
tiles only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import QcSettings
from ._features import TileMaps

# Codes stored per tile in the results (uint8); names as the result and the CSV give them.
REASONS: tuple[str, ...] = ("ok", "background", "blur", "ink", "debris")
OK = 0
# Sharpness is judged on a BLOCKS x BLOCKS grid (32 px blocks of a 128 px tile); a tile is blurred
# when at least BLURRED_SHARE of its content lies in blocks below the limit (-3.9): 1 of the 1,913
# training fields reaches it; a Gaussian blur of sigma 1.7 px (3 px at the training images' 224)
# reaches it in every tile, and in 93.5 % where a quarter of the tile stays sharp
# (docs/domain.md).
BLOCKS = 4
BLURRED_SHARE = 0.5


@dataclass(frozen=True)
class QcThresholds:
    """Limits of the tile checks (defaults in config.QcSettings, set on the training images)."""

    min_content: float  # share of pixels darker or more coloured than glass
    min_sharpness: float  # log mean |Laplacian| of a block's content (gray 0..1); below: blurred
    max_ink: float  # share of pixels in pen colours (green, cyan, blue, black marker)
    max_debris: float  # share of near-black pixels (dirt, dust, black marker, a bubble's rim)

    @classmethod
    def from_settings(cls, qc: QcSettings) -> QcThresholds:
        """The limits of the `qc` settings (the thresholds only; whether QC runs is the caller's)."""
        return cls(qc.min_content, qc.min_sharpness, qc.max_ink, qc.max_debris)


def qc_stats(tiles: np.ndarray | TileMaps) -> dict[str, np.ndarray]:
    """Per-tile statistics the checks compare with their limits ((N,), block ones (N, 4, 4))."""
    m = tiles if isinstance(tiles, TileMaps) else TileMaps(tiles)
    # On 0..255 integers: x / 255 > 0.12 is x >= 31, and so on (exact, and far cheaper than floats).
    mx, mn = m.max, m.min
    chroma = mx - mn
    content = (m.od_sum > 0.15) | (chroma >= 31)
    inner = content[:, 1:-1, 1:-1].astype(np.float32)
    blocks = _block_sums(inner)
    sharp = np.log(_block_sums(m.lap * inner) / np.maximum(blocks, 1) + 1e-4)
    rgb = m.tiles.astype(np.int16)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    # Romanowsky stains are pink to violet (red and blue above green); pen ink is dense green or
    # deep blue. Some training fields have pale green or blue glass, hence "dense" (no channel
    # near white): at most 6 % of a training image's pixels pass either rule. In 0..1 units:
    # green: chroma > 0.25, g > r + 0.05, max < 0.75; blue: chroma > 0.3, b - max(r, g) > 0.3,
    # max < 0.85, r < 0.45; black: max < 0.16.
    green = (chroma >= 64) & (g - r >= 13) & (mx <= 191)
    blue = (chroma >= 77) & (b - np.maximum(r, g) >= 77) & (mx <= 216) & (r <= 114)
    pen = green | blue
    black = mx <= 40
    return {
        "content": content.mean((1, 2)),
        "block_sharpness": sharp,  # (N, BLOCKS, BLOCKS)
        "block_content": blocks,
        "ink": pen.mean((1, 2)),
        "debris": black.mean((1, 2)),
    }


def _block_sums(x: np.ndarray) -> np.ndarray:
    """Sums over a BLOCKS x BLOCKS grid of each image (N, H, W) -> (N, BLOCKS, BLOCKS)."""
    n, h, w = x.shape
    bh, bw = h // BLOCKS, w // BLOCKS
    return x[:, : bh * BLOCKS, : bw * BLOCKS].reshape(n, BLOCKS, bh, BLOCKS, bw).sum((2, 4))


def blurred_share(stats: dict[str, np.ndarray], min_sharpness: float) -> np.ndarray:
    """Share of each tile's content that lies in blocks whose sharpness is below `min_sharpness`.

    Sharpness is judged block by block: a tile across a blurred field and a sharp one would pass
    on its mean (the sharp edges dominate it) though most of it is out of focus.
    """
    c = stats["block_content"]
    low = stats["block_sharpness"] < min_sharpness
    return (c * low).sum((1, 2)) / np.maximum(c.sum((1, 2)), 1)


def tile_qc(tiles: np.ndarray | TileMaps, limits: QcThresholds) -> np.ndarray:
    """A reason code per tile (index into REASONS; 0 usable), the first check that fails."""
    s = qc_stats(tiles)
    code = np.zeros(len(s["content"]), np.uint8)
    # In order of precedence: the first reason that applies is the one recorded.
    checks = [
        (s["ink"] > limits.max_ink, "ink"),
        (s["debris"] > limits.max_debris, "debris"),
        (s["content"] < limits.min_content, "background"),
        (blurred_share(s, limits.min_sharpness) >= BLURRED_SHARE, "blur"),
    ]
    for failed, reason in reversed(checks):
        code[failed] = REASONS.index(reason)
    return code


def reason_counts(codes: np.ndarray) -> dict[str, int]:
    """Rejected tiles per reason (reasons with none left out)."""
    counts = np.bincount(np.asarray(codes, np.int64), minlength=len(REASONS))
    return {REASONS[i]: int(c) for i, c in enumerate(counts) if i != OK and c}
