"""Exports of a scored job: heatmap PNG over the thumbnail, QuPath GeoJSON, CSV."""

from __future__ import annotations

import csv
import io
import json
import os
import time
from typing import Any

import numpy as np
from PIL import Image

from ._zarr import array, attrs, open_store


def _colormap(v: np.ndarray) -> np.ndarray:
    """Blue (benign, 0) -> yellow -> red (malignant, 1); RGB uint8."""
    stops = np.array([[49, 54, 149], [116, 173, 209], [255, 255, 191], [244, 109, 67], [165, 0, 38]], float)
    x = np.clip(np.nan_to_num(v, nan=0.0), 0, 1) * (len(stops) - 1)
    i = np.minimum(x.astype(int), len(stops) - 2)
    t = (x - i)[..., None]
    return (stops[i] * (1 - t) + stops[i + 1] * t).astype(np.uint8)


REJECTED_RGB = (110, 110, 110)  # tiles quality control rejected: grey, not a score colour
OUT_OF_RANGE_RGB = (230, 0, 230)  # outline of tiles the domain check flags
EXCLUDED_RGB = (225, 225, 225)  # tiles of mostly empty glass: scored, not counted


def excluded_tiles(g: Any, meta: dict[str, Any]) -> np.ndarray:
    """Per tile: whether it has too little tissue to count in the slide's share (mostly glass);
    none for results from before the rule.
    """
    tissue = np.asarray(array(g, "tissue")[:])
    return tissue < float((meta.get("result") or {}).get("min_tissue_counted") or 0.0)


