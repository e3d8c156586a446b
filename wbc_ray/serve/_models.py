"""Serve deployments: one CNN class bound once per architecture, and the fusing Ensemble."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import numpy as np
from ray import serve

from ..ensemble import FUSIONS, fuse


def _tiles_in(items: list[np.ndarray]) -> int:
    return sum(len(x) for x in items)


@serve.deployment(max_ongoing_requests=16)
class CNN:
    """One architecture from a checkpoint; `@serve.batch` merges tiles of concurrent requests."""

    def __init__(
        self,
        models_dir: str,
        name: str,
        precision: str | None = None,
        torch_threads: int = 0,
        max_batch_tiles: int = 256,
    ) -> None:
        import torch

        from ..models import Classifier

        if torch_threads > 0:
            torch.set_num_threads(torch_threads)
        self.models_dir = models_dir
        self.clf, self.note = Classifier.load_served(models_dir, name, precision)
        if self.note:
            logging.getLogger("ray.serve").warning("%s: %s", name, self.note)
        self._explainer: Any = None
        # The batch cap bounds the tiles a replica holds and its latency per call; activation
        # memory is bounded separately, as `predict` runs at most 128 tiles at a time (fp32
        # Xception: ~1.5 GB at 128 tiles of 128 px; int8 graphs run 32 at a time).
        self.predict.set_max_batch_size(max_batch_tiles)  # type: ignore[attr-defined]
        self.name = name
        self.tiles_scored = 0
        self.busy_s = 0.0

    @serve.batch(max_batch_size=128, batch_wait_timeout_s=0.005, batch_size_fn=_tiles_in)
    async def predict(self, batches: list[np.ndarray]) -> list[np.ndarray]:
        sizes = [len(b) for b in batches]
        t0 = time.perf_counter()
        probs = self.clf.predict(np.concatenate(batches), batch_size=128)
        self.busy_s += time.perf_counter() - t0
        self.tiles_scored += len(probs)
        return list(np.split(probs, np.cumsum(sizes)[:-1]))

    def gradcam(self, tile: np.ndarray, target: int = 1) -> np.ndarray:
        from ..models import Classifier, gradcam

        if self.clf.precision != "int8":
            return gradcam(self.clf, tile, target)
        # An int8 graph has no gradients: explain with the float weights it was made from.
        if self._explainer is None:
            self._explainer = Classifier.load(self.models_dir, self.name, precision="fp32")
        return gradcam(self._explainer, tile, target)

    def card(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self.clf.card)

    def stats(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pid": os.getpid(),
            "device": str(self.clf.device),
            "precision": self.clf.precision,
            "tiles_scored": self.tiles_scored,
            "busy_s": self.busy_s,
            "note": self.note,
        }


@serve.deployment(max_ongoing_requests=32)
class Ensemble:
    """Calls the CNNs concurrently and fuses their calibrated probabilities."""

    def __init__(
        self,
        fusion: str = "fuzzy_rank",
        models_dir: str | None = None,
        max_batch_tiles: int = 256,
        **cnns: Any,
    ) -> None:
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        self.fusion = fusion
        self.models_dir = models_dir
        # The CNNs refuse a request larger than their batch cap, so larger ones are split.
        self.max_tiles = max(1, max_batch_tiles)
        self.cnns = dict(sorted(cnns.items()))

    @property
    def names(self) -> list[str]:
        return list(self.cnns)

    async def score(self, tiles: np.ndarray, fusion: str | None = None) -> dict[str, np.ndarray]:
        """probs (N, M, K) in model-name order, fused malignant score (N,), call (N,)."""
        step = self.max_tiles
        parts = [tiles[i : i + step] for i in range(0, len(tiles), step)] or [tiles]
        outs = await asyncio.gather(*(h.predict.remote(t) for h in self.cnns.values() for t in parts))
        k = len(parts)
        p = np.stack([np.concatenate(outs[m * k : (m + 1) * k]) for m in range(len(self.cnns))])  # (M, N, K)
        call, score = fuse(p, fusion or self.fusion)  # type: ignore[arg-type]
        return {
            "probs": p.transpose(1, 0, 2).astype(np.float32),
            "fused": score.astype(np.float32),
            "call": call.astype(np.int8),
        }

    async def models(self) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(h.card.remote() for h in self.cnns.values())))

    async def tile_rates(self) -> dict[str, Any] | None:
        """The slide-level tile rates measured for exactly these model versions, if any."""
        from ..training import load_tile_rates

        if self.models_dir is None:
            return None
        return load_tile_rates(self.models_dir, await self.models())

    async def gradcam(self, model: str, tile: np.ndarray, target: int = 1) -> np.ndarray:
        if model not in self.cnns:
            raise KeyError(model)
        return await self.cnns[model].gradcam.remote(tile, target)

    async def stats(self) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(h.stats.remote() for h in self.cnns.values())))
