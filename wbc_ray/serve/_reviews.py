"""Pathologists' review of the calls: what a decision and a sign-off carry, a slide's review
summary, and the reviewed tiles written out as a labelled image set that `wbc-ray adapt` and
`wbc-ray train` take.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from ..ensemble import VERDICT_MEANING
from ..manifest import CLASSES
from ._db import ServiceDB
from ._jobs import JobPaths

MANIFEST = "manifest.csv"


class ReviewBody(BaseModel):
    """A reviewer's decision on one tile."""

    decision: Literal["agree", "benign", "malignant", "not_assessable"] = Field(
        description="agree with the models' call, or reclassify the tile"
    )
    reason: str | None = Field(None, max_length=500, description="why (optional)")


class SignoffBody(BaseModel):
    """A reviewer's own verdict on the whole slide, beside the models'."""

    verdict: Literal[tuple(VERDICT_MEANING)] = Field(  # type: ignore[valid-type]
        description="the reviewer's verdict (the models' verdict words)"
    )
    note: str | None = Field(None, max_length=2000)


def review_summary(reviews: dict[int, dict[str, Any]], signoff: dict[str, Any] | None) -> dict[str, Any]:
    """How many calls were reviewed, agreed, overturned (the reviewer's class is the other one)
    and judged not assessable; the sign-off, if any.
    """
    overturned = sum(
        1
        for r in reviews.values()
        if r["label"] is not None and r["model_call"] in CLASSES and r["label"] != r["model_call"]
    )
    return {
        "reviewed": len(reviews),
        "agreed": sum(r["decision"] == "agree" for r in reviews.values()),
        "overturned": overturned,
        "not_assessable": sum(r["label"] is None for r in reviews.values()),
        "signoff": signoff,
    }


def export_reviewed(
    db: ServiceDB, paths: JobPaths, jobs: list[dict[str, Any]], out: Path, default_mpp: float | None
) -> dict[str, Any]:
    """Write the reviewed tiles of `jobs` (finished ones) to `out`: `images/<job>_<tile>.png` as
    the models saw them (their tile, at their scale) and `manifest.csv` (path, label, mpp, then
    where each came from). Tiles judged not assessable are left out. The counts written.
    """
    from PIL import Image

    from ..slides import SlideError, open_slide, read_tile
    from ..store import array, attrs, open_store

    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    for job in jobs:
        reviews = {t: r for t, r in db.reviews(job["job_id"]).items() if r["label"] is not None}
        if not reviews or job["status"] != "done":
            continue
        g = open_store(paths.store(job["job_id"]))
        meta = attrs(g)
        t = meta["tiling"]
        mpp = float(meta["result"].get("tile_mpp") or 0) or None
        coords = np.asarray(array(g, "coords")[:])
        try:
            slide = open_slide(job["path"], default_mpp=default_mpp)
        except SlideError as exc:
            skipped.append(f"{job['job_id']} ({job['slide']}): {exc.reason}")
            continue
        with slide:
            for tile, r in sorted(reviews.items()):
                x, y = (int(v) for v in coords[tile])
                px = read_tile(slide, x, y, int(t["level"]), int(t["read_px"]), int(t["tile_px"]))
                name = f"{job['job_id']}_{tile}.png"
                Image.fromarray(px).save(images / name)
                rows.append(
                    {
                        "path": f"images/{name}",
                        "label": r["label"],
                        "mpp": "" if mpp is None else mpp,
                        "job_id": job["job_id"],
                        "tile": tile,
                        "slide": job["slide"],
                        "model_call": r["model_call"],
                        "decision": r["decision"],
                        "reviewer": r["reviewer"],
                    }
                )
    tmp = out / f".{MANIFEST}.{os.getpid()}"
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(
            fh,
            fieldnames=["path", "label", "mpp", "job_id", "tile", "slide", "model_call", "decision"]
            + ["reviewer"],
        )
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, out / MANIFEST)
    per_class = {c: sum(r["label"] == c for r in rows) for c in CLASSES}
    return {"tiles": len(rows), "per_class": per_class, "skipped": skipped, "manifest": str(out / MANIFEST)}
