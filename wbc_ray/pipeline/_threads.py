"""One slide streamed through threads in this process: the one-off path on one machine, without Ray.

The same work units, store layout, resume and progress as `stream_slide` (Ray Data): a reader
thread reads the next chunks while this thread scores one and writes it. OpenSlide, Pillow's
resampling and the networks (OpenVINO, torch) release the GIL, so the reader and the scoring
threads share the cores.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from ..config import DEFAULTS
from ..store import open_store
from ._stream import Batch, NodeCount, Plan, ReadTiles, StreamResult, WriteChunks, prepare_store, work_rows

# Chunks read ahead of the one being scored: enough that scoring never waits on a read, few
# enough that pixels held stay small (two chunks of 256 tiles of 128 px: 25 MB).
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
) -> StreamResult:
    """Read, score (`score`, as `stream_slide` takes it) and write one slide into the Zarr group
    `out`, chunk by chunk; a store a killed run left is resumed. The timings say how many seconds
    each stage was busy (reads overlap scoring, so they add up to more than the wall time).
    """
    from tqdm import tqdm

    t0 = time.perf_counter()
    out = os.fspath(out)
    grid = plan.grid
    n = len(grid)
    todo, n_chunks, already = prepare_store(
        plan, out, chunk_tiles, store_pixels=store_pixels, n_classes=n_classes, extra_attrs=extra_attrs
    )
    busy = {"prepare_s": time.perf_counter() - t0, "read_s": 0.0, "score_s": 0.0, "write_s": 0.0}
    writer = WriteChunks(out, keep_pixels=store_pixels)
    stage = ReadTiles(
        slide_path=plan.slide_path,
        level=grid.level,
        read_px=grid.read_px,
        tile_px=grid.spec.tile_px,
        slide_mpp=plan.slide_mpp_override,
        default_mpp=plan.default_mpp,
        write=writer,
    )

    def read(row: dict[str, Any]) -> Batch | None:
        t = time.perf_counter()
        batch = stage.read({k: np.asarray([v]) for k, v in row.items()})
        busy["read_s"] += time.perf_counter() - t  # one reader thread: no race on the sum
        return batch

    bar = tqdm(
        total=n,
        initial=already,
        unit="tile",
        desc=os.path.basename(plan.slide_path)[:40],
        disable=not progress,
    )
    finished, nodes = already, NodeCount()
    rows = iter(work_rows(grid.coords, todo, chunk_tiles))
    with ThreadPoolExecutor(1, thread_name_prefix="wbc-read") as reader:
        ahead: deque[Future[Batch | None]] = deque(
            reader.submit(read, r) for _, r in zip(range(READ_AHEAD), rows, strict=False)
        )
        while ahead:
            batch = ahead.popleft().result()
            nxt = next(rows, None)
            if nxt is not None:
                ahead.append(reader.submit(read, nxt))
            if batch is None:
                continue
            t = time.perf_counter()
            scored = score(batch)
            busy["score_s"] += time.perf_counter() - t
            k = len(scored["n"])
            scored["read_node"] = np.array([NODE] * k)
            scored.setdefault("score_nodes", np.array(["{}"] * k))
            t = time.perf_counter()
            nodes.add(writer(scored))
            busy["write_s"] += time.perf_counter() - t
            finished += int(scored["n"].sum())
            bar.update(int(scored["n"].sum()))
            if on_progress:
                on_progress(finished, n)
    bar.close()
    seconds = time.perf_counter() - t0
    status = "tiled" if n_classes is None else "scored"
    open_store(out, "r+").attrs.update(
        {"status": status, "timings": {**busy, "total_s": seconds, "nodes": nodes.record}}
    )
    return StreamResult(out, n, n_chunks, len(todo), seconds, busy, nodes.record)
