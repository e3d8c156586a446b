"""FastAPI ingress: accounts and roles, a durable bounded job queue, results, exports, patches."""
# No `from __future__ import annotations` here: FastAPI must resolve the route annotations
# at run time inside the Serve replica.

import asyncio
import contextlib
import io
import math
import os
import re
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from fastapi import Depends, FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi import Path as Path_
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from ray import serve

from ..config import APP_NAME, VERSION, ServiceSettings
from ..ensemble import VERDICT_MEANING, Fusion
from ..errors import InvalidInput
from ..manifest import CLASSES
from ..pipeline import AnalysisSettings
from ..slides import SlideError, open_slide
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
from ._requests import PathSubmission, allowed_path, check_name, decode_patch, score_response
from ._reviews import ReviewBody, SignoffBody, export_reviewed, review_summary
from ._schema import service_openapi
from ._viewer import OSD_VERSION, VIEWER_DIR, viewer_ready

api = FastAPI(
    title="wbc-ray",
    description="Whole-slide screening for acute lymphoblastic leukemia: three CNNs on Ray Serve "
    "fused by a fuzzy rank ensemble into a slide verdict. With auth on, every route but /health "
    "takes a bearer token (`wbc-ray token create`).",
    version=VERSION,
    # Served by the Ingress itself (`openapi_json`, `docs`): the schema depends on its settings.
    openapi_url=None,
    docs_url=None,
    redoc_url=None,
)
bearer = HTTPBearer(auto_error=False, description="a token from `wbc-ray token create`")

T = TypeVar("T")
UPLOAD_CHUNK = 1 << 20
JOB_RETRIES = 3


class Error(BaseModel):
    """Every error answer: what went wrong, naming the input."""

    detail: str


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


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {
        400: "malformed request",
        401: "no or unknown token",
        403: "not allowed for this token, or outside the slide folders",
        404: "no such job (or not yours), tile or model",
        409: "the job has not finished",
        410: "the job's slide can no longer be read",
        413: "too large",
        422: "invalid input",
        429: "the queue is full; retry after the seconds in Retry-After",
        507: "not enough free disk for the upload",
    }
    return {c: {"model": Error, "description": text[c]} for c in codes}


def _slide_error(exc: SlideError, shown: str) -> HTTPException:
    # The message names what the client sent, never our internal storage path.
    return HTTPException(422, f"{shown}: {exc.reason.replace(exc.path, shown)}")


def _binary(media: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: {"content": {media: {"schema": {"type": "string", "format": "binary"}}}, "description": "OK"}
    }


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


# Registered before the class: `serve.ingress` takes the app as it is at that point.
@api.middleware("http")
async def _allow_header(request: Request, call_next: Any) -> Any:
    # A path with several routes (GET and POST /jobs; GET and DELETE /jobs/{id}) answers 405 from
    # whichever route matched first, naming only its methods; name all the path has. Read from the
    # app's own schema: in a replica the routes sit inside Serve's included router, whose shape is
    # FastAPI's private business.
    response = await call_next(request)
    if response.status_code == 405:
        paths = request.app.openapi()["paths"]
        # A literal path wins over a template it also matches (/jobs/upload is not /jobs/{job_id}).
        matching = (
            [request.url.path]
            if request.url.path in paths
            else [
                template
                for template in paths
                if re.fullmatch(re.sub(r"\{[^/}]+\}", "[^/]+", template), request.url.path)
            ]
        )
        methods = {
            method.upper() for template in matching for method in paths[template] if method in _HTTP_METHODS
        }
        response.headers["Allow"] = ", ".join(sorted(methods))
    return response


_HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@api.exception_handler(SlideError)
async def _slide_errors(_: Request, exc: SlideError) -> JSONResponse:
    return JSONResponse({"detail": f"{os.path.basename(exc.path)[:120]}: {exc.reason}"}, status_code=422)


@api.exception_handler(RequestValidationError)
async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
    # One shape for every error answer ({"detail": "..."}), as the schema says.
    parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in exc.errors()[:5]]
    return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=422)


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


