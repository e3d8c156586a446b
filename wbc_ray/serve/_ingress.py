"""FastAPI ingress: accounts and roles, a durable bounded job queue, results, exports, patches."""
# No `from __future__ import annotations` here: FastAPI must resolve the route annotations
# at run time inside the Serve replica.

import asyncio
import contextlib
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from fastapi import Depends, File, HTTPException, Query, Request, UploadFile
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
from ray import serve

from ..config import APP_NAME, MAIN_RELEASE, RELEASE_NAME, ServiceSettings
from ..ensemble import VERDICT_MEANING, Fusion
from ..errors import InvalidInput
from ..manifest import CLASSES
from ..pipeline import AnalysisSettings
from ..slides import SlideError, open_slide
from ._api import api, bearer, binary_response, error_responses
from ._audit import AuditLog
from ._db import ACTIVE, LOCAL, Principal, ServiceDB
from ._jobs import (
    EXPORTS,
    build_export_files,
    export_name,
    job_paths,
    new_job_id,
    progress_of,
    run_job_task,
)
from ._queue import Runner, finish_times
from ._requests import (
    PathSubmission,
    allowed_path,
    check_name,
    check_release,
    decode_patch,
    release_app_name,
    score_response,
)
from ._reviews import review_summary
from ._schema import service_openapi
from ._viewing import ViewingRoutes

T = TypeVar("T")
UPLOAD_CHUNK = 1 << 20
JOB_RETRIES = 3


def _write_atomic(path: Path, body: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(body)
    os.replace(tmp, path)


def _drop_older(path: Path, what: str) -> None:
    """Remove the earlier review revisions' files of one export (the current one is `path`)."""
    stem, _, ext = EXPORTS[what][0].partition(".")
    for old in path.parent.glob(f"{stem}.r*.{ext}*"):
        if old.name not in (path.name, path.name + ".gz"):
            old.unlink(missing_ok=True)


def _slide_info(path: str, default_mpp: float | None) -> dict[str, Any]:
    """A slide's details (opening it parses the file: run in a thread, off the event loop)."""
    with open_slide(path, default_mpp=default_mpp) as s:
        return s.info.to_dict()


RESULT_DOC = (
    "The slide's verdict and the figures behind it. `verdict` is one of: "
    + "; ".join(f"`{k}`: {v}" for k, v in VERDICT_MEANING.items())
    + "\n\n`n_tiles` counts the tissue tiles that passed quality control; `n_rejected` those it "
    "rejected (by reason in `qc.rejected`), which are not scored; `n_out_of_range` and "
    "`out_of_range_share` those the domain check finds unlike the training images "
    "(`domain.threshold`, `domain.max_out_of_range`); `stain` the normalisation applied."
)


def _slide_error(exc: SlideError, shown: str) -> HTTPException:
    # The message names what the client sent, never our internal storage path.
    return HTTPException(422, f"{shown}: {exc.reason.replace(exc.path, shown)}")


# The GeoJSON download is JSON (a FeatureCollection), declared as such, not as opaque bytes.
GEOJSON_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "a FeatureCollection: one detection per tile (QuPath reads its classes)",
        "content": {
            "application/geo+json": {
                "schema": {
                    "type": "object",
                    "required": ["type", "features"],
                    "properties": {
                        "type": {"type": "string", "enum": ["FeatureCollection"]},
                        "features": {"type": "array", "items": {"type": "object"}},
                    },
                }
            }
        },
    }
}


@dataclass(frozen=True)
class IngressSettings:
    """What the Ingress runs with, typed end to end: built once by `app.build_app` from the Serve
    config's args (`AppArgs`) and the settings file; no default is written here.
    """

    results_dir: str
    slide_roots: list[str]  # folders path submissions may read (the uploads folder is added)
    max_upload_mb: float
    analysis: AnalysisSettings  # what each job's analysis runs with, before its own choices
    service: ServiceSettings
    app_name: str


