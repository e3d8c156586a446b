"""Serve deployments: one CNN class bound once per architecture, and the fusing Ensemble."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from ray import serve

from ..ensemble import FUSIONS, fused_scores
from ..errors import InvalidInput


def _tiles_in(items: list[np.ndarray]) -> int:
    return sum(len(x) for x in items)


# A replica with more threads allowed takes them for a step only when the rest of its node left
# the cores free during its last step: at a slide's end the other models are done and one
# replica still works through its queue on one core while the other idles. The replica's own
# CPU time is taken out, or its own wide steps would read as a busy node and it would flip back.
OTHERS_SLACK_CORES = 0.5


class _NodeLoad:
    """Cores that other processes on this node kept busy since the last reading (/proc/stat less
    this process's own CPU time).
    """

    def __init__(self) -> None:
        self.cores = os.cpu_count() or 1
        self._last = self._read()

    @staticmethod
    def _read() -> tuple[float, int, int, float] | None:
        try:
            with open("/proc/stat") as fh:
                fields = [int(v) for v in fh.readline().split()[1:]]
        except (OSError, ValueError):
            return None  # not Linux: the extra threads are never taken
        cpu = os.times()
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return time.monotonic(), idle, sum(fields), cpu.user + cpu.system

    def others(self) -> float:
        now, last = self._read(), self._last
        self._last = now
        if now is None or last is None or now[2] <= last[2] or now[0] <= last[0]:
            return float(self.cores)
        busy = self.cores * (1 - (now[1] - last[1]) / (now[2] - last[2]))
        return max(0.0, busy - (now[3] - last[3]) / (now[0] - last[0]))


@serve.deployment(max_ongoing_requests=16)
class CNN:
    """One architecture from a checkpoint; `@serve.batch` merges tiles of concurrent requests."""

    def __init__(
        self,
        models_dir: str,
        name: str,
        precision: str | None,
        torch_threads: int,
        max_batch_tiles: int,
        tail_threads: int,
    ) -> None:
        import torch

        from ..models import Int8Model, TileScorer

        if torch_threads > 0:
            torch.set_num_threads(torch_threads)
        import ray

        self.models_dir = models_dir
        # Returned with every answer, so a job records which nodes scored its tiles.
        self.node_id = ray.get_runtime_context().get_node_id()
        self.actor = ray.get_runtime_context().get_actor_name()
        # The scoring code the one-off path runs too (models.TileScorer): same answers either way.
        self.scorer = TileScorer(models_dir, name, precision, max_batch_tiles)
        self.clf, self.note = self.scorer.clf, self.scorer.note
        if self.note:
            logging.getLogger("ray.serve").warning("%s: %s", name, self.note)
        self._explainer: Any = None
        # The batch cap bounds the tiles a replica holds per call; activation memory is bounded
        # separately, as the model runs STEP_TILES at a time on CPUs.
        self.predict.set_max_batch_size(max_batch_tiles)  # type: ignore[attr-defined]
        self.predict_now.set_max_batch_size(max_batch_tiles)  # type: ignore[attr-defined]
        self.name = name
        self.tiles_scored = 0
        self.busy_s = 0.0
        # One thread does all the model work, first come first served, step by step; the event
        # loop stays free to take requests meanwhile.
        self._compute = ThreadPoolExecutor(1, thread_name_prefix=f"{name}-compute")
        # Threads to take while the node idles (0: never). Torch's thread pool resizes between
        # steps; an OpenVINO int8 model fixes its threads when compiled, so it holds a second
        # compiled model for the wide steps, made here rather than in the tail.
        self.int8: Int8Model | None = self.clf.model if isinstance(self.clf.model, Int8Model) else None
        self.threads: int = self.int8.threads if self.int8 is not None else torch.get_num_threads()
        self.tail_threads = tail_threads
        if self.int8 is not None and tail_threads > self.threads:
            self.int8.prepare(tail_threads)
        self.tail_steps = 0
        self._load = _NodeLoad()

    def _threads_for_step(self) -> None:
        import torch

        if self.tail_threads <= self.threads:
            return
        free = self._load.cores - self._load.others()
        wide = free >= self.tail_threads - OTHERS_SLACK_CORES
        want = self.tail_threads if wide else self.threads
        if self.int8 is not None:
            self.int8.use_threads(want)
        elif torch.get_num_threads() != want:
            torch.set_num_threads(want)
        self.tail_steps += int(wide)

    def _run(self, tiles: np.ndarray) -> np.ndarray:
        self._threads_for_step()
        t0 = time.perf_counter()
        probs = self.scorer.predict(tiles)
        self.busy_s += time.perf_counter() - t0
        self.tiles_scored += len(probs)
        return probs

    async def _stepped(self, tiles: np.ndarray) -> np.ndarray:
        loop = asyncio.get_running_loop()
        # Each step is queued only when the one before has finished, so anything queued
        # meanwhile (an interactive request) runs in between. Steps of models.STEP_TILES on CPUs;
        # a GPU takes a whole batch (stepping it would only add launches, not shorten any wait).
        step = self.scorer.step_tiles
        outs = [
            await loop.run_in_executor(self._compute, self._run, tiles[i : i + step])
            for i in range(0, len(tiles), step)
        ]
        return np.concatenate(outs) if outs else self.clf.predict(tiles)

    async def _batch(self, batches: list[np.ndarray]) -> list[tuple[np.ndarray, str]]:
        sizes = [len(b) for b in batches]
        probs = await self._stepped(np.concatenate(batches))
        return [(p, self.node_id) for p in np.split(probs, np.cumsum(sizes)[:-1])]

    @serve.batch(max_batch_size=128, batch_wait_timeout_s=0.005, batch_size_fn=_tiles_in)
    async def predict(self, batches: list[np.ndarray]) -> list[tuple[np.ndarray, str]]:
        """Bulk scoring (slide tiles): tiles of concurrent requests share batches. Each request
        gets its probabilities and the node id of the replica that computed them.
        """
        return await self._batch(batches)

    @serve.batch(max_batch_size=128, batch_wait_timeout_s=0.002, batch_size_fn=_tiles_in)
    async def predict_now(self, batches: list[np.ndarray]) -> list[tuple[np.ndarray, str]]:
        """Interactive scoring (patches a person waits for): batched only with other interactive
        requests, so it waits at most for the slide-tile step in progress.
        """
        return await self._batch(batches)

    async def gradcam(self, tile: np.ndarray, target: int = 1) -> np.ndarray:
        # On the compute thread too: one model computation at a time per replica, and an
        # explanation someone waits for goes ahead of queued slide tiles like `predict_now`.
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._compute, self._gradcam, tile, target)

    def _gradcam(self, tile: np.ndarray, target: int) -> np.ndarray:
        from ..models import Classifier, gradcam

        if self.clf.precision != "int8":
            return gradcam(self.clf, tile, target)
        # An int8 model has no gradients: explain with the float weights it was made from.
        if self._explainer is None:
            self._explainer = Classifier.load(self.models_dir, self.name, precision="fp32")
        return gradcam(self._explainer, tile, target)

    def card(self) -> dict[str, Any]:
        return self.scorer.card()

    def stats(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pid": os.getpid(),
            "node_id": self.node_id,
            "actor": self.actor,
            "device": str(self.clf.device),
            "precision": self.clf.precision,
            "tiles_scored": self.tiles_scored,
            "busy_s": self.busy_s,
            "tail_steps": self.tail_steps,  # steps run with the tail's extra threads
            "note": self.note,
        }


# A replica that dies mid-request (its node lost, its process killed) fails the request; Serve
# starts a replacement, and the request is sent again, to a live replica, for about a minute.
RETRY_DELAYS_S = (0.5, 1, 2, 4, 8, 8, 8, 8, 8, 8, 8)


async def _call(handle: Any, method: str, *args: Any) -> Any:
    """`handle.method.remote(*args)`, sent again while the replica serving it has died."""
    from ray.exceptions import RayActorError

    for delay in (*RETRY_DELAYS_S, None):
        try:
            return await getattr(handle, method).remote(*args)
        except RayActorError:
            if delay is None:
                raise
            logging.getLogger("ray.serve").warning(
                "%s: a replica died mid-request; retrying in %s s", method, delay
            )
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


@serve.deployment(max_ongoing_requests=32)
class Ensemble:
    """Calls the CNNs concurrently and fuses their calibrated probabilities."""

    def __init__(
        self,
        fusion: str,
        models_dir: str | None,
        max_batch_tiles: int,
        **cnns: Any,
    ) -> None:
        if fusion not in FUSIONS:
            raise InvalidInput(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        self.fusion = fusion
        self.models_dir = models_dir
        # The CNNs refuse a request larger than their batch cap, so larger ones are split.
        self.max_tiles = max(1, max_batch_tiles)
        self.cnns = dict(sorted(cnns.items()))

    @property
    def names(self) -> list[str]:
        return list(self.cnns)

    async def score(
        self, tiles: np.ndarray, fusion: str | None = None, interactive: bool = False
    ) -> dict[str, Any]:
        """Probs (N, M, K) in model-name order, fused malignant score (N,), call (N,), and the
        node each model's replica ran on (`nodes`).

        `interactive` requests (a person waiting) go ahead of queued slide tiles.
        """
        step = self.max_tiles
        parts = [tiles[i : i + step] for i in range(0, len(tiles), step)] or [tiles]
        method = "predict_now" if interactive else "predict"
        outs = await asyncio.gather(*(_call(h, method, t) for h in self.cnns.values() for t in parts))
        k = len(parts)
        per_model = [np.concatenate([o[0] for o in outs[m * k : (m + 1) * k]]) for m in range(len(self.cnns))]
        res = self._fused(per_model, fusion)
        res["nodes"] = {name: outs[m * k][1] for m, name in enumerate(self.cnns)}
        return res

    def _fused(self, per_model: list[np.ndarray], fusion: str | None) -> dict[str, Any]:
        return dict(fused_scores(per_model, fusion or self.fusion))  # type: ignore[arg-type]

    async def models(self) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(h.card.remote() for h in self.cnns.values())))

    async def tile_rates(self) -> dict[str, Any] | None:
        """The slide-level tile rates measured for exactly these model versions, if any."""
        from ..lifecycle import load_tile_rates

        if self.models_dir is None:
            return None
        return load_tile_rates(self.models_dir, await self.models())

    async def domain(self) -> dict[str, Any] | None:
        """The release's domain file (domain check, stain references) as JSON, if it has one."""
        from ..domain import load_domain

        if self.models_dir is None:
            return None
        found = await asyncio.to_thread(load_domain, self.models_dir)
        return None if found is None else found.to_dict()

    async def release(self) -> dict[str, Any] | None:
        """The served release's version and lineage (None for a plain folder of checkpoints)."""
        from ..release import release_summary

        if self.models_dir is None:
            return None
        return await asyncio.to_thread(release_summary, self.models_dir)

    async def gradcam(self, model: str, tile: np.ndarray, target: int = 1) -> np.ndarray:
        if model not in self.cnns:
            raise KeyError(model)
        return await self.cnns[model].gradcam.remote(tile, target)

    async def stats(self) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(h.stats.remote() for h in self.cnns.values())))
