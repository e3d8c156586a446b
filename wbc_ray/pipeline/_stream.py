"""One slide streamed through Ray Data: plan on the driver, read / (score) / write on workers.

("Job" is the service's word for a queued analysis, `serve._jobs`; this is the dataflow one
analysis, or a plain tiling, runs.) The unit of work is one Zarr chunk of `chunk_tiles` tiles, so
every worker writes a disjoint chunk range and a stream started again skips chunks already
marked done. Rows that reach the driver
carry only chunk ids and counts, never pixels.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image

from .._digest import file_sha256
from ..config import DEFAULTS
from ..slides import GridSpec, Slide, TileGrid, local_path, open_slide, read_tile, tile_grid, tissue_mask
from ..store import array, create_store, done_chunks, done_tiles, open_store, write_chunk

Batch = dict[str, np.ndarray]


@dataclass
class Plan:
    slide_path: str
    grid: TileGrid
    info: dict[str, Any]
    slide_mpp_override: float | None = None
    default_mpp: float | None = None
    thumbnail: np.ndarray = field(default_factory=lambda: np.zeros((1, 1, 3), np.uint8))


def plan_slide(
    slide_path: str | os.PathLike[str],
    spec: GridSpec,
    *,
    slide_mpp: float | None = None,
    default_mpp: float | None = None,
    thumbnail_px: int = DEFAULTS.slides.thumbnail_px,
) -> Plan:
    path = os.fspath(slide_path)
    with open_slide(path, mpp=slide_mpp, default_mpp=default_mpp) as slide:
        mask = tissue_mask(slide, thumbnail_px)
        grid = tile_grid(slide, mask, spec)
        info = slide.info.to_dict()
    # The stored preview comes from the mask's thumbnail: a second read of the slide would add to
    # the planning, time in which no replica has work.
    preview = Image.fromarray(mask.thumbnail)
    preview.thumbnail((1024, 1024), Image.Resampling.LANCZOS)
    return Plan(path, grid, info, slide_mpp, default_mpp, np.asarray(preview))


@lru_cache(maxsize=8)
def _cached_slide(path: str, mpp: float | None, default_mpp: float | None) -> Slide:
    # Worker processes are reused across tasks; keeping the slide open saves re-parsing it.
    return open_slide(path, mpp=mpp, default_mpp=default_mpp)


@dataclass(frozen=True)
class WriteChunks:
    """Ray Data stage: writes every array column except bookkeeping into its chunk."""

    store: str
    skip: tuple[str, ...] = ("chunk", "n", "coords", "read_node", "score_nodes")
    keep_pixels: bool = True

    def __call__(self, batch: Batch) -> Batch:
        for j, chunk in enumerate(batch["chunk"]):
            n = int(batch["n"][j])
            arrays = {
                k: v[j][:n]
                for k, v in batch.items()
                if k not in self.skip and (self.keep_pixels or k != "pixels")
            }
            write_chunk(self.store, int(chunk), arrays)
        # Only bookkeeping goes back to the driver: counts and where the work ran.
        return {k: v for k, v in batch.items() if k in ("chunk", "n", "read_node", "score_nodes")}


@dataclass(frozen=True)
class ReadTiles:
    """Ray Data stage: rows of (chunk, n, coords) in; each chunk's tiles read, scored (given
    `score`) and written to the store, so pixels never travel between stages.

    Each row carries its own tile coordinates (a few hundred bytes), so readers touch only the
    slide; only bookkeeping (chunk, n) comes out.
    """

    slide_path: str
    level: int
    read_px: int
    tile_px: int
    write: WriteChunks
    slide_mpp: float | None = None
    default_mpp: float | None = None
    score: Callable[[Batch], Batch] | None = None

    @classmethod
    def of(cls, plan: Plan, write: WriteChunks, score: Callable[[Batch], Batch] | None = None) -> ReadTiles:
        """The stage reading `plan`'s slide at its grid's level and tile size."""
        g = plan.grid
        return cls(
            slide_path=plan.slide_path,
            level=g.level,
            read_px=g.read_px,
            tile_px=g.spec.tile_px,
            write=write,
            slide_mpp=plan.slide_mpp_override,
            default_mpp=plan.default_mpp,
            score=score,
        )

    def read(self, batch: Batch) -> Batch | None:
        """The batch's chunks still to do, read: {"chunk", "n", "pixels"}; None when all are done.

        A task run again (its node lost, its worker killed) skips the units an earlier attempt
        finished: each tile is scored and written once.
        """
        done = done_chunks(self.write.store)
        todo = np.array([not done[int(c)] for c in batch["chunk"]], bool)
        if not todo.all():
            batch = {k: v[todo] for k, v in batch.items()}
            if not len(batch["chunk"]):
                return None
        slide = _cached_slide(self.slide_path, self.slide_mpp, self.default_mpp)
        coords, counts = batch["coords"], batch["n"]
        px = np.zeros((len(coords), coords.shape[1], self.tile_px, self.tile_px, 3), np.uint8)
        for j in range(len(coords)):
            for i in range(int(counts[j])):
                x, y = coords[j, i]
                px[j, i] = read_tile(slide, int(x), int(y), self.level, self.read_px, self.tile_px)
        return {"chunk": batch["chunk"], "n": counts, "pixels": px}

    def __call__(self, batch: Batch) -> Batch:
        import ray

        out = self.read(batch)
        if out is None:
            return self._nothing()
        node = ray.get_runtime_context().get_node_id()
        if self.score is not None:
            out = self.score(out)
        out["read_node"] = np.array([node] * len(out["n"]))
        out.setdefault("score_nodes", np.array(["{}"] * len(out["n"])))
        return self.write(out)

    @staticmethod
    def _nothing() -> Batch:
        return {
            "chunk": np.zeros(0, np.int64),
            "n": np.zeros(0, np.int64),
            "read_node": np.array([], str),
            "score_nodes": np.array([], str),
        }


class NodeCount:
    """Tiles per node that read them, and per model and node that scored them."""

    def __init__(self) -> None:
        self.record: dict[str, Any] = {"read": {}, "score": {}}

    def add(self, batch: Batch) -> None:
        for j, n in enumerate(batch["n"]):
            read = self.record["read"]
            node = str(batch["read_node"][j])
            read[node] = read.get(node, 0) + int(n)
            for model, where in json.loads(str(batch["score_nodes"][j])).items():
                per = self.record["score"].setdefault(model, {})
                per[where] = per.get(where, 0) + int(n)


def work_rows(coords: np.ndarray, chunks: list[int], chunk_tiles: int) -> list[dict[str, Any]]:
    """One row per chunk to do: its id, its tile count and its tiles' corners (padded with -1)."""
    rows = []
    for c in chunks:
        part = coords[c * chunk_tiles : (c + 1) * chunk_tiles]
        padded = np.full((chunk_tiles, 2), -1, np.int64)
        padded[: len(part)] = part
        rows.append({"chunk": c, "n": len(part), "coords": padded})
    return rows


