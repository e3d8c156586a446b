"""Where a job's files live, its progress (read from its Zarr store), and the Ray task that runs it.

The records are in the service database (`_db`); a job task writes only its Zarr store, whose
done flags are the progress, and returns the result, which the runner records.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where the task runs: the Ingress needs no Ray Data at import
    from ..pipeline import AnalysisSettings

JOB_ID = re.compile(r"^[0-9a-f]{16}$")


def new_job_id() -> str:
    return uuid.uuid4().hex[:16]


@dataclass(frozen=True)
class JobPaths:
    """The results folder's layout: `jobs/<id>.zarr` per job, `uploads/` for uploaded slides."""

    root: Path

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    @property
    def uploads(self) -> Path:
        return self.root / "uploads"

    def store(self, job_id: str) -> Path:
        if not JOB_ID.match(job_id):
            raise KeyError(job_id)
        return self.jobs / f"{job_id}.zarr"

    def exports(self, job_id: str) -> Path:
        """A finished job's downloads (heatmap, GeoJSON, CSV), each built once: a result is final."""
        return self.jobs / f"{self.store(job_id).stem}.exports"

    def remove(self, job_id: str, upload: str | None) -> None:
        """A job's files: its store, its downloads, and its slide when the service holds it as an upload."""
        shutil.rmtree(self.store(job_id), ignore_errors=True)
        shutil.rmtree(self.exports(job_id), ignore_errors=True)
        if upload and Path(upload).resolve().is_relative_to(self.uploads.resolve()):
            Path(upload).unlink(missing_ok=True)


def job_paths(results_dir: str | os.PathLike[str]) -> JobPaths:
    p = JobPaths(Path(results_dir))
    p.jobs.mkdir(parents=True, exist_ok=True)
    p.uploads.mkdir(parents=True, exist_ok=True)
    return p


def progress_of(job: dict[str, Any], paths: JobPaths) -> dict[str, Any]:
    """Tiles done and in all (from the store's done flags), the fraction and an ETA."""
    if job["status"] == "done" and job.get("result"):
        r = job["result"]
        n = int(r["n_tiles"]) + int(r.get("n_excluded", 0)) + int(r.get("n_rejected", 0))
        return {"done": n, "total": n, "fraction": 1.0, "eta_s": 0}
    store = paths.store(job["job_id"])
    if not (store / "zarr.json").exists():
        return {"done": 0, "total": None, "fraction": 0.0, "eta_s": None}
    from ..store import done_chunks, done_tiles, layout, open_store

    try:
        lay = layout(open_store(store))
        done = done_chunks(store)
    except Exception:  # being created this very moment
        return {"done": 0, "total": None, "fraction": 0.0, "eta_s": None}
    n, unit = int(lay["n_tiles"]), int(lay["chunk_tiles"])
    finished = done_tiles(done, n, unit)
    frac = finished / n if n else 1.0
    eta = None
    if job["status"] == "running" and job.get("started_at") and 0 < frac < 1:
        spent = time.time() - float(job["started_at"])
        eta = round(spent * (1 - frac) / frac, 1)
    return {"done": finished, "total": n, "fraction": round(frac, 4), "eta_s": eta}


def run_job_task(
    store: str,
    job_id: str,
    slide: str,
    cards: list[dict[str, Any]],
    settings: AnalysisSettings,
    app_name: str,
    rates: Any = None,  # ensemble.TileRates, or None for the raw share of malignant tiles
    domain: dict[str, Any] | None = None,  # the release's domain file (Ensemble.domain)
) -> dict[str, Any]:
    """Body of the Ray task that analyses one submitted slide into `store`; its result record.

    Run again (a lost node, a restarted service), it resumes: finished work units are skipped.
    """
    from ..domain import DomainFile
    from ..pipeline import analyze_slide

    result = analyze_slide(
        slide,
        store,
        cards,
        settings,
        app_name=app_name,
        progress=False,
        extra_attrs={"job_id": job_id},
        rates=rates,
        domain=DomainFile.from_dict(domain) if domain else None,
    )
    result["job_id"] = job_id
    return result


# What each download is: (file name, media type, attachment suffix, also kept gzipped). Text
# shrinks about tenfold: a whole slide's GeoJSON crosses Serve's proxy in a tenth of the bytes.
EXPORTS: dict[str, tuple[str, str, str, bool]] = {
    "heatmap": ("heatmap.png", "image/png", "", False),
    "geojson": ("tiles.geojson", "application/geo+json", ".geojson", True),
    "csv": ("tiles.csv", "text/csv", ".csv", True),
}


def export_name(what: str, revision: int) -> str:
    """The file a download is kept in: the tile exports carry the reviews, so each review
    revision of a job has its own (0: never reviewed).
    """
    name = EXPORTS[what][0]
    if not revision or what == "heatmap":
        return name
    stem, dot, ext = name.partition(".")
    return f"{stem}.r{revision}{dot}{ext}"


def build_export(store: str, what: str, reviews: dict[int, dict[str, Any]] | None = None) -> bytes:
    """Body of the Ray task that builds one download of a finished job from its store: in a worker
    process, so neither the Ingress' event loop nor its interpreter lock carry the work. The tile
    exports (CSV, GeoJSON) carry `reviews` where given.
    """
    from ..store import geojson_text, heatmap_png, tiles_csv

    if what == "heatmap":
        return heatmap_png(store)
    if what == "geojson":
        return geojson_text(store, reviews).encode()
    if what == "csv":
        return tiles_csv(store, reviews).encode()
    raise KeyError(what)


def build_export_files(
    store: str, what: str, reviews: dict[int, dict[str, Any]] | None = None
) -> tuple[bytes, bytes | None]:
    """The download and, for text, its gzip encoding (both built in the task, off the Ingress)."""
    import gzip

    body = build_export(store, what, reviews)
    return body, gzip.compress(body, 6, mtime=0) if EXPORTS[what][3] else None
