"""From tile calls to a slide verdict: malignant fraction with a Wilson interval against tau."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any, Literal

import numpy as np

Verdict = Literal["malignant", "benign", "indeterminate"]


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion k/n."""
    if n <= 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = k / n
    den = 1 + z * z / n
    center = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, center - half), min(1.0, center + half)


@dataclass(frozen=True)
class SlideVerdict:
    verdict: Verdict
    malignant_fraction: float
    interval: tuple[float, float]
    tau: float
    confidence: float
    n_tiles: int  # tissue tiles counted
    n_malignant: int
    n_excluded: int  # tiles below the tissue threshold

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["interval"] = list(self.interval)
        return d


def slide_verdict(
    tile_calls: np.ndarray,
    tissue: np.ndarray | None = None,
    *,
    tau: float = 0.20,
    confidence: float = 0.95,
    min_tissue: float = 0.0,
) -> SlideVerdict:
    """Malignant if the interval's lower bound >= tau, benign if its upper bound < tau."""
    calls = np.asarray(tile_calls).astype(bool)
    keep = np.ones(len(calls), bool) if tissue is None else np.asarray(tissue) >= min_tissue
    n, k = int(keep.sum()), int(calls[keep].sum())
    lo, hi = wilson_interval(k, n, confidence)
    verdict: Verdict
    if n == 0:
        verdict = "indeterminate"
    elif lo >= tau:
        verdict = "malignant"
    elif hi < tau:
        verdict = "benign"
    else:
        verdict = "indeterminate"
    return SlideVerdict(
        verdict=verdict,
        malignant_fraction=k / n if n else float("nan"),
        interval=(lo, hi),
        tau=tau,
        confidence=confidence,
        n_tiles=n,
        n_malignant=k,
        n_excluded=int(len(calls) - n),
    )