@dataclass
class StreamResult:
    store: str
    n_tiles: int
    n_chunks: int
    chunks_run: int
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    # Where the work ran: {"read": {node_id: tiles}, "score": {model: {node_id: tiles}}}.
    nodes: dict[str, Any] = field(default_factory=dict)

    @property
    def tiles_per_s(self) -> float:
        return self.n_tiles / self.seconds if self.seconds > 0 else 0.0


class StreamRun:
    """One stream's store and bookkeeping, the same for Ray Data (`stream_slide`) and threads
    (`stream_in_threads`): the store created or reopened (the chunks still to do), progress in
    tiles, where the work ran, and the store's closing record.
    """

    def __init__(
        self,
        plan: Plan,
        out: str | os.PathLike[str],
        chunk_tiles: int,
        *,
        store_pixels: bool,
        n_classes: int | None,
        extra_attrs: dict[str, Any] | None,
        progress: bool,
        on_progress: Callable[[int, int], None] | None,
    ) -> None:
        self.t0 = time.perf_counter()
        self.plan, self.out, self.chunk_tiles = plan, os.fspath(out), chunk_tiles
        self.n = len(plan.grid)
        self.todo, self.n_chunks, self.finished = prepare_store(
            plan,
            self.out,
            chunk_tiles,
            store_pixels=store_pixels,
            n_classes=n_classes,
            extra_attrs=extra_attrs,
        )
        self.prepare_s = time.perf_counter() - self.t0
        self.writer = WriteChunks(self.out, keep_pixels=store_pixels)
        self.nodes = NodeCount()
        self.on_progress = on_progress
        desc = os.path.basename(plan.slide_path)[:40]
        from tqdm import tqdm

        self.bar = tqdm(total=self.n, initial=self.finished, unit="tile", desc=desc, disable=not progress)

    def rows(self) -> list[dict[str, Any]]:
        """The work rows of the chunks still to do."""
        return work_rows(self.plan.grid.coords, self.todo, self.chunk_tiles)

    def done(self, batch: Batch) -> None:
        """Count a written batch's tiles (bookkeeping columns: n, read_node, score_nodes)."""
        self.nodes.add(batch)
        # A task that ran again after a failure may report units twice.
        k = min(int(batch["n"].sum()), self.n - self.finished)
        self.finished += k
        self.bar.update(k)
        if self.on_progress:
            self.on_progress(self.finished, self.n)

    def close(self, status: str, timings: dict[str, float]) -> StreamResult:
        """Record the status and timings in the store; the stream's result."""
        self.bar.close()
        seconds = time.perf_counter() - self.t0
        record: dict[str, Any] = {**timings, "total_s": seconds, "nodes": self.nodes.record}
        open_store(self.out, "r+").attrs.update({"status": status, "timings": record})
        return StreamResult(
            self.out, self.n, self.n_chunks, len(self.todo), seconds, timings, self.nodes.record
        )


