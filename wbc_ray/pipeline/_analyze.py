"""Slide analysis: the slide streamed through a scoring stage (the Serve Ensemble), then the verdict."""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..config import APP_NAME, Settings
from ..domain import REASONS, DomainFile, QcThresholds, TileScreen
from ..ensemble import TileRates, slide_verdict
from ..scale import tile_scale
from ..slides import GridSpec
from ..store import array, open_store
from ._screening import ScreenSettings, build_screen, screening_of
from ._stream import Batch, plan_slide, stream_slide
from ._threads import stream_in_threads

_HANDLES: dict[str, Any] = {}


# What scores tiles: uint8 tiles (N, H, W, 3) and a fusion in; "probs" (N, M, K), "fused" (N,)
# and "nodes" ({model: where it ran}) out. The Serve Ensemble (`ServeScorer`) or the one-off
# path's in-process ensemble (`local.LocalEnsemble`).
Scorer = Callable[[np.ndarray, "str | None"], dict[str, Any]]


@dataclass(frozen=True)
class ServeScorer:
    """Tiles scored by the running Serve app's Ensemble (called inside the stream's Ray Data tasks:
    task workers are pooled across streams, so a new slide pays no actor start-up, and the Serve
    handle is cached per worker process).
    """

    app_name: str = APP_NAME

    def __call__(self, tiles: np.ndarray, fusion: str | None) -> dict[str, Any]:
        return _score(self.app_name, tiles, fusion)


def score_chunks(
    batch: Batch,
    scorer: Scorer = ServeScorer(),
    fusion: str | None = None,
    screen: TileScreen | None = None,
    n_models: int = 3,
) -> Batch:
    """Pixel chunks -> per-model probs and fused score, by `scorer`.

    With `screen`, each chunk is screened first: tiles quality control rejects are not sent to
    the models (their scores stay NaN), the others are sent as normalised, and each tile's QC
    code and domain distance go to the store beside its scores.
    """
    chunk_px = batch["pixels"].shape[1]
    probs, fused, nodes, codes, dists = [], [], [], [], []
    for j in range(len(batch["chunk"])):
        n = int(batch["n"][j])
        tiles = batch["pixels"][j][:n]
        p = np.full((chunk_px, n_models, 2), np.nan, np.float32)
        f = np.full(chunk_px, np.nan, np.float32)
        qc = np.zeros(chunk_px, np.uint8)
        dist = np.full(chunk_px, np.nan, np.float32)
        keep = np.ones(n, bool)
        if screen is not None:
            sc = screen(tiles)
            tiles, keep = sc.tiles, sc.usable
            qc[:n], dist[:n] = sc.qc, sc.domain
        where = np.flatnonzero(keep)
        res: dict[str, Any] = {}
        if len(where):
            res = scorer(tiles[where], fusion)
            p[where], f[where] = res["probs"], res["fused"]
        probs.append(p)
        fused.append(f)
        codes.append(qc)
        dists.append(dist)
        nodes.append(json.dumps(res.get("nodes", {}), sort_keys=True))
    # Pixels are dropped here: only scores travel on to the writers.
    return {
        "chunk": batch["chunk"],
        "n": batch["n"],
        "probs": np.stack(probs),
        "fused": np.stack(fused),
        "qc": np.stack(codes),
        "domain": np.stack(dists),
        "score_nodes": np.array(nodes),
    }


# An Ensemble replica that dies mid-request (node lost, process killed) is replaced by Serve; the
# work unit is sent again for about a minute before the stream fails.
RETRY_DELAYS_S = (0.5, 1, 2, 4, 8, 8, 8, 8, 8, 8, 8)


def _score(app_name: str, tiles: np.ndarray, fusion: str | None) -> dict[str, Any]:
    from ray.exceptions import RayActorError

    for delay in (*RETRY_DELAYS_S, None):
        try:
            return _score_once(app_name, tiles, fusion)
        except RayActorError:
            if delay is None:
                raise
            time.sleep(delay)
    raise AssertionError("unreachable")


