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
    # Distinct cells (images) behind tpr and fpr. The rates' own error scales with these, not
    # with the tiles: a calibration slide repeats its pool's images, and one image's tiles are
    # called alike. 0: not recorded (rates measured before they were), the tile counts stand in.
    pos_cells: int = 0
    neg_cells: int = 0

    def share_var(self, f: float) -> float:
        """Variance of the share of malignant calls a slide of true fraction `f` shows, as far as
        it comes from measuring the rates on finitely many cells: f^2 Var(tpr) + (1-f)^2 Var(fpr),
        each rate taken as a binomial proportion (Agresti-Coull: never 0, even with no errors).
        """

        def var(rate: float, n: int) -> float:
            if n <= 0:
                return 0.0
            p = (rate * n + 2) / (n + 4)
            return p * (1 - p) / (n + 4)

        return f * f * var(self.tpr, self.pos_cells or self.n_pos) + (1 - f) ** 2 * var(
            self.fpr, self.neg_cells or self.n_neg
        )

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

    The interval is Wilson's for the share of malignant tile calls. With `rates`, the share is
    mapped through the adjusted count, and the interval first widens for the rates' own error
    (`TileRates.share_var`, added to the slide's in quadrature on each side): without that, a
    benign-only slide whose cells draw a few more false calls than the calibration's did gets an
    interval that excludes 0 (the full weights on test-split slides: 0.061 [0.027, 0.107] for a
    true 0, and 0.084 [0.047, 0.127] for 0.041; now [0, 0.129] and [0.008, 0.147]).
    """
    calls = np.asarray(tile_calls).astype(bool)
    keep = np.ones(len(calls), bool) if tissue is None else np.asarray(tissue) >= min_tissue
    n, k = int(keep.sum()), int(calls[keep].sum())
    lo, hi = wilson_interval(k, n, confidence)
    raw = k / n if n else float("nan")
    frac = raw
    if rates is not None and n:
        z = NormalDist().inv_cdf(0.5 + confidence / 2)
        lo = raw - math.hypot(raw - lo, z * math.sqrt(rates.share_var(rates.adjust(lo))))
        hi = raw + math.hypot(hi - raw, z * math.sqrt(rates.share_var(rates.adjust(hi))))
        frac, lo, hi = rates.adjust(raw), rates.adjust(max(0.0, lo)), rates.adjust(min(1.0, hi))
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
