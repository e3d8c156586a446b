"""Ensemble math (pure numpy): tile-level fusion and tile-to-slide verdicts."""

from ._fusion import DEFAULT_FUSION, FUSIONS, Fusion, fuse, fused_scores, fuzzy_rank_scores, fuzzy_ranks
from ._slide import (
    DEFAULT_CONFIDENCE,
    DEFAULT_TAU,
    VERDICT_MEANING,
    SlideVerdict,
    TileRates,
    TileScreening,
    slide_verdict,
    wilson_interval,
)

__all__ = [
    "DEFAULT_CONFIDENCE",
    "DEFAULT_TAU",
    "DEFAULT_FUSION",
    "VERDICT_MEANING",
    "FUSIONS",
    "Fusion",
    "SlideVerdict",
    "TileRates",
    "TileScreening",
    "fuse",
    "fused_scores",
    "fuzzy_rank_scores",
    "fuzzy_ranks",
    "slide_verdict",
    "wilson_interval",
]
