"""From tile calls to a slide verdict: malignant fraction with a Wilson interval against tau."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any, Literal

import numpy as np

Verdict = Literal["malignant", "benign", "indeterminate", "out_of_scope", "insufficient"]
# What each verdict tells the person reading it (the page, the CLI, the REST schema say this).
VERDICT_MEANING: dict[str, str] = {
    "malignant": "ALL suspected: the malignant share is above the slide threshold, interval included.",
    "benign": "No ALL found: the malignant share is below the slide threshold, interval included.",
    "indeterminate": "Indeterminate: the interval straddles the slide threshold. Review the slide.",
    "out_of_scope": "Out of scope: unlike the slides these models learned from (the domain check "
    "flags too many tiles). Refer, or adapt the models to this lab.",
    "insufficient": "Insufficient: too little usable tissue after quality control (blur, ink, "
    "debris, empty glass). Rescan or review the slide.",
}


# The library's defaults, which the settings (config.EnsembleSettings) take as theirs.
DEFAULT_TAU = 0.20
DEFAULT_CONFIDENCE = 0.95


def wilson_interval(k: int, n: int, confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float]:
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
class TileScreening:
    """What screening found on a slide's tiles, and the limits the verdict holds it to."""

    usable: np.ndarray  # (N,) bool: passed quality control
    out_of_range: np.ndarray | None = None  # (N,) bool: outside the domain check's range
    max_out_of_range: float = 1.0  # share of usable tiles out of range above which: out_of_scope
    min_usable_tiles: int = 1  # fewer usable tiles: insufficient
    min_usable_share: float = 0.0  # or a smaller share of the tissue tiles usable


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
    n_rejected: int = 0  # tissue tiles quality control rejected (not scored, not counted)
    n_out_of_range: int = 0  # counted tiles outside the domain check's range
    out_of_range_share: float | None = None  # n_out_of_range / n_tiles; None: not checked

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["interval"] = list(self.interval)
        return d


def slide_verdict(
    tile_calls: np.ndarray,
    tissue: np.ndarray | None = None,
    *,
    tau: float = DEFAULT_TAU,
    confidence: float = DEFAULT_CONFIDENCE,
    min_tissue: float = 0.0,
    rates: TileRates | None = None,
    screen: TileScreening | None = None,
) -> SlideVerdict:
    """Malignant if the interval's lower bound >= tau, benign if its upper bound < tau.

    With `screen`, tiles quality control rejected are left out (counted in `n_rejected`); a
    slide with too few usable tiles is "insufficient", and one whose share of usable tiles
    outside the domain check's range exceeds its limit is "out_of_scope" (the estimate is still
    given, for the reviewer, but no call is made on it).

    The interval is Wilson's for the share of malignant tile calls. With `rates`, the share is
    mapped through the adjusted count, and the interval first widens for the rates' own error
    (`TileRates.share_var`, added to the slide's in quadrature on each side): without that, a
    benign-only slide whose cells draw a few more false calls than the calibration's did gets an
    interval that excludes 0 (the full weights on test-split slides: 0.061 [0.027, 0.107] for a
    true 0, and 0.084 [0.047, 0.127] for 0.041; now [0, 0.129] and [0.008, 0.147]).
    """
    calls = np.asarray(tile_calls).astype(bool)
    tissue_ok = np.ones(len(calls), bool) if tissue is None else np.asarray(tissue) >= min_tissue
    keep = tissue_ok if screen is None else tissue_ok & screen.usable
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
    n_far, far_share = 0, None
    if screen is not None:
        n_tissue = int(tissue_ok.sum())
        if screen.out_of_range is not None:
            n_far = int((screen.out_of_range & keep).sum())
            far_share = n_far / n if n else None
        if n < screen.min_usable_tiles or (n_tissue and n / n_tissue < screen.min_usable_share):
            verdict = "insufficient"
        elif far_share is not None and far_share > screen.max_out_of_range:
            verdict = "out_of_scope"
    return SlideVerdict(
        verdict=verdict,
        malignant_fraction=frac,
        interval=(lo, hi),
        tau=tau,
        confidence=confidence,
        n_tiles=n,
        n_malignant=k,
        n_excluded=int(len(calls) - tissue_ok.sum()),
        raw_fraction=raw,
        adjusted_by=None if rates is None else asdict(rates),
        n_rejected=int((tissue_ok & ~keep).sum()),
        n_out_of_range=n_far,
        out_of_range_share=far_share,
    )