def init_ray(address: str | None = None, num_cpus: int | None = None, log_to_driver: bool = False) -> None:
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": log_to_driver}
    if address:
        kwargs["address"] = address
    else:
        # A cluster is joined only when named (RAY_ADDRESS or `address`): "local" keeps Ray from
        # joining whatever cluster last ran here, which may be gone (its address file stays).
        kwargs.update(address="local", num_cpus=num_cpus, include_dashboard=False)
    ray.init(**kwargs)
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False  # the stream draws its own bar in tiles, not Ray's per-stage bars
    # ...and Ray Data would warn once per process that its bars are off, in every CLI run.
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    ctx.print_on_execution_start = False
    # Bookkeeping the jobs never read (stats summaries, object locations and memory polls for
    # metrics, issue detectors whose only finding was a high-memory warning about chunk pixels)
    # costs driver CPU that the replicas need on a small machine.
    ctx.enable_stats_summary_collection = False
    ctx.enable_get_object_locations_for_metrics = False
    ctx.memory_usage_poll_interval_s = None
    ctx.issue_detectors_config.detectors = []


def prepare_store(
    plan: Plan,
    out: str,
    chunk_tiles: int,
    *,
    store_pixels: bool,
    n_classes: int | None,
    extra_attrs: dict[str, Any] | None,
) -> tuple[list[int], int, int]:
    """Create (or reopen) the stream's store; return the chunks still to do, the number of chunks
    and the tiles already done (a resumed stream skips finished chunks).
    """
    grid = plan.grid
    n = len(grid)
    attrs = {
        "slide": plan.info,
        "slide_sha256": file_sha256(local_path(plan.slide_path)),
        "tiling": grid.settings(),
        "status": "running",
        **(extra_attrs or {}),
    }
    create_store(
        out,
        n_tiles=n,
        chunk_tiles=chunk_tiles,
        attrs=attrs,
        tile_px=grid.spec.tile_px if store_pixels else None,
        n_classes=n_classes,
        grid_shape=grid.shape if n_classes else None,
    )
    g = open_store(out, "r+")
    done = done_chunks(out)
    if not done.any():  # metadata is written once by the driver; workers only read it
        array(g, "coords")[:] = grid.coords
        array(g, "cells")[:] = grid.cells
        array(g, "tissue")[:] = grid.tissue
    todo = [int(i) for i in np.flatnonzero(~done)] if n else []
    already = done_tiles(done, n, chunk_tiles) if n else 0
    return todo, len(done), already


def _dataset(
    stage: ReadTiles,
    rows: list[dict[str, Any]],
    chunk_tiles: int,
    chunks_per_task: int | None,
    tiling_only: bool,
    read_cpus: float,
    score_tasks: int,
) -> Any:
    """The Ray Data pipeline over the work units still to do.

    Ray Data runs a task again when its worker or node dies (system failures, without limit; an
    error in the code is not retried); a rerun skips the units an earlier attempt finished.
    """
    import ray
    from ray.data import TaskPoolStrategy

    # Several chunks per read task: each task then runs long enough (about 256 tiles) that
    # Ray's per-task cost stays small, while resume and progress keep chunk granularity.
    per_task = chunks_per_task or max(1, min(256 // chunk_tiles, len(rows) // 8))
    n_blocks = -(-len(rows) // per_task)
    ds = ray.data.from_items(rows, override_num_blocks=n_blocks)
    if tiling_only:
        return ds.map_batches(stage, batch_size=per_task, num_cpus=read_cpus, batch_format="numpy")
    # One stage, a chunk at a time: read, score, write. Separate read, score and write stages
    # moved pixels through the object store and tripled the tasks to schedule (slower on small
    # machines; docs/performance.md). The CPU work is in the Serve replicas, so the tasks reserve
    # no CPU; the pool size bounds them. With any CPU reservation Ray Data admits one task until
    # its first resource refresh, which left one unit in flight for the first second of a slide.
    return ds.map_batches(
        stage,
        batch_size=1,
        num_cpus=0,
        compute=TaskPoolStrategy(size=max(1, min(score_tasks, n_blocks))),
        batch_format="numpy",
    )


def stream_slide(
    plan: Plan,
    out: str | os.PathLike[str],
    *,
    chunk_tiles: int = DEFAULTS.tiling.chunk_tiles,
    store_pixels: bool = True,
    read_cpus: float = DEFAULTS.tiling.read_cpus,  # a scoring stream's tasks mostly wait on Serve
    chunks_per_task: int | None = None,
    score: Callable[[Batch], Batch] | None = None,
    score_tasks: int = DEFAULTS.analysis.score_tasks,
    n_classes: int | None = None,
    extra_attrs: dict[str, Any] | None = None,
    progress: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> StreamResult:
    """Tile (and, given `score`, score) one slide into a Zarr group at `out`.

    `score` maps a batch of pixel chunks to one with extra columns (probs, fused, no pixels);
    it runs between reading and writing, in `score_tasks` concurrent tasks.
    """
    init_ray()
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
    if run.todo:
        stage = ReadTiles.of(plan, run.writer, score)
        ds = _dataset(stage, run.rows(), chunk_tiles, chunks_per_task, score is None, read_cpus, score_tasks)
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
            run.done(batch)
    return run.close("tiled" if score is None else "scored", {"prepare_s": run.prepare_s})
