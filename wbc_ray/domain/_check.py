"""The domain check: how far a tile's image statistics lie from the training images'.

A Mahalanobis distance on the statistics of `_features` (standardised, with a shrunk
covariance so that 20 features fitted on about 2,000 images stay well conditioned), and a
threshold at a high quantile of the validation images' distances. Chosen over distances on
the networks' pooled features by measurement (docs/domain.md): the statistics separate every
shifted set about as well, cost the same for any precision or device, and need no second
output from the int8 models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._features import FEATURES, TileMaps, image_stats

# Weight of the identity in the shrunk correlation matrix.
SHRINK = 0.05


@dataclass(frozen=True)
class DomainCheck:
    """Mean, scale and inverse correlation of the training statistics, and the threshold."""

    mean: np.ndarray
    scale: np.ndarray
    precision: np.ndarray
    threshold: float
    features: tuple[str, ...] = FEATURES
    fitted: dict[str, Any] = field(default_factory=dict)  # images, quantile, where from

    def distances_of(self, stats: np.ndarray) -> np.ndarray:
        """Distances (N,) of precomputed statistics (N, len(features))."""
        z = (np.asarray(stats, np.float64) - self.mean) / self.scale
        return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", z, self.precision, z), 0.0)).astype(np.float32)

    def distances(self, tiles: np.ndarray | TileMaps) -> np.ndarray:
        """Distances (N,) of uint8 RGB tiles (N, H, W, 3) or their maps."""
        return self.distances_of(image_stats(tiles))

    def out_of_range(self, distances: np.ndarray) -> np.ndarray:
        """Which distances lie beyond the threshold (NaN, a tile not checked, is not)."""
        d = np.asarray(distances, np.float32)
        return np.nan_to_num(d, nan=0.0) > self.threshold

    def to_dict(self) -> dict[str, Any]:
        """The check as JSON-ready lists (for the release's domain.json)."""
        return {
            "features": list(self.features),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "precision": self.precision.tolist(),
            "threshold": self.threshold,
            "fitted": self.fitted,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DomainCheck:
        """The check stored by `to_dict`; ValueError if it was fitted on other statistics."""
        if tuple(d["features"]) != FEATURES:
            raise ValueError(
                f"domain check fitted on statistics {d['features']}, this version computes {FEATURES}"
            )
        return cls(
            mean=np.asarray(d["mean"], np.float64),
            scale=np.asarray(d["scale"], np.float64),
            precision=np.asarray(d["precision"], np.float64),
            threshold=float(d["threshold"]),
            fitted=dict(d.get("fitted", {})),
        )


def fit_check(train: np.ndarray, val: np.ndarray, quantile: float = 0.975, **fitted: Any) -> DomainCheck:
    """A check fitted on the training images' statistics, its threshold the `quantile` of the
    validation images' distances (so about 1 - quantile of in-domain images are flagged).
    """
    mean = train.mean(0)
    scale = train.std(0) + 1e-9
    corr = np.cov(((train - mean) / scale).T)
    corr = (1 - SHRINK) * corr + SHRINK * np.eye(len(corr))
    probe = DomainCheck(mean, scale, np.linalg.inv(corr), 0.0)
    threshold = float(np.quantile(probe.distances_of(val), quantile))
    info = {"train_images": len(train), "val_images": len(val), "quantile": quantile, **fitted}
    return DomainCheck(mean, scale, probe.precision, threshold, fitted=info)
