"""Job records on disk (small JSON beside each job's Zarr store) and the Ray task that runs a job.

The record is the source of truth for status and progress, so any ingress replica (or a
restarted one) can answer for any job.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any

JOB_ID = re.compile(r"^[0-9a-f]{16}$")


def new_job_id() -> str:
    return uuid.uuid4().hex[:16]


class JobStore:
    def __init__(self, results_dir: str | os.PathLike[str]) -> None:
        self.root = Path(results_dir)
        self.jobs = self.root / "jobs"
        self.uploads = self.root / "uploads"
        self.jobs.mkdir(parents=True, exist_ok=True)
        self.uploads.mkdir(parents=True, exist_ok=True)

    def record_path(self, job_id: str) -> Path:
        if not JOB_ID.match(job_id):
            raise KeyError(job_id)
        return self.jobs / f"{job_id}.json"

    def zarr_path(self, job_id: str) -> Path:
        return self.record_path(job_id).with_suffix(".zarr")

    def read(self, job_id: str) -> dict[str, Any]:
        p = self.record_path(job_id)
        if not p.exists():
            raise KeyError(job_id)
        return json.loads(p.read_text())

    def write(self, job_id: str, record: dict[str, Any]) -> None:
        p = self.record_path(job_id)
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record, indent=1, default=str))
        os.replace(tmp, p)  # readers never see half a record

    def update(self, job_id: str, **changes: Any) -> dict[str, Any]:
        rec = self.read(job_id)
        rec.update(changes, updated_at=time.time())
        self.write(job_id, rec)
        return rec

    def list(self) -> list[dict[str, Any]]:
        out = []
        for p in sorted(self.jobs.glob("*.json"), key=lambda q: q.stat().st_mtime):
            try:
                out.append(json.loads(p.read_text()))
            except (OSError, ValueError):
                continue
        return out


def run_job_task(
    results_dir: str,
    job_id: str,
    slide: str,
    cards: list[dict[str, Any]],
    settings: dict[str, Any],
    app_name: str,
    rates: Any = None,  # ensemble.TileRates, or None for the raw share of malignant tiles
) -> dict[str, Any]:
    """Body of the Ray task that analyses one submitted slide."""
    from ..pipeline import AnalysisSettings, analyze_slide

    store = JobStore(results_dir)
    started = time.time()
    store.update(job_id, status="running", started_at=started)
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.time()
        if now - last[0] < 0.5 and done < total:
            return
        last[0] = now
        rate = done / max(now - started, 1e-6)
        store.update(
            job_id,
            progress={
                "done": done,
                "total": total,
                "eta_s": round((total - done) / rate, 1) if rate > 0 else None,
            },
        )

    try:
        result = analyze_slide(
            slide,
            store.zarr_path(job_id),
            cards,
            AnalysisSettings(**settings),
            app_name=app_name,
            progress=False,
            on_progress=progress,
            extra_attrs={"job_id": job_id},
            rates=rates,
        )
    except Exception as exc:
        store.update(job_id, status="failed", error=f"{type(exc).__name__}: {exc}")
        raise
    result["job_id"] = job_id
    n = result["n_tiles"] + result["n_excluded"]
    store.update(
        job_id,
        status="done",
        finished_at=time.time(),
        result=result,
        progress={"done": n, "total": n, "eta_s": 0},
    )
    return result
