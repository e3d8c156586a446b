"""One network as wbc-ray scores slide tiles with it: in a Serve replica and in the one-off path."""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

import numpy as np

from ._classifier import Classifier, Precision

# Bulk scoring runs in steps of this many tiles on CPUs. In a Serve replica, interactive requests
# queue for the same compute thread, so they wait for one step, not for every slide tile queued
# before them (docs/performance.md, "Why the code is as it is"). A GPU takes a batch whole.
STEP_TILES = 32


class TileScorer:
    """A network loaded in the precision it is served in (int8 falls back to the default precision
    when no usable int8 model is stored, saying so in `note`), scoring uint8 tiles in steps.

    The service's CNN replicas and the one-off path's in-process ensemble both score through this
    class, so a tile gets the same probabilities whichever way a slide went (int8 answers do not
    depend on the batch a tile shares, nor on the thread count: tests/serve/test_analysis.py).
    """

    def __init__(
        self, models_dir: str | os.PathLike[str], name: str, precision: Precision | None, max_batch_tiles: int
    ) -> None:
        self.models_dir, self.name = os.fspath(models_dir), name
        self.clf, self.note = Classifier.load_served(models_dir, name, precision)
        self.step_tiles = STEP_TILES if self.clf.device.type == "cpu" else max_batch_tiles

    def predict(self, tiles: np.ndarray) -> np.ndarray:
        """Calibrated class probabilities (N, K) for uint8 tiles (N, H, W, 3)."""
        return self.clf.predict(tiles, batch_size=self.step_tiles)

    def card(self) -> dict[str, Any]:
        """The model card, with the precision it is served in: slide-level tile rates hold for one
        set of those.
        """
        return {**asdict(self.clf.card), "precision_id": self.clf.precision_id}