def _screening(g: Any, meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Per tile: QC reason code, domain distance, and the reason names (empty arrays for stores
    from before screening).
    """
    n = int(array(g, "coords").shape[0])
    qc = np.asarray(array(g, "qc")[:]) if "qc" in g else np.zeros(n, np.uint8)
    dist = np.asarray(array(g, "domain")[:]) if "domain" in g else np.full(n, np.nan, np.float32)
    return qc, dist, list(meta.get("qc_reasons", ["ok"]))


def _threshold(meta: dict[str, Any]) -> float:
    t = ((meta.get("result") or {}).get("domain") or {}).get("threshold")
    return float("inf") if t is None else float(t)


def heatmap_png(path: str | os.PathLike[str], alpha: float = 0.55) -> bytes:
    """Fused malignant score per tile over the slide thumbnail (off-tissue left clear); tiles
    quality control rejected in grey, tiles outside the domain check's range outlined in magenta.
    """
    g = open_store(path)
    thumb = Image.fromarray(np.asarray(array(g, "thumbnail")[:]))
    heat = np.asarray(array(g, "heatmap")[:])
    a = attrs(g)
    tiling = a["tiling"]
    dims = a["slide"]["dimensions"]
    s = thumb.width / float(dims[0])  # thumbnail pixels per level-0 pixel
    stride = float(tiling["stride0"]) * s
    size = float(tiling["size0"]) * s
    rgba = np.zeros((thumb.height, thumb.width, 4), np.uint8)
    colors = _colormap(heat)

    def box(r: int, c: int) -> tuple[int, int, int, int]:
        return int(c * stride), int(r * stride), int(c * stride + size) + 1, int(r * stride + size) + 1

    for r, c in zip(*np.nonzero(~np.isnan(heat)), strict=True):
        x0, y0, x1, y1 = box(r, c)
        rgba[y0:y1, x0:x1, :3] = colors[r, c]
        rgba[y0:y1, x0:x1, 3] = int(255 * alpha)
    qc, dist, _ = _screening(g, a)
    cells = np.asarray(array(g, "cells")[:])
    far = np.nan_to_num(dist, nan=-np.inf) > _threshold(a)
    excluded = excluded_tiles(g, a)
    for i in np.flatnonzero((qc != 0) | far | excluded):
        x0, y0, x1, y1 = box(int(cells[i, 0]), int(cells[i, 1]))
        if qc[i] or excluded[i]:
            rgba[y0:y1, x0:x1, :3] = REJECTED_RGB if qc[i] else EXCLUDED_RGB
            rgba[y0:y1, x0:x1, 3] = int(255 * alpha)
        else:  # an outline one thumbnail pixel wide, the score colour inside stays
            for sl in (
                np.s_[y0 : y0 + 1, x0:x1],
                np.s_[y1 - 1 : y1, x0:x1],
                np.s_[y0:y1, x0 : x0 + 1],
                np.s_[y0:y1, x1 - 1 : x1],
            ):
                rgba[sl] = (*OUT_OF_RANGE_RGB, 255)
    out = Image.alpha_composite(thumb.convert("RGBA"), Image.fromarray(rgba, "RGBA")).convert("RGB")
    buf = io.BytesIO()
    out.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


# A reviewer's decision on a tile, as the exports take it: tile -> {"decision", "label" (the
# reviewer's class, None where not assessable), "reviewer", "at" (epoch seconds), "reason"}.
Reviews = dict[int, dict[str, Any]]
REVIEW_COLUMNS = ("review", "reviewed_class", "reviewer", "reviewed_at", "review_reason")


def _review_fields(review: dict[str, Any] | None) -> dict[str, Any]:
    if review is None:
        return dict.fromkeys(REVIEW_COLUMNS, "")
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(review["at"])))
    return {
        "review": review["decision"],
        "reviewed_class": review["label"] or "not_assessable",
        "reviewer": review["reviewer"],
        "reviewed_at": at,
        "review_reason": review.get("reason") or "",
    }


def _rows(
    path: str | os.PathLike[str], reviews: Reviews | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    g = open_store(path)
    coords = np.asarray(array(g, "coords")[:])
    tissue = np.asarray(array(g, "tissue")[:])
    fused = np.asarray(array(g, "fused")[:])
    probs = np.asarray(array(g, "probs")[:])
    meta = attrs(g)
    names = [m["name"] for m in meta.get("models", [])]
    threshold = float(meta["result"]["tile_threshold"])  # a finished job's result always has it
    size = float(meta["tiling"]["size0"])
    qc, dist, reasons = _screening(g, meta)
    limit = _threshold(meta)
    rows = []
    excluded = excluded_tiles(g, meta)
    for i in range(len(coords)):
        call = (
            "rejected"
            if qc[i]
            else "excluded"
            if excluded[i]
            else ("malignant" if fused[i] >= threshold else "benign")
        )
        row = {
            "tile": i,
            "x": int(coords[i, 0]),
            "y": int(coords[i, 1]),
            "size": size,
            "tissue": round(float(tissue[i]), 4),
            "fused": round(float(fused[i]), 5),
            "call": call,
            "qc": reasons[qc[i]] if qc[i] < len(reasons) else str(qc[i]),
            "domain": round(float(dist[i]), 4),
            "out_of_range": int(bool(dist[i] > limit)),
        }
        for j, n in enumerate(names):
            row[f"p_{n}"] = round(float(probs[i, j, 1]), 5)
        if reviews is not None:
            row.update(_review_fields(reviews.get(i)))
        rows.append(row)
    return meta, rows


def tiles_csv(path: str | os.PathLike[str], reviews: Reviews | None = None) -> str:
    """One row per tile; with `reviews`, each tile's review columns (empty where not reviewed)."""
    _, rows = _rows(path, reviews)
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    else:
        buf.write("tile,x,y,size,tissue,fused,call\n")
    return buf.getvalue()


def geojson(path: str | os.PathLike[str], reviews: Reviews | None = None) -> dict[str, Any]:
    """Tiles as QuPath detections (level-0 pixel coordinates) with class and measurements. A
    reviewed tile's class is the reviewer's (QuPath keeps it), the models' call beside it.
    """
    _, rows = _rows(path, reviews)
    colors = {
        "malignant": [200, 30, 30],
        "benign": [40, 90, 200],
        "rejected": list(REJECTED_RGB),
        "excluded": list(EXCLUDED_RGB),
        "not_assessable": [150, 150, 60],
    }
    feats = []
    for r in rows:
        name = r.get("reviewed_class") or r["call"]
        review = {k: r[k] for k in REVIEW_COLUMNS if r.get("review")}
        x, y, s = r["x"], r["y"], r["size"]
        feats.append(
            {
                "type": "Feature",
                "id": f"tile-{r['tile']}",
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[x, y], [x + s, y], [x + s, y + s], [x, y + s], [x, y]]],
                },
                "properties": {
                    "objectType": "detection",
                    "classification": {"name": name, "color": colors[name]},
                    "model_call": r["call"],
                    **review,
                    "measurements": {
                        k: v
                        for k, v in r.items()
                        if (k in {"fused", "tissue", "domain", "out_of_range"} or k.startswith("p_"))
                        and v == v  # QuPath takes no NaN: a rejected tile has no scores
                    },
                    **({"qc": r["qc"]} if r["qc"] != "ok" else {}),
                },
            }
        )
    return {"type": "FeatureCollection", "features": feats}


def geojson_text(path: str | os.PathLike[str], reviews: Reviews | None = None) -> str:
    """`geojson` as JSON text."""
    return json.dumps(geojson(path, reviews))


def overlay_png(tile: np.ndarray, cam: np.ndarray) -> bytes:
    """A tile beside its Grad-CAM overlay, 2x enlarged, as PNG bytes."""
    heat = _colormap(cam).astype(np.float32)
    a = (0.25 + 0.5 * cam[..., None]).astype(np.float32)
    mix = (tile.astype(np.float32) * (1 - a) + heat * a).astype(np.uint8)
    side = np.concatenate([tile, mix], axis=1)
    buf = io.BytesIO()
    Image.fromarray(side).resize((side.shape[1] * 2, side.shape[0] * 2), Image.Resampling.NEAREST).save(
        buf, "PNG"
    )
    return buf.getvalue()
