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
class TileRates:
    """How often tiles are called malignant on slides of known composition.

    Measured on slides composed from the validation split (`wbc-ray calibrate`). Tiles that
    straddle fields, gaps and glass are called malignant more often than whole fields are, and
    a tile across a malignant and a benign field leans malignant, so the raw share of malignant
    calls overstates the fraction, most in the middle of the range.
    """

    tpr: float  # share of tiles called malignant on a malignant-only slide
    fpr: float  # ... on a benign-only slide
    n_pos: int = 0
    n_neg: int = 0
    # (true fraction, share of malignant calls) on slides of known mixed composition.
    curve: tuple[tuple[float, float], ...] = ()

    def adjust(self, p: float) -> float:
        """The fraction whose measured share is p.

        With a curve: its inverse, piecewise linear (the share is made non-decreasing first).
        Without: adjusted classify-and-count (Rogan & Gladen 1978; Forman 2008),
        (p - fpr) / (tpr - fpr).
        """
        if len(self.curve) >= 2:
            pts = sorted(self.curve)
            truth = np.array([f for f, _ in pts])
            share = np.maximum.accumulate(np.array([s for _, s in pts]))
            return float(np.clip(np.interp(p, share, truth), 0.0, 1.0))
        return float(np.clip((p - self.fpr) / (self.tpr - self.fpr), 0.0, 1.0))


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
    raw_fraction: float | None = None  # share of malignant calls before adjustment
    adjusted_by: dict[str, float] | None = None  # the TileRates used, if any

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
    rates: TileRates | None = None,
) -> SlideVerdict:
    """Malignant if the interval's lower bound >= tau, benign if its upper bound < tau.

    With `rates`, the share of malignant calls and its Wilson interval are mapped through the
    adjusted count; the interval does not widen for the error in the rates themselves.
    """
    calls = np.asarray(tile_calls).astype(bool)
    keep = np.ones(len(calls), bool) if tissue is None else np.asarray(tissue) >= min_tissue
    n, k = int(keep.sum()), int(calls[keep].sum())
    lo, hi = wilson_interval(k, n, confidence)
    raw = k / n if n else float("nan")
    frac = raw
    if rates is not None and n:
        frac, lo, hi = rates.adjust(raw), rates.adjust(lo), rates.adjust(hi)
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
        malignant_fraction=frac,
        interval=(lo, hi),
        tau=tau,
        confidence=confidence,
        n_tiles=n,
        n_malignant=k,
        n_excluded=int(len(calls) - n),
        raw_fraction=raw,
        adjusted_by=None if rates is None else asdict(rates),
    )
