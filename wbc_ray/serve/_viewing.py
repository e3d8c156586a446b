"""The Ingress' routes for looking at a finished job: Deep Zoom of the slide and of the calls,
the tiles and the review queue, reviewers' decisions and sign-off, the reviewed tiles as a
labelled set, and the review workspace's page. A mixin of `Ingress` (Serve registers the routes
of every class in its MRO); what it uses of the Ingress is declared below.
"""
# No `from __future__ import annotations` here: FastAPI must resolve the route annotations
# at run time inside the Serve replica.

import asyncio
import io
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from fastapi import Depends, HTTPException, Query, Request
from fastapi import Path as Path_
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.security import HTTPAuthorizationCredentials

from ..slides import SlideError, open_slide
from ._api import api, bearer, binary_response, error_responses
from ._db import Principal
from ._reviews import ReviewBody, SignoffBody, export_reviewed, review_summary
from ._viewer import OSD_VERSION, VIEWER_DIR, viewer_ready

if TYPE_CHECKING:
    from ..pipeline import AnalysisSettings
    from ._audit import AuditLog
    from ._db import ServiceDB
    from ._jobs import JobPaths

T = TypeVar("T")

VIEWER_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".png": "image/png",
    ".txt": "text/plain",
}

# Deep Zoom: slides kept open for viewers, and the encoded tiles kept (bytes).
DZ_OPEN_SLIDES = 4
DZ_CACHE_BYTES = 64 * 2**20


