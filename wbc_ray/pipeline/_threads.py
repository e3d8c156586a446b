"""One slide streamed through threads in this process: the one-off path on one machine, without Ray.

The same work units, store layout, resume and progress as `stream_slide` (Ray Data): a reader
thread reads the next chunks while scoring threads score and write the ones before. OpenSlide,
Pillow's resampling and the networks (OpenVINO, torch) release the GIL, so the threads share the
cores. One scoring thread where the networks run in this process (each takes every core); several
where they run in a Serve app's replicas (the service's units in flight).
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from ..config import DEFAULTS
from ._stream import Batch, Plan, ReadTiles, StreamResult, StreamRun

# Chunks read ahead of those being scored: enough that scoring never waits on a read, few enough
# that pixels held stay small (a chunk of 256 tiles of 128 px: 12.6 MB).
READ_AHEAD = 2
NODE = "local"  # the node every tile is read and scored on, as the result's timings name it


def stream_in_threads(
    plan: Plan,
    out: str | os.PathLike[str],
    *,
    score: Callable[[Batch], Batch],
    chunk_tiles: int = DEFAULTS.tiling.chunk_tiles,
    store_pixels: bool = False,
    n_classes: int | None = None,
    extra_attrs: dict[str, Any] | None = None,
    progress: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
    score_threads: int = 1,
) -> StreamResult:
    """Read, score (`score`, as `stream_slide` takes it, on `score_threads` chunks at once) and
    write one slide into the Zarr group `out`, chunk by chunk; a store a killed run left is
    resumed. The timings say how many seconds each stage was busy, summed over threads (reads
    overlap scoring, so they add up to more than the wall time).
    """
    run = StreamRun(
        plan,
        out,
        chunk_tiles,
        store_pixels=store_pixels,
        n_classes=n_classes,
        extra_attrs=extra_attrs,
        progress=progress,
        on_progress=on_progress,
    )
    busy = {"prepare_s": run.prepare_s, "read_s": 0.0, "score_s": 0.0, "write_s": 0.0}
    stage = ReadTiles.of(plan, run.writer)

    lock = threading.Lock()

    def timed(stage_s: str, fn: Callable[[Any], Any], arg: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(arg)
        finally:
            with lock:
                busy[stage_s] += time.perf_counter() - t

    def read(row: dict[str, Any]) -> Batch | None:
        return timed("read_s", stage.read, {k: np.asarray([v]) for k, v in row.items()})

    def score_and_write(batch: Batch) -> Batch:
        scored = timed("score_s", score, batch)
        k = len(scored["n"])
        scored["read_node"] = np.array([NODE] * k)
        scored.setdefault("score_nodes", np.array(["{}"] * k))
        return timed("write_s", run.writer, scored)  # type: ignore[no-any-return]

    rows = iter(run.rows())
    with (
        ThreadPoolExecutor(1, thread_name_prefix="wbc-read") as reader,
        ThreadPoolExecutor(score_threads, thread_name_prefix="wbc-score") as scorers,
    ):
        ahead: deque[Future[Batch | None]] = deque(
            reader.submit(read, r) for _, r in zip(range(READ_AHEAD + score_threads), rows, strict=False)
        )
        scoring: deque[Future[Batch]] = deque()
        while ahead or scoring:
            while ahead and len(scoring) < score_threads:
                batch = ahead.popleft().result()
                nxt = next(rows, None)
                if nxt is not None:
                    ahead.append(reader.submit(read, nxt))
                if batch is not None:
                    scoring.append(scorers.submit(score_and_write, batch))
            if not scoring:
                continue
            run.done(scoring.popleft().result())
    return run.close("scored", busy)