# CPUs a job's driver task holds: it only waits on its stream's tasks, which hold their own.
JOB_CPUS = 0.05


@serve.deployment(max_ongoing_requests=64)
@serve.ingress(api)
class Ingress:
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
        # Deep Zoom: open slides and overlays of the jobs being viewed, and encoded tiles.
        self._dz_lock = threading.Lock()
        self._dz_slides: OrderedDict[str, tuple[Any, Any, np.ndarray]] = OrderedDict()
        self._dz_kept: dict[str, OrderedDict[str, Any]] = {"overlay": OrderedDict(), "tiles": OrderedDict()}
        self._dz_cache = ByteCache(DZ_CACHE_BYTES)
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

    def _launch(self, job: dict[str, Any]) -> Any:
        """Start a claimed job as a Ray task (called by the runner thread)."""
        import ray

        from ..lifecycle import rates_for

        settings = self.settings
        if job["fusion"]:
            settings = replace(settings, fusion=job["fusion"])
        if stain := (job.get("info") or {}).get("stain"):
            settings = replace(settings, screen=replace(settings.screen, stain=stain))
        cards = self.ensemble.models.remote().result()
        rates = rates_for(self.ensemble.tile_rates.remote().result(), settings.fusion)
        domain = self.ensemble.domain.remote().result()
        # The job's driver is a task: if its node is lost it runs again elsewhere and resumes from
        # the store (finished units are skipped), with the same results.
        task = ray.remote(num_cpus=JOB_CPUS, max_retries=JOB_RETRIES)(run_job_task)
        store = str(self.paths.store(job["job_id"]))
        return task.remote(store, job["job_id"], job["path"], cards, settings, self.app_name, rates, domain)

    async def _submit(
        self,
        who: Principal,
        job_id: str,
        path: str,
        shown: str,
        fusion: str | None,
        upload: bool,
        stain: str | None = None,
    ) -> dict[str, Any]:
        try:
            info = await asyncio.to_thread(_slide_info, path, self.settings.default_mpp)
        except SlideError as exc:
            raise _slide_error(exc, shown) from None
        keep = {k: info[k] for k in ("vendor", "dimensions", "mpp")}
        if stain:
            keep["stain"] = stain
        self.db.add_job(job_id, who.user, shown, path, upload, fusion, keep)
        self._log(who, "submit", job_id=job_id, slide=shown)
        return {"job_id": job_id, "status": "queued", "status_url": f"/jobs/{job_id}"}

    @api.post(
        "/jobs",
        status_code=202,
        summary="Submit a slide by path on the server's slide folders",
        responses=_errors(400, 401, 403, 404, 422, 429),
    )
    async def submit_path(
        self, body: PathSubmission, cred: HTTPAuthorizationCredentials | None = Depends(bearer)
    ) -> dict[str, Any]:
        who = self._who(cred, "submit")
        real = allowed_path(body.path, self.roots)
        with self._reserved(who):
            return await self._submit(
                who, new_job_id(), str(real), body.path, body.fusion, upload=False, stain=body.stain
            )

    @api.post(
        "/jobs/upload",
        status_code=202,
        summary="Submit a slide by upload",
        responses=_errors(400, 401, 403, 413, 422, 429, 507),
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
        cred: HTTPAuthorizationCredentials | None = Depends(bearer),
    ) -> dict[str, Any]:
        who = self._who(cred, "submit")
        name = check_name(file.filename or "")
        with self._reserved(who):
            return await self._receive(who, request, file, name, fusion, stain)

    async def _receive(
        self,
        who: Principal,
        request: Request,
        file: UploadFile,
        name: str,
        fusion: str | None,
        stain: str | None,
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
            return await self._submit(who, job_id, str(dest), name, fusion, upload=True, stain=stain)
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

    @api.get("/jobs", summary="Your jobs (an admin's: everyone's), oldest first", responses=_errors(401))
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
        responses=_errors(401, 404),
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
        responses=_errors(401, 403, 404),
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
        responses=_errors(401, 404, 409),
    )
    async def job_result(
        self, job_id: str, cred: HTTPAuthorizationCredentials | None = Depends(bearer)
    ) -> dict[str, Any]:
        who = self._who(cred)
        job, _ = self._done(job_id, who)
        self._log(who, "view", job_id=job_id, what="result")
        review = review_summary(self.db.reviews(job_id), self.db.signoff(job_id))
        return {**job["result"], "slide": job["slide"], "review": review}

    @api.get(
        "/jobs/{job_id}/heatmap.png",
        summary="Fused malignant score over the thumbnail",
        response_class=Response,
        responses={**_binary("image/png"), **_errors(401, 404, 409)},
    )
    async def job_heatmap(
        self, job_id: str, request: Request, cred: HTTPAuthorizationCredentials | None = Depends(bearer)
    ) -> Response:
        return await self._download(job_id, request, cred, "heatmap")

    @api.get(
        "/jobs/{job_id}/geojson",
        summary="Tiles as QuPath detections with class and scores",
        response_class=Response,
        responses={**GEOJSON_RESPONSE, **_errors(401, 404, 409)},
    )
    async def job_geojson(
        self, job_id: str, request: Request, cred: HTTPAuthorizationCredentials | None = Depends(bearer)
    ) -> Response:
        return await self._download(job_id, request, cred, "geojson")

    @api.get(
        "/jobs/{job_id}/tiles.csv",
        summary="One row per tile: position, tissue, per-model and fused scores",
        response_class=Response,
        responses={**_binary("text/csv"), **_errors(401, 404, 409)},
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
        responses={**_binary("image/png"), **_errors(401, 404, 409, 410)},
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
        try:
            cam = await self.ensemble.gradcam.remote(model, px, cls)
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

    # ---- deep zoom: the slide and the calls over it, for the viewer ---------------------------
    @api.get(
        "/jobs/{job_id}/{layer}.dzi",
        summary="Deep Zoom descriptor of a finished job's slide, or of its call overlay",
        response_class=Response,
        responses={
            200: {"content": {"application/xml": {"schema": {"type": "string"}}}, "description": "DZI"},
            **_errors(401, 404, 409, 410),
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
            **_errors(401, 404, 409, 410),
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
        responses=_errors(401, 404, 409),
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
        responses=_errors(401, 404, 409),
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
        responses=_errors(401, 404, 409),
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
        responses=_errors(401, 403, 404, 409, 422),
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
        responses=_errors(401, 404, 409),
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
        responses=_errors(401, 403, 404, 409, 422),
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
        responses={**_binary("application/zip"), **_errors(401, 404)},
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
                f"{OSD_VERSION} is fetched by the project's setup: run <code>make setup</code>, or "
                "<code>python -m wbc_ray.serve._viewer</code>, then reload.</p>",
                status_code=503,
            )
        html = await asyncio.to_thread((VIEWER_DIR / "index.html").read_text)
        return HTMLResponse(html.replace("{{OSD_VERSION}}", OSD_VERSION))

    @api.get(
        "/viewer/{name:path}",
        summary="The review workspace's scripts, styles, and OpenSeadragon with its licence",
        response_class=Response,
        responses=_errors(404),
    )
    async def viewer_file(self, name: str) -> Response:
        root = VIEWER_DIR.resolve()
        path = (root / name).resolve()
        if not path.is_relative_to(root) or not path.is_file() or path.suffix not in VIEWER_TYPES:
            raise HTTPException(404, f"no viewer file {name[:80]!r}")
        return FileResponse(
            path, media_type=VIEWER_TYPES[path.suffix], headers={"Cache-Control": "public, max-age=3600"}
        )

    # ---- models and patches -----------------------------------------------------------------
    @api.post(
        "/score",
        summary="Score raw patches: per-model probabilities and the fused score",
        responses=_errors(400, 401, 403, 413, 422),
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
        "/models", summary="Models with versions and metrics, and their replicas", responses=_errors(401)
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
        return {
            "models": [
                {**{k: c[k] for k in keep}, "test_metrics": c.get("metrics", {}).get("test")} for c in cards
            ],
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