class ByteCache:
    """A thread-safe LRU of encoded tiles, bounded in bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self._items: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> bytes | None:
        """The cached bytes (now the most recent), or None."""
        with self._lock:
            body = self._items.get(key)
            if body is not None:
                self._items.move_to_end(key)
            return body

    def put(self, key: tuple[Any, ...], body: bytes) -> None:
        """Keep `body`, dropping the least recently used beyond the limit."""
        with self._lock:
            if key in self._items:
                return
            self._items[key] = body
            self.size += len(body)
            while self.size > self.limit and self._items:
                _, old = self._items.popitem(last=False)
                self.size -= len(old)


class ViewingRoutes:
    """Deep Zoom, review and the review workspace, over the Ingress' jobs and accounts."""

    if TYPE_CHECKING:  # the Ingress' own, which these routes use
        db: ServiceDB
        paths: JobPaths
        audit: AuditLog
        results_dir: str
        settings: AnalysisSettings

        def _who(self, cred: HTTPAuthorizationCredentials | None, need: str = "read") -> Principal: ...
        def _job(self, job_id: str, who: Principal) -> dict[str, Any]: ...
        def _done(self, job_id: str, who: Principal) -> tuple[dict[str, Any], Path]: ...
        def _log(self, who: Principal, action: str, **detail: Any) -> None: ...
        async def _heavy(self, fn: Callable[..., T], *args: Any) -> T: ...

    def _init_viewing(self) -> None:
        # Deep Zoom: open slides and overlays of the jobs being viewed, and encoded tiles.
        self._dz_lock = threading.Lock()
        self._dz_slides: OrderedDict[str, tuple[Any, Any, np.ndarray]] = OrderedDict()
        self._dz_kept: dict[str, OrderedDict[str, Any]] = {"overlay": OrderedDict(), "tiles": OrderedDict()}
        self._dz_cache = ByteCache(DZ_CACHE_BYTES)

    # ---- deep zoom: the slide and the calls over it, for the viewer ---------------------------
    @api.get(
        "/jobs/{job_id}/{layer}.dzi",
        summary="Deep Zoom descriptor of a finished job's slide, or of its call overlay",
        response_class=Response,
        responses={
            200: {"content": {"application/xml": {"schema": {"type": "string"}}}, "description": "DZI"},
            **error_responses(401, 404, 409, 410),
        },
    )
    async def deepzoom_dzi(
        self,
        job_id: str,
        layer: str = Path_(..., pattern="^(slide|overlay)$", description="slide or overlay"),
        cred: HTTPAuthorizationCredentials | None = Depends(bearer),
    ) -> Response:
        """`slide`: JPEG tiles of the slide; `overlay`: PNG tiles (transparent) of the calls on the
        same grid: each scored tile translucent in its score's colour, malignant calls outlined,
        quality-control rejects grey, tiles out of the domain check's range outlined magenta.
        """
        who = self._who(cred)
        job, _ = self._done(job_id, who)
        grid = (await self._heavy(self._deepzoom_slide, job))[1]
        return Response(grid.dzi("jpeg" if layer == "slide" else "png"), media_type="application/xml")

    @api.get(
        "/jobs/{job_id}/{layer}_files/{level}/{tile}",
        summary="One Deep Zoom tile of a finished job's slide (JPEG) or call overlay (PNG)",
        response_class=Response,
        responses={
            200: {
                "content": {
                    m: {"schema": {"type": "string", "format": "binary"}} for m in ("image/jpeg", "image/png")
                },
                "description": "the tile: JPEG for the slide, PNG for the overlay",
            },
            304: {"description": "not modified (If-None-Match matched the tile's ETag)"},
            **error_responses(401, 404, 409, 410),
        },
    )
    async def deepzoom_tile(
        self,
        job_id: str,
        level: int,
        request: Request,
        layer: str = Path_(..., pattern="^(slide|overlay)$"),
        tile: str = Path_(
            ..., pattern=r"^[0-9]{1,6}_[0-9]{1,6}\.(jpeg|png)$", description="COL_ROW.jpeg|png"
        ),
        cred: HTTPAuthorizationCredentials | None = Depends(bearer),
    ) -> Response:
        """Tiles are made off the event loop, kept in a bounded cache, and carry an ETag (a
        repeated request with If-None-Match is a 304).
        """
        who = self._who(cred)
        job, z = self._done(job_id, who)
        col, row = (int(v) for v in tile.split(".")[0].split("_"))
        etag = f'"{job_id}-{layer}-{level}-{col}-{row}"'
        media = "image/jpeg" if layer == "slide" else "image/png"
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"ETag": etag})
        key = (job_id, layer, level, col, row)
        body = self._dz_cache.get(key)
        if body is None:
            try:
                body = await self._heavy(self._deepzoom_tile, job, z, layer, level, col, row)
            except SlideError as exc:
                raise HTTPException(404, exc.reason) from None
            self._dz_cache.put(key, body)
        return Response(
            body, media_type=media, headers={"ETag": etag, "Cache-Control": "private, max-age=86400"}
        )

    def _forget_deepzoom(self, job_id: str) -> None:
        """Drop a deleted job's open slide and overlay (its cached tiles age out). Slides are not
        closed here but released: a tile read in another thread may still hold one, and the last
        reference closes it.
        """
        with self._dz_lock:
            self._dz_slides.pop(job_id, None)
            for kept in self._dz_kept.values():
                kept.pop(job_id, None)

    def _deepzoom_slide(self, job: dict[str, Any]) -> tuple[Any, Any, np.ndarray]:
        """(open slide, its Deep Zoom grid, its thumbnail) of a job, kept open for the next tiles."""
        from ..slides import deepzoom_grid

        with self._dz_lock:
            held = self._dz_slides.get(job["job_id"])
        if held is not None:
            return held
        try:
            slide = open_slide(job["path"], default_mpp=self.settings.default_mpp)
        except SlideError as exc:
            raise HTTPException(410, f"the job's slide can no longer be read: {exc.reason}") from None
        held = (slide, deepzoom_grid(slide), slide.thumbnail(2048))
        with self._dz_lock:
            self._dz_slides[job["job_id"]] = held
            while len(self._dz_slides) > DZ_OPEN_SLIDES:
                self._dz_slides.popitem(last=False)  # released, closed by its last holder
        return held

    def _kept(self, kind: str, job_id: str, make: Callable[[], T]) -> T:
        """A job's `kind` of loaded results (its call overlay, its tile table), kept for the next
        requests of its viewers (the last few jobs').
        """
        with self._dz_lock:
            held = self._dz_kept[kind].get(job_id)
        if held is None:
            held = make()
            with self._dz_lock:
                kept = self._dz_kept[kind]
                kept[job_id] = held
                while len(kept) > DZ_OPEN_SLIDES:
                    kept.popitem(last=False)
        return held  # type: ignore[no-any-return]

    def _deepzoom_tile(
        self, job: dict[str, Any], z: Path, layer: str, level: int, col: int, row: int
    ) -> bytes:
        from PIL import Image

        from ..slides import read_deepzoom_tile
        from ..store import CallOverlay

        slide, grid, thumb = self._deepzoom_slide(job)
        buf = io.BytesIO()
        if layer == "slide":
            px = read_deepzoom_tile(slide, grid, level, col, row, thumb)
            Image.fromarray(px).save(buf, format="JPEG", quality=85)
            return buf.getvalue()
        overlay = self._kept("overlay", job["job_id"], lambda: CallOverlay.load(z))
        x0, y0, x1, y1 = grid.tile_box(level, col, row)
        s = grid.scale(level)
        rgba = overlay.render((x0 * s, y0 * s, x1 * s, y1 * s), (x1 - x0, y1 - y0))
        Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
        return buf.getvalue()

    # ---- review: tiles, the review queue, decisions, sign-off, the reviewed tiles as data ---
    def _table(self, job_id: str, z: Path) -> Any:
        from ..store import TileTable

        return self._kept("tiles", job_id, lambda: TileTable.load(z))

    async def _tile_table(self, job_id: str, who: Principal) -> tuple[dict[str, Any], Any]:
        job, z = self._done(job_id, who)
        return job, await self._heavy(self._table, job_id, z)

    @api.get(
        "/jobs/{job_id}/tiles/{tile}",
        summary="One tile: where it is, each model's probability, the fused score and call, "
        "screening, and its review",
        responses=error_responses(401, 404, 409),
    )
    async def tile_record(
        self, job_id: str, tile: int, cred: HTTPAuthorizationCredentials | None = Depends(bearer)
    ) -> dict[str, Any]:
        who = self._who(cred)
        _, table = await self._tile_table(job_id, who)
        if not 0 <= tile < len(table):
            raise HTTPException(404, f"tile {tile} out of range 0..{len(table) - 1}")
        return {**table.record(tile), "review": self.db.reviews(job_id).get(tile)}

    @api.get(
        "/jobs/{job_id}/tiles",
        summary="The tile at a point of the slide (level-0 pixels), as /jobs/{job_id}/tiles/{tile}",
        responses=error_responses(401, 404, 409),
    )
    async def tile_at(
        self,
        job_id: str,
        x: float = Query(..., ge=0, le=1e7, description="level-0 x"),
        y: float = Query(..., ge=0, le=1e7, description="level-0 y"),
        cred: HTTPAuthorizationCredentials | None = Depends(bearer),
    ) -> dict[str, Any]:
        who = self._who(cred)
        _, table = await self._tile_table(job_id, who)
        tile = table.at(x, y)
        if tile is None:
            raise HTTPException(404, f"no tile at ({x:.0f}, {y:.0f}): no tissue was tiled there")
        return {**table.record(tile), "review": self.db.reviews(job_id).get(tile)}

    @api.get(
        "/jobs/{job_id}/queue",
        summary="The review queue: the most suspicious calls, then the most uncertain, then the "
        "tiles out of the domain check's range",
        responses=error_responses(401, 404, 409),
    )
    async def review_queue(
        self,
        job_id: str,
        per_group: int = Query(25, ge=1, le=1000, description="at most this many tiles per group"),
        cred: HTTPAuthorizationCredentials | None = Depends(bearer),
    ) -> dict[str, Any]:
        who = self._who(cred)
        _, table = await self._tile_table(job_id, who)
        items = await self._heavy(table.queue, per_group)
        reviews = self.db.reviews(job_id)
        return {
            "tile_threshold": table.threshold,
            "items": [{**it, "review": reviews.get(it["tile"])} for it in items],
        }

    @api.put(
        "/jobs/{job_id}/tiles/{tile}/review",
        summary="Agree with a tile's call or reclassify it (benign, malignant, not assessable); "
        "revisable, every version kept",
        responses=error_responses(400, 401, 403, 404, 409, 422),
    )
    async def review_tile(
        self,
        job_id: str,
        tile: int,
        body: ReviewBody,
        cred: HTTPAuthorizationCredentials | None = Depends(bearer),
    ) -> dict[str, Any]:
        who = self._who(cred, "submit")
        _, table = await self._tile_table(job_id, who)
        if not 0 <= tile < len(table):
            raise HTTPException(404, f"tile {tile} out of range 0..{len(table) - 1}")
        reason = (body.reason or "").strip() or None
        review = self.db.set_review(job_id, tile, body.decision, table.call(tile), who.user, reason)
        self._log(who, "review", job_id=job_id, tile=tile, decision=body.decision)
        summary = review_summary(self.db.reviews(job_id), self.db.signoff(job_id))
        return {"tile": tile, "review": review, "summary": summary}

    @api.get(
        "/jobs/{job_id}/reviews",
        summary="The job's reviewed tiles, its sign-off, and every decision ever made on it",
        responses=error_responses(401, 404, 409),
    )
    async def job_reviews(
        self, job_id: str, cred: HTTPAuthorizationCredentials | None = Depends(bearer)
    ) -> dict[str, Any]:
        who = self._who(cred)
        self._done(job_id, who)
        reviews = self.db.reviews(job_id)
        return {
            "reviews": [{"tile": t, **r} for t, r in reviews.items()],
            "summary": review_summary(reviews, self.db.signoff(job_id)),
            "history": self.db.review_history(job_id),
        }

    @api.put(
        "/jobs/{job_id}/signoff",
        summary="Sign the slide off with the reviewer's own verdict, beside the models'",
        responses=error_responses(400, 401, 403, 404, 409, 422),
    )
    async def signoff(
        self, job_id: str, body: SignoffBody, cred: HTTPAuthorizationCredentials | None = Depends(bearer)
    ) -> dict[str, Any]:
        who = self._who(cred, "submit")
        self._done(job_id, who)
        note = (body.note or "").strip() or None
        signed = self.db.set_signoff(job_id, body.verdict, note, who.user)
        self._log(who, "signoff", job_id=job_id, verdict=body.verdict)
        return {"job_id": job_id, "signoff": signed}

    @api.get(
        "/reviews/export.zip",
        summary="The reviewed tiles as a labelled image set (images at the models' scale and a "
        "manifest that `wbc-ray adapt` and `wbc-ray train` take)",
        response_class=Response,
        responses={**binary_response("application/zip"), **error_responses(401, 404)},
    )
    async def export_reviews(
        self,
        job_id: list[str] | None = Query(None, description="these jobs (default: all yours)"),
        cred: HTTPAuthorizationCredentials | None = Depends(bearer),
    ) -> Response:
        """Tiles judged not assessable are left out; each image's scale is in the manifest's `mpp`."""
        who = self._who(cred)
        if job_id:
            jobs = [self._job(j, who) for j in job_id]
        else:
            jobs = self.db.jobs(None if who.admin else who.user)
        body, counts = await self._heavy(self._export_zip, jobs)
        self._log(who, "export reviews", jobs=len(jobs), tiles=counts["tiles"])
        headers = {
            "Content-Disposition": 'attachment; filename="wbc-ray-reviews.zip"',
            "X-Tiles": str(counts["tiles"]),
        }
        return Response(body, media_type="application/zip", headers=headers)

    def _export_zip(self, jobs: list[dict[str, Any]]) -> tuple[bytes, dict[str, Any]]:
        import tempfile
        import zipfile

        with tempfile.TemporaryDirectory(dir=self.results_dir) as tmp:
            counts = export_reviewed(self.db, self.paths, jobs, Path(tmp), self.settings.default_mpp)
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:  # PNGs: deflate gains nothing
                for f in sorted(Path(tmp).rglob("*")):
                    if f.is_file():
                        zf.write(f, f.relative_to(tmp).as_posix())
        return buf.getvalue(), counts

    # ---- the review workspace's page ----------------------------------------------------------
    @api.get("/viewer", response_class=HTMLResponse, summary="The review workspace (open with ?job=ID)")
    async def viewer_page(self) -> HTMLResponse:
        if not viewer_ready():
            return HTMLResponse(
                "<h1>The viewer is not installed</h1><p>OpenSeadragon "
                f"{OSD_VERSION} is fetched by the project's setup: run <code>make setup</code>, "
                "then reload.</p>",
                status_code=503,
            )
        html = await asyncio.to_thread((VIEWER_DIR / "index.html").read_text)
        return HTMLResponse(html.replace("{{OSD_VERSION}}", OSD_VERSION))

    @api.get(
        "/viewer/{name:path}",
        summary="The review workspace's scripts, styles, and OpenSeadragon with its licence",
        response_class=Response,
        responses=error_responses(404),
    )
    async def viewer_file(self, name: str) -> Response:
        root = VIEWER_DIR.resolve()
        path = (root / name).resolve()
        if not path.is_relative_to(root) or not path.is_file() or path.suffix not in VIEWER_TYPES:
            raise HTTPException(404, f"no viewer file {name[:80]!r}")
        return FileResponse(
            path, media_type=VIEWER_TYPES[path.suffix], headers={"Cache-Control": "public, max-age=3600"}
        )
