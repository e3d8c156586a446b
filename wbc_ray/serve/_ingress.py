"""FastAPI ingress: job submission (upload or path), status, results, exports, patch scoring."""
# No `from __future__ import annotations` here: FastAPI must resolve the route annotations
# at run time inside the Serve replica.

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from ray import serve

from ..config import APP_NAME, VERSION
from ..ensemble import DEFAULT_FUSION, FUSIONS
from ..manifest import CLASSES
from ..slides import SlideError, open_slide
from ._jobs import JobStore, new_job_id, run_job_task
from ._requests import PathSubmission, allowed_path, check_name, decode_patch, score_response

api = FastAPI(
    title="wbc-ray",
    description="Whole-slide screening for acute lymphoblastic leukemia: three CNNs on Ray Serve "
    "fused by a fuzzy rank ensemble into a slide verdict.",
    version=VERSION,
)

UPLOAD_CHUNK = 1 << 20
JOB_RETRIES = 3


def _slide_error(exc: SlideError, shown: str) -> HTTPException:
    # The message names what the client sent, never our internal storage path.
    return HTTPException(422, f"{shown}: {exc.reason.replace(exc.path, shown)}")


@serve.deployment(max_ongoing_requests=64)
@serve.ingress(api)
class Ingress:
    def __init__(
        self,
        ensemble: Any,
        results_dir: str,
        slide_roots: list[str] | None = None,
        max_upload_mb: float = 2048,
        analysis: dict[str, Any] | None = None,
        app_name: str = APP_NAME,
        job_cpus: float = 0.05,
    ) -> None:
        self.ensemble = ensemble
        self.store = JobStore(results_dir)
        self.results_dir = str(Path(results_dir).resolve())
        self.roots = [Path(r).resolve() for r in (slide_roots or [])] + [self.store.uploads.resolve()]
        self.max_upload = int(max_upload_mb * 2**20)
        self.analysis = analysis or {}
        self.app_name = app_name
        self.job_cpus = job_cpus
        self._cards: list[dict[str, Any]] | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def cards(self) -> list[dict[str, Any]]:
        if self._cards is None:
            self._cards = await self.ensemble.models.remote()
        return self._cards

    # ---- jobs -------------------------------------------------------------------------------
    async def _start(self, job_id: str, slide: str, shown: str, fusion: str | None) -> dict[str, Any]:
        import ray

        try:
            with open_slide(slide, default_mpp=self.analysis.get("default_mpp")) as s:
                info = s.info.to_dict()
        except SlideError as exc:
            raise _slide_error(exc, shown) from None
        settings = dict(self.analysis)
        if fusion:
            if fusion not in FUSIONS:
                raise HTTPException(422, f"fusion must be one of {', '.join(FUSIONS)}, not {fusion[:40]!r}")
            settings["fusion"] = fusion
        cards = await self.cards()
        from ..lifecycle import rates_for

        rates = rates_for(await self.ensemble.tile_rates.remote(), settings["fusion"])
        now = time.time()
        record = {
            "job_id": job_id,
            "status": "queued",
            "slide": shown,
            "submitted_at": now,
            "updated_at": now,
            "vendor": info["vendor"],
            "dimensions": info["dimensions"],
            "mpp": info["mpp"],
            "progress": {"done": 0, "total": None, "eta_s": None},
        }
        self.store.write(job_id, record)
        # The job's driver is a task: if its node is lost it runs again elsewhere and resumes from
        # the store (finished units are skipped), with the same results. Errors in the job itself
        # are recorded by the task and not retried.
        task = ray.remote(num_cpus=self.job_cpus, max_retries=JOB_RETRIES)(run_job_task)
        ref = task.remote(self.results_dir, job_id, slide, cards, settings, self.app_name, rates)
        self._tasks[job_id] = asyncio.get_running_loop().create_task(self._watch(job_id, ref))
        return {"job_id": job_id, "status": "queued", "status_url": f"/jobs/{job_id}"}

    async def _watch(self, job_id: str, ref: Any) -> None:
        try:
            await ref
        except Exception as exc:  # the task records its own errors; this covers a dead worker
            rec = self.store.read(job_id)
            if rec.get("status") != "failed":
                self.store.update(job_id, status="failed", error=f"job worker died: {type(exc).__name__}")
        finally:
            self._tasks.pop(job_id, None)

    @api.post("/jobs", status_code=202, summary="Submit a slide by path on the server's slide folders")
    async def submit_path(self, body: PathSubmission) -> dict[str, Any]:
        real = allowed_path(body.path, self.roots)
        return await self._start(new_job_id(), str(real), body.path, body.fusion)

    @api.post("/jobs/upload", status_code=202, summary="Submit a slide by upload")
    async def submit_upload(
        self, file: UploadFile = File(...), fusion: str | None = Query(None)
    ) -> dict[str, Any]:
        name = check_name(file.filename or "")
        job_id = new_job_id()
        suffix = "".join(Path(name).suffixes[-2:]).lower()
        suffix = suffix if suffix.replace(".", "").isalnum() and len(suffix) <= 12 else ""
        dest = self.store.uploads / f"{job_id}{suffix}"
        size = 0
        try:
            with open(dest, "wb") as fh:
                while chunk := await file.read(UPLOAD_CHUNK):
                    size += len(chunk)
                    if size > self.max_upload:
                        raise HTTPException(413, f"upload is over the {self.max_upload / 2**20:.0f} MB limit")
                    fh.write(chunk)
            return await self._start(job_id, str(dest), name, fusion)
        except HTTPException:
            dest.unlink(missing_ok=True)
            raise

    @api.get("/jobs", summary="All jobs, oldest first")
    async def list_jobs(self) -> list[dict[str, Any]]:
        return [
            {k: r.get(k) for k in ("job_id", "status", "slide", "submitted_at", "progress")}
            for r in self.store.list()
        ]

    def _record(self, job_id: str) -> dict[str, Any]:
        try:
            return self.store.read(job_id)
        except KeyError:
            raise HTTPException(404, f"no job {job_id[:40]!r}") from None

    @api.get("/jobs/{job_id}", summary="Job status with progress (tiles done/total, ETA)")
    async def job_status(self, job_id: str) -> dict[str, Any]:
        rec = self._record(job_id)
        rec.pop("result", None)
        p = rec.get("progress") or {}
        if p.get("total"):
            p["fraction"] = round(p["done"] / p["total"], 4)
        return rec

    def _done(self, job_id: str) -> tuple[dict[str, Any], Path]:
        rec = self._record(job_id)
        if rec["status"] != "done":
            raise HTTPException(
                409, f"job {job_id} is {rec['status']}" + (f": {rec['error']}" if rec.get("error") else "")
            )
        return rec, self.store.zarr_path(job_id)

    @api.get("/jobs/{job_id}/result", summary="Verdict, malignant fraction with interval, models, timings")
    async def job_result(self, job_id: str) -> dict[str, Any]:
        rec, _ = self._done(job_id)
        return {**rec["result"], "slide": rec["slide"]}

    @api.get("/jobs/{job_id}/heatmap.png", summary="Fused malignant score over the thumbnail")
    async def job_heatmap(self, job_id: str) -> Response:
        from ..store import heatmap_png

        _, z = self._done(job_id)
        return Response(heatmap_png(z), media_type="image/png")

    @api.get("/jobs/{job_id}/geojson", summary="Tiles as QuPath detections with class and scores")
    async def job_geojson(self, job_id: str) -> Response:
        from ..store import geojson_text

        _, z = self._done(job_id)
        return Response(
            geojson_text(z),
            media_type="application/geo+json",
            headers={"Content-Disposition": f'attachment; filename="{job_id}.geojson"'},
        )

    @api.get(
        "/jobs/{job_id}/tiles.csv", summary="One row per tile: position, tissue, per-model and fused scores"
    )
    async def job_csv(self, job_id: str) -> PlainTextResponse:
        from ..store import tiles_csv

        _, z = self._done(job_id)
        return PlainTextResponse(
            tiles_csv(z),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{job_id}.csv"'},
        )

    @api.get("/jobs/{job_id}/tiles/{tile}/gradcam.png", summary="Grad-CAM of one tile for one model")
    async def job_gradcam(
        self,
        job_id: str,
        tile: int,
        model: str = Query(...),
        target: str = Query(
            "called", pattern="^(called|malignant|benign)$", description="the class to explain"
        ),
    ) -> Response:
        """The tile with the model's evidence for a class over it. By default the class the model
        called for this tile: a map for the other class is often empty (no evidence at all).
        Headers say which class is explained, the model's probability of malignant for the tile,
        and `X-Evidence: none` when the map is empty.
        """
        from ..slides import read_tile
        from ..store import array, attrs, open_store

        _, z = self._done(job_id)
        g = open_store(z)
        n = array(g, "coords").shape[0]
        if not 0 <= tile < n:
            raise HTTPException(404, f"tile {tile} out of range 0..{n - 1}")
        x, y = (int(v) for v in np.asarray(array(g, "coords")[tile]))
        meta = attrs(g)
        t = meta["tiling"]
        rec = self._record(job_id)
        slide_path = meta["slide"]["path"]
        try:
            with open_slide(slide_path, default_mpp=self.analysis.get("default_mpp")) as s:
                px = read_tile(s, x, y, int(t["level"]), int(t["read_px"]), int(t["tile_px"]))
        except SlideError as exc:
            raise HTTPException(
                410, f"slide of job {job_id} ({rec['slide']}) can no longer be read: {exc.reason}"
            ) from None
        names = [m["name"] for m in meta.get("models", [])]
        if model not in names:
            raise HTTPException(404, f"no model {model[:40]!r}")
        p_mal = float(np.asarray(array(g, "probs")[tile, names.index(model), 1]))
        cls = {"malignant": 1, "benign": 0}.get(target, int(p_mal >= 0.5))
        try:
            cam = await self.ensemble.gradcam.remote(model, px, cls)
        except KeyError:
            raise HTTPException(404, f"no model {model[:40]!r}") from None
        from ..store import overlay_png

        headers = {
            "X-Explained-Class": CLASSES[cls],
            "X-Model-Probability-Malignant": f"{p_mal:.4f}",
            "X-Evidence": "none" if float(cam.max()) <= 0 else "some",
        }
        return Response(overlay_png(px, cam), media_type="image/png", headers=headers)

    # ---- models and patches -----------------------------------------------------------------
    @api.post("/score", summary="Score raw patches: per-model probabilities and the fused score")
    async def score(
        self, files: list[UploadFile] = File(...), fusion: str | None = Query(None)
    ) -> dict[str, Any]:
        cards = await self.cards()
        size = max(int(c["input_size"]) for c in cards)
        tiles, names = [], []
        for f in files:
            name = check_name(f.filename or "patch")
            data = await f.read(self.max_upload + 1)
            if len(data) > self.max_upload:
                raise HTTPException(413, f"{name}: over the {self.max_upload / 2**20:.0f} MB limit")
            tiles.append(decode_patch(name, data, size))
            names.append(name)
        if fusion and fusion not in FUSIONS:
            raise HTTPException(422, f"fusion must be one of {', '.join(FUSIONS)}")
        res = await self.ensemble.score.remote(np.stack(tiles), fusion, interactive=True)
        return score_response(
            names,
            res,
            [c["name"] for c in cards],
            fusion or self.analysis.get("fusion", DEFAULT_FUSION),
            self.analysis.get("tile_threshold", 0.5),
        )

    @api.get("/models", summary="Models with versions and metrics, and their replicas")
    async def models(self) -> dict[str, Any]:
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

    @api.get("/health", summary="Liveness and readiness")
    async def health(self) -> dict[str, Any]:
        cards = await self.cards()
        return {"status": "ok", "models": [c["name"] for c in cards], "jobs_running": len(self._tasks)}


@api.exception_handler(SlideError)
async def _slide_errors(_: Request, exc: SlideError) -> JSONResponse:
    return JSONResponse({"detail": f"{os.path.basename(exc.path)[:120]}: {exc.reason}"}, status_code=422)