def _score_once(app_name: str, tiles: np.ndarray, fusion: str | None) -> dict[str, Any]:
    from ray import serve
    from ray.exceptions import RayActorError
    from ray.serve.exceptions import DeploymentUnavailableError

    for attempt in (0, 1):
        try:
            handle = _HANDLES.get(app_name)
            if handle is None:
                handle = _HANDLES[app_name] = serve.get_deployment_handle("Ensemble", app_name=app_name)
            return handle.score.remote(tiles, fusion).result()  # type: ignore[no-any-return]
        except (DeploymentUnavailableError, RayActorError):
            # Task workers outlive Serve itself: after serve.shutdown() and a new start, their
            # cached handles and Serve client point at the dead controller (the client may have
            # been made for another application: a lab's release). Forget both (the client
            # through a private hook, when this Ray has it) and look up again, once.
            _HANDLES.clear()
            if attempt:
                raise
            import ray.serve.context as serve_context

            disconnect = getattr(serve_context, "_disconnect", None)
            if disconnect is not None:
                disconnect()
    raise AssertionError("unreachable")


_DEFAULTS = Settings()


def screen_settings(s: Settings, stain: str | None = None) -> ScreenSettings:
    """The screening part of the settings (`stain` overrides the settings' normalisation)."""
    return ScreenSettings(
        qc=QcThresholds.from_settings(s.qc) if s.qc.enabled else None,
        stain=stain or s.domain.stain,
        domain_check=s.domain.check,
        max_out_of_range=s.domain.max_out_of_range,
        min_usable_tiles=s.qc.min_usable_tiles,
        min_usable_share=s.qc.min_usable_share,
    )


@dataclass(frozen=True)
class AnalysisSettings:
    # Defaults: config.Settings' (the one place they are written); `from_settings` maps a loaded one.
    tau: float = _DEFAULTS.ensemble.tau
    confidence: float = _DEFAULTS.ensemble.confidence
    min_tissue: float = _DEFAULTS.tiling.min_tissue
    min_tissue_counted: float = _DEFAULTS.tiling.min_tissue_counted
    tile_threshold: float = _DEFAULTS.ensemble.tile_threshold
    fusion: str = _DEFAULTS.ensemble.fusion
    chunk_tiles: int = _DEFAULTS.analysis.chunk_tiles  # see configs/default.yaml `analysis`
    score_tasks: int = _DEFAULTS.analysis.score_tasks  # units in flight to the ensemble
    chunks_per_task: int | None = None  # chunks per Ray task; None: about 256 tiles
    tile_mpp: float | None = None  # None: the models' scale from their cards
    slide_mpp: float | None = None
    default_mpp: float | None = None
    screen: ScreenSettings = screen_settings(_DEFAULTS)

    @classmethod
    def from_settings(cls, s: Settings, **overrides: Any) -> AnalysisSettings:
        """The analysis part of the settings (overrides that are None are left out)."""
        base = {
            "tau": s.ensemble.tau,
            "confidence": s.ensemble.confidence,
            "min_tissue": s.tiling.min_tissue,
            "min_tissue_counted": s.tiling.min_tissue_counted,
            "tile_threshold": s.ensemble.tile_threshold,
            "fusion": s.ensemble.fusion,
            "chunk_tiles": s.analysis.chunk_tiles,
            "score_tasks": s.analysis.score_tasks,
            "default_mpp": s.slides.default_mpp,
            "screen": screen_settings(s),
        }
        return cls(**{**base, **{k: v for k, v in overrides.items() if v is not None}})


