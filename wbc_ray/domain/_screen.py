"""Everything done to a tile before the models see it: quality control, stain normalisation,
the domain check.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._check import DomainCheck
from ._features import TileMaps
from ._qc import OK, QcThresholds, tile_qc
from ._stain import StainNormalizer


@dataclass
class Screened:
    """One batch of tiles after screening."""

    tiles: np.ndarray  # as the models get them (normalised where asked)
    qc: np.ndarray  # (N,) uint8 reason codes, 0 usable
    domain: np.ndarray  # (N,) float32 distance from the training images (NaN: no check)

    @property
    def usable(self) -> np.ndarray:
        """Tiles that passed quality control (the only ones scored)."""
        return self.qc == OK


class TileScreen:
    """QC, then normalisation, then the domain check, each optional.

    The domain check sees the tiles as the models do (after normalisation): it asks whether the
    models have seen inputs like these, not whether the slide was stained like the training
    images.
    """

    def __init__(
        self,
        qc: QcThresholds | None = None,
        stain: StainNormalizer | None = None,
        check: DomainCheck | None = None,
    ) -> None:
        self.qc, self.stain, self.check = qc, stain, check

    def __call__(self, tiles: np.ndarray) -> Screened:
        """Screen uint8 RGB tiles (N, H, W, 3)."""
        tiles = np.asarray(tiles, np.uint8)
        n = len(tiles)
        maps = TileMaps(tiles) if n and (self.qc is not None or self.check is not None) else None
        codes = tile_qc(maps, self.qc) if maps is not None and self.qc is not None else np.zeros(n, np.uint8)
        out = tiles
        keep = codes == OK
        if self.stain is not None and keep.any():
            out = tiles.copy()
            out[keep] = self.stain(tiles[keep])
            maps = TileMaps(out)
        dist = np.full(n, np.nan, np.float32)
        if self.check is not None and maps is not None:
            # Rejected tiles too: they are not counted, but a reviewer (and /score) sees both.
            dist = self.check.distances(maps)
        return Screened(out, codes, dist)