# CPUs a job's driver task holds: it only waits on its stream's tasks, which hold their own.
JOB_CPUS = 0.05


@serve.deployment(max_ongoing_requests=64)
@serve.ingress(api)
class Ingress(ViewingRoutes):
    """The REST service: accounts, the durable bounded job queue, results and exports, patches."""

    def __init__(self, ensemble: Any, settings: IngressSettings) -> None:
        svc = settings.service
        results_dir = settings.results_dir
        self.ensemble = ensemble
        self.results_dir = str(Path(results_dir).resolve())
        self.paths = job_paths(self.results_dir)
        self.db = ServiceDB(Path(self.results_dir) / "service.db")
        self.audit = AuditLog(Path(self.results_dir) / "audit.log" if svc.audit_log else None)
        self.auth = svc.auth
        self.max_queued = svc.max_queued
        self.max_per_user = svc.max_queued_per_user
        self.min_free = svc.min_free_gb * 1e9
        self.max_score_files = svc.max_score_files
        self.max_score_bytes = int(svc.max_score_mb * 2**20)
        # Submissions admitted but not yet in the database (their slide is being opened, their
        # upload written), per user: counted with the queue, so concurrent ones cannot overfill it.
        self._pending: dict[str, int] = {}
        self.roots = [Path(r).resolve() for r in settings.slide_roots] + [self.paths.uploads.resolve()]
        self.max_upload = int(settings.max_upload_mb * 2**20)
        self.settings = settings.analysis
        self.app_name = settings.app_name
        self._cards: list[dict[str, Any]] | None = None
        self._schema: dict[str, Any] | None = None
        self._domain: tuple[Any] | None = None  # (the release's DomainFile or None,) once asked
        self._heavy_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="wbc-heavy")
        self._export_locks: dict[tuple[str, str], asyncio.Lock] = {}
        # Labs' releases served beside the main one, each its own application (`service.releases`).
        self.releases = sorted(svc.releases)
        self._release_handles: dict[str, Any] = {}
        self._init_viewing()
        self.runner = Runner(self.db, self._launch, svc.max_running)
        self.runner.start()

    def __del__(self) -> None:
        self.runner.stop()

    async def _heavy(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on the Ingress' own two threads for heavy work (tile reads, PNG encoding), so
        it never queues ahead of the light calls (status, progress) on the default executor.
        """
        return await asyncio.get_running_loop().run_in_executor(self._heavy_pool, fn, *args)

    async def cards(self) -> list[dict[str, Any]]:
        if self._cards is None:
            self._cards = await self.ensemble.models.remote()
        return self._cards

    # ---- who is asking ----------------------------------------------------------------------
    def _who(self, cred: HTTPAuthorizationCredentials | None, need: str = "read") -> Principal:
        if not self.auth:
            return LOCAL
        if cred is None:
            raise HTTPException(
                401, "this service needs a bearer token", headers={"WWW-Authenticate": "Bearer"}
            )
        who = self.db.principal(cred.credentials)
        if who is None:
            raise HTTPException(401, "unknown or revoked token", headers={"WWW-Authenticate": "Bearer"})
        if need == "submit" and who.role not in ("submit", "admin"):
            raise HTTPException(403, f"role {who.role!r} may not submit slides")
        return who

    def _log(self, who: Principal, action: str, **detail: Any) -> None:
        self.audit.write(who.user, who.role, action, token_id=who.token_id, **detail)

    def _job(self, job_id: str, who: Principal) -> dict[str, Any]:
        """The job if it exists and `who` may see it; another user's job is a 404, as if absent."""
        try:
            job = self.db.job(job_id)
        except KeyError:
            raise HTTPException(404, f"no job {job_id[:40]!r}") from None
        if not who.admin and job["user"] != who.user:
            raise HTTPException(404, f"no job {job_id[:40]!r}")
        return job

    # ---- the queue --------------------------------------------------------------------------
    @contextlib.contextmanager
    def _reserved(self, who: Principal) -> Iterator[None]:
        """A place in the queue held from admission until the job is in the database (or the
        submission failed): checks and holds with no await between, so concurrent submissions
        never pass `max_queued` together.
        """
        self._admit(who)
        self._pending[who.user] = self._pending.get(who.user, 0) + 1
        try:
            yield
        finally:
            self._pending[who.user] -= 1
            if not self._pending[who.user]:
                del self._pending[who.user]

    def _admit(self, who: Principal) -> None:
        """429 with Retry-After when this user's share of the queue, or the queue, is full."""
        mine = self.db.count(ACTIVE, who.user) + self._pending.get(who.user, 0)
        if self.max_per_user is not None and mine >= int(self.max_per_user):
            raise HTTPException(
                429,
                f"{who.user} has {self.max_per_user} slides queued or running, the most one user may have",
                headers={"Retry-After": str(self._retry_after(who.user))},
            )
        queued = self.db.count(("queued",)) + sum(self._pending.values())
        if queued >= self.max_queued:
            raise HTTPException(
                429,
                f"the queue is full ({queued} slides waiting)",
                headers={"Retry-After": str(self._retry_after())},
            )

    def _retry_after(self, user: str | None = None) -> int:
        """Seconds until a place is likely free: the first active job (of `user`, where the limit is
        theirs) to end, from the queue's order and recent jobs' durations.
        """
        active = self.db.active()
        running = [j["started_at"] or time.time() for j in active if j["status"] == "running"]
        queued, slots = len(active) - len(running), self.runner.max_running
        ends = finish_times(running, queued, slots, self.db.recent_durations(), time.time())
        mine = [t for j, t in zip(active, ends, strict=True) if user is None or j["user"] == user]
        return int(min(3600, max(1, math.ceil(min(mine, default=1.0)))))

    def _ensemble_of(self, release: str | None) -> tuple[Any, str]:
        """(the Ensemble handle, its application's name) of a release (None: the main one)."""
        if release is None:
            return self.ensemble, self.app_name
        app = release_app_name(self.app_name, release)
        if release not in self._release_handles:
            self._release_handles[release] = serve.get_deployment_handle("Ensemble", app_name=app)
        return self._release_handles[release], app

    def _launch(self, job: dict[str, Any]) -> Any:
        """Start a claimed job as a Ray task (called by the runner thread)."""
        import ray

        from ..lifecycle import rates_for

        settings = self.settings
        if job["fusion"]:
            settings = replace(settings, fusion=job["fusion"])
        if stain := (job.get("info") or {}).get("stain"):
            settings = replace(settings, screen=replace(settings.screen, stain=stain))
        # The job's release: its models, their tile rates and its own domain statistics (an
        # adapted release's are refitted on the lab's images).
        ensemble, app_name = self._ensemble_of((job.get("info") or {}).get("release"))
        cards = ensemble.models.remote().result()
        rates = rates_for(ensemble.tile_rates.remote().result(), settings.fusion)
        domain = ensemble.domain.remote().result()
        # The job's driver is a task: if its node is lost it runs again elsewhere and resumes from
        # the store (finished units are skipped), with the same results.
        task = ray.remote(num_cpus=JOB_CPUS, max_retries=JOB_RETRIES)(run_job_task)
        store = str(self.paths.store(job["job_id"]))
        return task.remote(store, job["job_id"], job["path"], cards, settings, app_name, rates, domain)

    async def _submit(
        self,
        who: Principal,
        job_id: str,
        path: str,
        shown: str,
        fusion: str | None,
        upload: bool,
        stain: str | None = None,
        release: str | None = None,
    ) -> dict[str, Any]:
        try:
            info = await asyncio.to_thread(_slide_info, path, self.settings.default_mpp)
        except SlideError as exc:
            raise _slide_error(exc, shown) from None
        keep = {k: info[k] for k in ("vendor", "dimensions", "mpp")}
        if stain:
            keep["stain"] = stain
        if release:
            keep["release"] = release
        self.db.add_job(job_id, who.user, shown, path, upload, fusion, keep)
        self._log(who, "submit", job_id=job_id, slide=shown)
        return {"job_id": job_id, "status": "queued", "status_url": f"/jobs/{job_id}"}

    @api.post(
        "/jobs",
        status_code=202,
        summary="Submit a slide by path on the server's slide folders",
        responses=error_responses(400, 401, 403, 404, 422, 429),
    )
    async def submit_path(
        self, body: PathSubmission, cred: HTTPAuthorizationCredentials | None = Depends(bearer)
    ) -> dict[str, Any]:
        who = self._who(cred, "submit")
        release = check_release(body.release, self.releases)
        real = allowed_path(body.path, self.roots)
        with self._reserved(who):
            return await self._submit(
                who,
                new_job_id(),
                str(real),
                body.path,
                body.fusion,
                upload=False,
                stain=body.stain,
                release=release,
            )

    @api.post(
        "/jobs/upload",
        status_code=202,
        summary="Submit a slide by upload",
        responses=error_responses(400, 401, 403, 413, 422, 429, 507),
    )
    async def submit_upload(
        self,
        request: Request,
        file: UploadFile = File(...),
        fusion: Fusion | None = Query(
            None, description="how the models' scores are fused (default: the service's)"
        ),
        stain: str | None = Query(
            None,
            pattern="^(release|none|macenko|reinhard)$",
            description="stain normalisation for this analysis (default: the service's domain.stain)",
        ),
        release: str | None = Query(
            None,
            max_length=32,
            pattern=f"^{RELEASE_NAME.pattern}$",
            description="the release to analyse with (GET /models lists the service's; default: main)",
        ),
        cred: HTTPAuthorizationCredentials | None = Depends(bearer),
    ) -> dict[str, Any]:
        who = self._who(cred, "submit")
        name = check_name(file.filename or "")
        chosen = check_release(release, self.releases)
        with self._reserved(who):
            return await self._receive(who, request, file, name, fusion, stain, chosen)

    async def _receive(
        self,
        who: Principal,
        request: Request,
        file: UploadFile,
        name: str,
        fusion: str | None,
        stain: str | None,
        release: str | None = None,
    ) -> dict[str, Any]:
        """Write an upload to the uploads folder (refused, and nothing kept, over a limit), then
        submit it.
        """
        job_id = new_job_id()
        suffix = "".join(Path(name).suffixes[-2:]).lower()
        suffix = suffix if suffix.replace(".", "").isalnum() and len(suffix) <= 12 else ""
        dest = self.paths.uploads / f"{job_id}{suffix}"
        size = 0
        try:
            # A declared size is checked before a byte is written; a streamed one as it comes.
            self._check_disk(int(request.headers.get("content-length") or 0), name)
            with open(dest, "wb") as fh:
                while chunk := await file.read(UPLOAD_CHUNK):
                    size += len(chunk)
                    if size > self.max_upload:
                        raise HTTPException(413, f"upload is over the {self.max_upload / 2**20:.0f} MB limit")
                    self._check_disk(len(chunk), name)
                    await asyncio.to_thread(fh.write, chunk)
            return await self._submit(
                who, job_id, str(dest), name, fusion, upload=True, stain=stain, release=release
            )
        except HTTPException:
            dest.unlink(missing_ok=True)
            raise

    def _check_disk(self, incoming: int, name: str) -> None:
        """507 when writing `incoming` more bytes would leave less than the threshold free."""
        if shutil.disk_usage(self.paths.uploads).free - incoming < self.min_free:
            raise HTTPException(
                507,
                f"not enough free disk for {name[:80]!r}: the service keeps "
                f"{self.min_free / 1e9:.1f} GB free (setting service.min_free_gb)",
            )

    @api.get(
        "/jobs", summary="Your jobs (an admin's: everyone's), oldest first", responses=error_responses(401)
    )
    async def list_jobs(
        self, cred: HTTPAuthorizationCredentials | None = Depends(bearer)
    ) -> list[dict[str, Any]]:
        who = self._who(cred)
        keep = ("job_id", "status", "slide", "submitted_at", "user")

        def listing() -> list[dict[str, Any]]:  # reads each unfinished job's store: in a thread
            jobs = self.db.jobs(None if who.admin else who.user)
            return [{**{k: j[k] for k in keep}, "progress": progress_of(j, self.paths)} for j in jobs]

        return await asyncio.to_thread(listing)

    @api.get(
        "/jobs/{job_id}",
        summary="Job status with queue position and progress (tiles done/total, ETA)",
        responses=error_responses(401, 404),
    )
    async def job_status(
        self, job_id: str, cred: HTTPAuthorizationCredentials | None = Depends(bearer)
    ) -> dict[str, Any]:
        who = self._who(cred)
        job = self._job(job_id, who)
        out = {
            k: job[k]
            for k in (
                "job_id",
                "status",
                "slide",
                "user",
                "submitted_at",
                "updated_at",
                "started_at",
                "finished_at",
            )
        }
        out.update(job["info"])
        out["progress"] = await asyncio.to_thread(progress_of, job, self.paths)
        if job["status"] == "queued":
            out["position"] = self.db.position(job_id)
        if job["error"]:
            out["error"] = job["error"]
        return out

    @api.delete(
        "/jobs/{job_id}",
        summary="Cancel a queued or running job, or remove a finished one; its files go with it",
        responses=error_responses(401, 403, 404),
    )
    async def delete_job(
        self, job_id: str, cred: HTTPAuthorizationCredentials | None = Depends(bearer)
    ) -> dict[str, Any]:
        who = self._who(cred, "submit")
        job = self._job(job_id, who)
        if job["status"] in ACTIVE:
            self.db.cancel(job_id)
            # The task stops before its files go: a unit it was writing must not bring them back.
            await asyncio.to_thread(self.runner.halt, job_id)
            outcome = "cancelled"
        else:
            self.db.remove(job_id)
            outcome = "removed"
        self._forget_deepzoom(job_id)
        await asyncio.to_thread(self.paths.remove, job_id, job["path"] if job["upload"] else None)
        self._log(who, "delete", job_id=job_id, outcome=outcome)
        return {"job_id": job_id, "status": outcome}

    def _done(self, job_id: str, who: Principal) -> tuple[dict[str, Any], Path]:
        job = self._job(job_id, who)
        if job["status"] != "done":
            raise HTTPException(
                409, f"job {job_id} is {job['status']}" + (f": {job['error']}" if job.get("error") else "")
            )
        return job, self.paths.store(job_id)

    @api.get(
        "/jobs/{job_id}/result",
        summary="Verdict, malignant fraction with interval, models, timings",
        description=RESULT_DOC,
        responses=error_responses(401, 404, 409),
    )
    async def job_result(
        self, job_id: str, cred: HTTPAuthorizationCredentials | None = Depends(bearer)
    ) -> dict[str, Any]:
        who = self._who(cred)
        job, _ = self._done(job_id, who)
        self._log(who, "view", job_id=job_id, what="result")
        review = review_summary(self.db.reviews(job_id), self.db.signoff(job_id))
        release = job["info"].get("release") or MAIN_RELEASE
        return {**job["result"], "slide": job["slide"], "release": release, "review": review}

    @api.get(
        "/jobs/{job_id}/heatmap.png",
        summary="Fused malignant score over the thumbnail",
        response_class=Response,
        responses={**binary_response("image/png"), **error_responses(401, 404, 409)},
    )
    async def job_heatmap(
        self, job_id: str, request: Request, cred: HTTPAuthorizationCredentials | None = Depends(bearer)
    ) -> Response:
        return await self._download(job_id, request, cred, "heatmap")

    @api.get(
        "/jobs/{job_id}/geojson",
        summary="Tiles as QuPath detections with class and scores",
        response_class=Response,
        responses={**GEOJSON_RESPONSE, **error_responses(401, 404, 409)},
    )
    async def job_geojson(
        self, job_id: str, request: Request, cred: HTTPAuthorizationCredentials | None = Depends(bearer)
    ) -> Response:
        return await self._download(job_id, request, cred, "geojson")

    @api.get(
        "/jobs/{job_id}/tiles.csv",
        summary="One row per tile: position, tissue, per-model and fused scores",
        response_class=Response,
        responses={**binary_response("text/csv"), **error_responses(401, 404, 409)},
    )
    async def job_csv(
        self, job_id: str, request: Request, cred: HTTPAuthorizationCredentials | None = Depends(bearer)
    ) -> Response:
        return await self._download(job_id, request, cred, "csv")

    async def _download(
        self, job_id: str, request: Request, cred: HTTPAuthorizationCredentials | None, what: str
    ) -> Response:
        """A finished job's heatmap, GeoJSON or CSV: built once by a Ray task (a whole slide's
        GeoJSON is seconds of pure Python), then served from its file, with an ETag, gzipped for
        clients that accept it.
        """
        _, media, suffix, compressed = EXPORTS[what]
        who = self._who(cred)
        _, z = self._done(job_id, who)
        # The tile exports carry the reviews: one file per review revision, the older ones removed.
        revision = self.db.review_revision(job_id)
        name = export_name(what, revision)
        self._log(who, "download", job_id=job_id, what=name)
        path = self.paths.exports(job_id) / name
        if not path.is_file():
            key = (job_id, name)
            async with self._export_locks.setdefault(key, asyncio.Lock()):
                if not path.is_file():
                    import ray

                    reviews = self.db.reviews(job_id) if what != "heatmap" else None
                    task = ray.remote(num_cpus=JOB_CPUS)(build_export_files)
                    body, gz = await task.remote(str(z), what, reviews)
                    if gz is not None:
                        await asyncio.to_thread(_write_atomic, path.with_name(name + ".gz"), gz)
                    await asyncio.to_thread(_write_atomic, path, body)  # last: it marks both done
                    if revision:
                        await asyncio.to_thread(_drop_older, path, what)
            self._export_locks.pop(key, None)
        headers = {"Content-Disposition": f'attachment; filename="{job_id}{suffix}"'} if suffix else {}
        if compressed:
            headers["Vary"] = "Accept-Encoding"
            if "gzip" in request.headers.get("accept-encoding", ""):
                headers["Content-Encoding"] = "gzip"
                return FileResponse(path.with_name(name + ".gz"), media_type=media, headers=headers)
        return FileResponse(path, media_type=media, headers=headers)

    @api.get(
        "/jobs/{job_id}/tiles/{tile}/gradcam.png",
        summary="Grad-CAM of one tile for one model",
        response_class=Response,
        responses={**binary_response("image/png"), **error_responses(401, 404, 409, 410)},
    )
    async def job_gradcam(
        self,
        job_id: str,
        tile: int,
        model: str = Query(...),
        target: str = Query(
            "called", pattern="^(called|malignant|benign)$", description="the class to explain"
        ),
        cred: HTTPAuthorizationCredentials | None = Depends(bearer),
    ) -> Response:
        """The tile with the model's evidence for a class over it. By default the class the model
        called for this tile: a map for the other class is often empty (no evidence at all).
        Headers say which class is explained, the model's probability of malignant for the tile,
        and `X-Evidence: none` when the map is empty.
        """
        from ..store import overlay_png

        who = self._who(cred)
        job, z = self._done(job_id, who)
        # The store and the slide are read, and the PNG encoded, in threads: off the event loop.
        px, p_mal = await self._heavy(self._tile_for_gradcam, job, z, tile, model)
        cls = {"malignant": 1, "benign": 0}.get(target, int(p_mal >= 0.5))
        ensemble, _ = self._ensemble_of(job["info"].get("release"))
        try:
            cam = await ensemble.gradcam.remote(model, px, cls)
        except KeyError:
            raise HTTPException(404, f"no model {model[:40]!r}") from None
        self._log(who, "download", job_id=job_id, what=f"gradcam tile {tile} {model}")
        headers = {
            "X-Explained-Class": CLASSES[cls],
            "X-Model-Probability-Malignant": f"{p_mal:.4f}",
            "X-Evidence": "none" if float(cam.max()) <= 0 else "some",
        }
        png = await self._heavy(overlay_png, px, cam)
        return Response(png, media_type="image/png", headers=headers)

    def _tile_for_gradcam(
        self, job: dict[str, Any], z: Path, tile: int, model: str
    ) -> tuple[np.ndarray, float]:
        """One tile's pixels, read from the job's slide, and the model's stored malignant score."""
        from ..slides import read_tile
        from ..store import array, attrs, open_store

        g = open_store(z)
        n = array(g, "coords").shape[0]
        if not 0 <= tile < n:
            raise HTTPException(404, f"tile {tile} out of range 0..{n - 1}")
        x, y = (int(v) for v in np.asarray(array(g, "coords")[tile]))
        meta = attrs(g)
        t = meta["tiling"]
        names = [m["name"] for m in meta.get("models", [])]
        if model not in names:
            raise HTTPException(404, f"no model {model[:40]!r}")
        try:
            with open_slide(job["path"], default_mpp=self.settings.default_mpp) as s:
                px = read_tile(s, x, y, int(t["level"]), int(t["read_px"]), int(t["tile_px"]))
        except SlideError as exc:
            raise HTTPException(
                410, f"slide of job {job['job_id']} ({job['slide']}) can no longer be read: {exc.reason}"
            ) from None
        return px, float(np.asarray(array(g, "probs")[tile, names.index(model), 1]))

    # ---- models and patches -----------------------------------------------------------------
    @api.post(
        "/score",
        summary="Score raw patches: per-model probabilities and the fused score",
        responses=error_responses(400, 401, 403, 413, 422),
    )
    async def score(
        self,
        files: list[UploadFile] = File(
            ..., min_length=1, description="the patches (at most service.max_score_files)"
        ),
        fusion: Fusion | None = Query(
            None, description="how the models' scores are fused (default: the service's)"
        ),
        mpp: float | None = Query(
            None,
            gt=0.01,
            lt=100,
            description="the patches' microns per pixel: each is rescaled to the models' field as slide "
            "tiles are; without it a patch is taken as one whole field (224 px = 112 um), as said in "
            "the answer's `scale`",
        ),
        stain: str | None = Query(
            None,
            pattern="^(release|none|macenko|reinhard)$",
            description="stain normalisation (default: the service's setting, domain.stain)",
        ),
        cred: HTTPAuthorizationCredentials | None = Depends(bearer),
    ) -> dict[str, Any]:
        """Per patch: each model's probabilities, the fused score and call, the quality-control
        finding (`qc`: ok, background, blur, ink, debris) and the domain check's distance from the
        training images (`out_of_range` above the release's threshold: the call is not to be
        trusted for such a patch).
        """
        who = self._who(cred, "submit")
        if len(files) > self.max_score_files:
            raise HTTPException(
                413,
                f"{len(files)} patches in one request: at most {self.max_score_files} "
                "(setting service.max_score_files)",
            )
        cards = await self.cards()
        size = max(int(c["input_size"]) for c in cards)
        tiles, names = [], []
        for f in files:
            name = check_name(f.filename or "patch")
            data = await f.read(self.max_score_bytes + 1)
            if len(data) > self.max_score_bytes:
                raise HTTPException(
                    413,
                    f"{name}: over the {self.max_score_bytes / 2**20:g} MB a patch may have "
                    "(setting service.max_score_mb)",
                )
            tiles.append(await asyncio.to_thread(decode_patch, name, data, size, mpp))
            names.append(name)
        screen, screening = await self._screen(stain)
        screening["scale"] = (
            f"rescaled from {mpp} um/px to the models' field"
            if mpp is not None
            else "no mpp given: each patch taken as one whole field of 112 um"
        )
        screened = await asyncio.to_thread(screen, np.stack(tiles))
        res = await self.ensemble.score.remote(screened.tiles, fusion, interactive=True)
        self._log(who, "score", patches=len(names))
        return score_response(
            names,
            res,
            [c["name"] for c in cards],
            fusion or self.settings.fusion,
            self.settings.tile_threshold,
            screened,
            screening,
        )

    async def _screen(self, stain: str | None) -> tuple[Any, dict[str, Any]]:
        """The TileScreen of /score (the analyses' settings, `stain` if given) and what it applies."""
        from dataclasses import replace

        from ..domain import DomainFile
        from ..pipeline import build_screen, stain_method

        if self._domain is None:
            found = await self.ensemble.domain.remote()
            self._domain = (DomainFile.from_dict(found),) if found else (None,)
        domain = self._domain[0]
        settings = self.settings.screen
        if stain:
            settings = replace(settings, stain=stain)
        try:
            screen = build_screen(settings, domain)
        except InvalidInput as exc:
            raise HTTPException(422, str(exc)) from None
        check = screen.check
        return screen, {
            "stain": stain_method(settings.stain, domain),
            "threshold": None if check is None else round(check.threshold, 4),
        }

    @api.get(
        "/models",
        summary="Models with versions and metrics, and their replicas",
        responses=error_responses(401),
    )
    async def models(self, cred: HTTPAuthorizationCredentials | None = Depends(bearer)) -> dict[str, Any]:
        self._who(cred)
        cards = await self.cards()
        replicas: dict[str, Any] = {}
        try:
            st = serve.status().applications[self.app_name].deployments
            replicas = {
                name: {"status": str(d.status), "replicas": dict(d.replica_states)} for name, d in st.items()
            }
        except Exception as exc:  # status is informative only
            replicas = {"error": str(exc)}
        keep = ("name", "architecture", "version", "input_size", "mpp", "temperature", "bias", "classes")
        releases = {MAIN_RELEASE: {**(await self.ensemble.release.remote() or {}), "models": cards}}
        for name in self.releases:
            handle, _ = self._ensemble_of(name)
            try:
                theirs = await handle.models.remote()
                releases[name] = {**(await handle.release.remote() or {}), "models": theirs}
            except Exception as exc:  # a release app not (yet) running is named, not fatal
                releases[name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        return {
            "models": [
                {**{k: c[k] for k in keep}, "test_metrics": c.get("metrics", {}).get("test")} for c in cards
            ],
            "releases": {
                name: {
                    **{k: v for k, v in r.items() if k != "models"},
                    "models": {c["name"]: c["version"] for c in r.get("models", [])},
                }
                for name, r in releases.items()
            },
            "deployments": replicas,
            "stats": await self.ensemble.stats.remote(),
        }

    @api.get("/openapi.json", include_in_schema=False)
    async def openapi_json(self, request: Request) -> JSONResponse:
        """The schema as this service behaves (accounts on or off: `_schema.service_openapi`)."""
        if self._schema is None:
            self._schema = service_openapi(request.app.openapi(), auth=self.auth)
        return JSONResponse(self._schema)

    @api.get("/docs", include_in_schema=False)
    async def docs(self) -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{APP_NAME} REST API")

    @api.get("/health", summary="Liveness and readiness (no token needed)")
    async def health(self) -> dict[str, Any]:
        cards = await self.cards()
        return {
            "status": "ok",
            "models": [c["name"] for c in cards],
            "jobs_running": self.db.count(("running",)),
            "jobs_queued": self.db.count(("queued",)),
            "auth": self.auth,
        }