def work_unit(n_tiles: int, chunk_tiles: int, score_tasks: int) -> int:
    """Tiles per work unit (and Zarr chunk) of a scoring stream: `chunk_tiles`, or less for a small
    slide, so that it still has `score_tasks` units in flight. Units shrink in steps of 32 (a
    replica's compute step, `models.STEP_TILES`) down to 32 tiles. The unit follows from
    the slide and the settings alone, so a resumed stream finds the same layout.
    """
    per_task = -(-n_tiles // max(1, score_tasks))
    return min(chunk_tiles, max(32, -(-per_task // 32) * 32))


def analyze_slide(
    slide_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    cards: list[dict[str, Any]],
    settings: AnalysisSettings = AnalysisSettings(),
    *,
    app_name: str = APP_NAME,
    progress: bool = True,
    extra_attrs: dict[str, Any] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    rates: TileRates | None = None,
    domain: DomainFile | None = None,
    scorer: Scorer | None = None,
    stream: str = "ray",
    score_threads: int | None = None,
) -> dict[str, Any]:
    """Tile, screen, score and aggregate one slide into the Zarr group `out`; return the result
    record.

    Scored by `scorer` (default: the Serve app `app_name`'s Ensemble); the slide streamed through
    Ray Data (`stream="ray"`: reads spread over a cluster's nodes) or read by threads in this
    process (`"threads"`: one machine, no Ray Data; `score_threads` units scored at once, default
    the settings' `score_tasks`; 1 for a scorer that runs the networks here on every core).

    `rates` (from `wbc-ray calibrate`) turn the share of malignant tile calls into an adjusted
    estimate of the malignant fraction; without them the raw share is reported. `domain` (the
    release's domain file) holds the domain check and the stain references; without it tiles are
    still quality-controlled, but not checked against the training images' domain.
    """
    t0 = time.perf_counter()
    tile_mpp, tile_px = tile_scale(cards)
    spec = GridSpec(tile_px=tile_px, mpp=settings.tile_mpp or tile_mpp, min_tissue=settings.min_tissue)
    plan = plan_slide(slide_path, spec, slide_mpp=settings.slide_mpp, default_mpp=settings.default_mpp)
    # Each model as the result names it; an adapted one (`wbc-ray adapt`) with its lineage: the
    # parent release and model, the lab data's hash, when.
    models = [
        {
            "name": c["name"],
            "version": c["version"],
            "architecture": c["architecture"],
            **({"adapted": c["training"]["adapted"]} if (c.get("training") or {}).get("adapted") else {}),
        }
        for c in cards
    ]
    unit = work_unit(len(plan.grid), settings.chunk_tiles, settings.score_tasks)
    t_plan = time.perf_counter() - t0

    attrs = {
        "models": models,
        "fusion": settings.fusion,
        "analysis": asdict(settings),
        "qc_reasons": list(REASONS),
        **(extra_attrs or {}),
    }
    screen = build_screen(settings.screen, domain)
    score = functools.partial(
        score_chunks,
        scorer=scorer or ServeScorer(app_name),
        fusion=settings.fusion,
        screen=screen,
        n_models=len(cards),
    )
    common: dict[str, Any] = {
        "chunk_tiles": unit,
        "store_pixels": False,
        "score": score,
        "n_classes": 2,
        "extra_attrs": attrs,
        "progress": progress,
        "on_progress": on_progress,
    }
    if stream == "ray":
        streamed = stream_slide(
            plan, out, chunks_per_task=settings.chunks_per_task, score_tasks=settings.score_tasks, **common
        )
    elif stream == "threads":
        streamed = stream_in_threads(plan, out, score_threads=score_threads or settings.score_tasks, **common)
    else:
        raise ValueError(f"stream must be 'ray' or 'threads', got {stream!r}")
    t_streamed = time.perf_counter() - t0
    g = open_store(out, "r+")
    if "thumbnail" not in g:
        thumb = plan.thumbnail
        g.create_array("thumbnail", shape=thumb.shape, chunks=thumb.shape, dtype="uint8")
        array(g, "thumbnail")[:] = thumb
    fused = np.asarray(array(g, "fused")[:])
    tissue = np.asarray(array(g, "tissue")[:])
    cells = np.asarray(array(g, "cells")[:])
    screening, screen_record = screening_of(
        settings.screen, screen, np.asarray(array(g, "qc")[:]), np.asarray(array(g, "domain")[:])
    )
    if len(fused):
        heat = np.full(plan.grid.shape, np.nan, np.float32)
        heat[cells[:, 0], cells[:, 1]] = fused
        array(g, "heatmap")[:] = heat
    counted = max(settings.min_tissue, settings.min_tissue_counted)
    verdict = slide_verdict(
        fused >= settings.tile_threshold,
        tissue,
        tau=settings.tau,
        confidence=settings.confidence,
        min_tissue=counted,
        rates=rates,
        screen=screening,
    )
    seconds = time.perf_counter() - t0
    result = {
        "slide": os.fspath(slide_path),
        "slide_sha256": g.attrs["slide_sha256"],
        **verdict.to_dict(),
        "fusion": settings.fusion,
        "tile_threshold": settings.tile_threshold,
        "min_tissue_counted": counted,
        "tile_px": tile_px,
        "tile_mpp": spec.mpp,
        "models": models,
        **screen_record,
        "timings": {
            "total_s": round(seconds, 3),
            "tiles_per_s": round(len(fused) / seconds, 2) if seconds else 0,
            "chunks_run": streamed.chunks_run,
            "chunks": streamed.n_chunks,
            "nodes": streamed.nodes,
            # Where the time went (plan: tissue mask and grid; the stages' busy seconds where the
            # slide ran in threads; verdict: heatmap and aggregation), for docs/performance.md.
            "plan_s": round(t_plan, 3),
            **{k: round(v, 3) for k, v in streamed.timings.items()},
            "verdict_s": round(seconds - t_streamed, 3),
        },
    }
    g.attrs.update(
        {"status": "done", "result": result, "progress": {"done": len(fused), "total": len(fused)}}
    )
    return result
