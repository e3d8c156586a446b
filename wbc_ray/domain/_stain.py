"""Stain normalisation at inference (torchstain's NumPy Macenko and Reinhard), each tile to a
reference taken from the training images and stored in the release.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np

StainMethod = Literal["none", "macenko", "reinhard"]
STAIN_METHODS: tuple[str, ...] = ("none", "macenko", "reinhard")
# Below this many stained pixels a tile's stain vectors cannot be estimated (Macenko), and it
# is passed on as it is.
MIN_STAINED_PX = 200


def _macenko() -> Any:
    import torchstain

    return torchstain.normalizers.MacenkoNormalizer(backend="numpy")


def _reinhard() -> Any:
    import torchstain

    return torchstain.normalizers.ReinhardNormalizer(backend="numpy")


def fit_references(images: np.ndarray) -> dict[str, dict[str, list[Any]]]:
    """Macenko and Reinhard references from training images (N, H, W, 3), laid side by side as
    one picture so that both fit the images' pooled statistics.
    """
    sheet = np.concatenate(list(np.asarray(images, np.uint8)), axis=1)
    mac = _macenko()
    mac.fit(sheet)
    rei = _reinhard()
    rei.fit(sheet)
    return {
        "macenko": {"HERef": np.asarray(mac.HERef).tolist(), "maxCRef": np.asarray(mac.maxCRef).tolist()},
        "reinhard": {
            "target_means": np.asarray(rei.target_means).tolist(),
            "target_stds": np.asarray(rei.target_stds).tolist(),
        },
    }


class StainNormalizer:
    """Normalises tiles to the release's reference with one method; a tile the method cannot
    handle (too little stain, a degenerate colour distribution) passes unchanged.
    """

    def __init__(self, method: str, references: dict[str, dict[str, list[Any]]]) -> None:
        if method not in STAIN_METHODS or method == "none":
            raise ValueError(f"stain normalisation must be one of {STAIN_METHODS[1:]}, got {method!r}")
        if method not in references:
            raise ValueError(f"the release holds no {method} reference")
        self.method = method
        ref = references[method]
        if method == "macenko":
            self._n = _macenko()
            self._n.HERef = np.asarray(ref["HERef"], np.float64)
            self._n.maxCRef = np.asarray(ref["maxCRef"], np.float64)
        else:
            self._n = _reinhard()
            self._n.target_means = np.asarray(ref["target_means"], np.float64)
            self._n.target_stds = np.asarray(ref["target_stds"], np.float64)
        self.passed = 0  # tiles left as they were

    def _one(self, tile: np.ndarray) -> np.ndarray | None:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            try:
                if self.method == "macenko":
                    out = self._n.normalize(I=tile, stains=False)[0]
                else:
                    out = self._n.normalize(tile)
            except (np.linalg.LinAlgError, ValueError, IndexError):
                return None
        return out if np.isfinite(out).all() else None

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        """Normalised copies of uint8 RGB tiles (N, H, W, 3)."""
        tiles = np.asarray(tiles, np.uint8)
        out = tiles.copy()
        od = -np.log((tiles.astype(np.float32) + 1) / 240.0)
        stained = (od >= 0.15).all(-1).sum((1, 2))
        for i, t in enumerate(tiles):
            norm = self._one(t) if stained[i] >= MIN_STAINED_PX else None
            if norm is None:
                self.passed += 1
            else:
                out[i] = norm
        return out
