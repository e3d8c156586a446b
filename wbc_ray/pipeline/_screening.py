"""The screening an analysis applies to its tiles (QC, stain normalisation, domain check), built
from the settings and the release's domain file, and what it found on a slide.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..domain import DomainFile, QcThresholds, StainNormalizer, TileScreen, reason_counts
from ..ensemble import TileScreening
from ..errors import InvalidInput


@dataclass(frozen=True)
class ScreenSettings:
    """How an analysis screens tiles (defaults: config.QcSettings and DomainSettings)."""

    qc: QcThresholds | None  # None: no quality control
    stain: str  # release | none | macenko | reinhard
    domain_check: bool
    max_out_of_range: float
    min_usable_tiles: int
    min_usable_share: float


def stain_method(stain: str, domain: DomainFile | None) -> str:
    """The normalisation `stain` names ("release": the one the release's measurements chose)."""
    if stain == "release":
        return domain.stain_default if domain is not None else "none"
    return stain


def build_screen(s: ScreenSettings, domain: DomainFile | None) -> TileScreen:
    """The TileScreen for these settings and this release (InvalidInput when a normalisation is
    asked of a release without references).
    """
    method = stain_method(s.stain, domain)
    normalizer = None
    if method != "none":
        if domain is None:
            raise InvalidInput(
                f"stain normalisation {method!r} needs the release's references (domain.json): "
                "this release has none (`wbc-ray domain` fits them)"
            )
        normalizer = StainNormalizer(method, domain.stain_references)
    check = domain.check if s.domain_check and domain is not None else None
    return TileScreen(s.qc, normalizer, check)


def screening_of(
    s: ScreenSettings, screen: TileScreen, qc: np.ndarray, distances: np.ndarray
) -> tuple[TileScreening, dict[str, Any]]:
    """The verdict's view of a slide's screening (by `screen`, as `build_screen` made it from
    `s`), and the result's record of it.
    """
    from ..domain import OK

    check = screen.check
    usable = np.asarray(qc) == OK
    out_of_range = check.out_of_range(distances) if check is not None else None
    screening = TileScreening(
        usable=usable,
        out_of_range=out_of_range,
        max_out_of_range=s.max_out_of_range,
        min_usable_tiles=s.min_usable_tiles,
        min_usable_share=s.min_usable_share,
    )
    record = {
        "qc": {"enabled": s.qc is not None, "rejected": reason_counts(qc)},
        "stain": screen.stain.method if screen.stain is not None else "none",
        "domain": {
            "checked": check is not None,
            "threshold": None if check is None else round(check.threshold, 4),
            "max_out_of_range": s.max_out_of_range,
            "why_not": None
            if check is not None
            else ("turned off (domain.check)" if not s.domain_check else "the release has no domain.json"),
        },
    }
    return screening, record
