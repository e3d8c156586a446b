"""Review over REST: tiles and the review queue, decisions kept with who and when, revisable and
audited, the sign-off, the reviews in every export, and the corrections turned into a labelled
image set that `wbc-ray adapt` learns from (the whole loop, on a slide from "another lab")."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import zipfile

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import MANIFEST
from tests.serve.conftest import LAB_FIELDS, submit, wait_done


@pytest.fixture(scope="module")
def reviewed(server, slide_dir, test_items):
    """A finished job of a 6 x 8-field slide whose tile grid leaves strips of glass at its edges,
    reviewed by the tests in this module in order."""
    from wbc_ray.slides import compose_slide

    slide = slide_dir / "reviewed.tiff"
    compose_slide(test_items, slide, grid=(6, 8), malignant_fraction=0.25, seed=7)
    with httpx.Client(base_url=server, timeout=60) as api:
        job = submit(api, slide)
        assert wait_done(api, job)["status"] == "done"
    return job


def test_tiles_and_the_review_queue(api, reviewed) -> None:
    rows = list(csv.DictReader(io.StringIO(api.get(f"/jobs/{reviewed}/tiles.csv").text)))
    scored = [r for r in rows if r["call"] != "rejected"]
    t = scored[3]
    rec = api.get(f"/jobs/{reviewed}/tiles/{t['tile']}").json()
    assert (rec["x"], rec["y"], rec["call"]) == (int(t["x"]), int(t["y"]), t["call"])
    assert rec["fused"] == pytest.approx(float(t["fused"]), abs=1e-4)
    assert set(rec["models"]) == {"mobilenet", "xception", "inception_v3"}
    assert rec["review"] is None
    # The tile under a point: the one covering it, whatever the point inside it.
    size = rec["size"]
    at = api.get(f"/jobs/{reviewed}/tiles", params={"x": rec["x"] + size / 2, "y": rec["y"] + size / 2})
    assert at.json()["tile"] == rec["tile"]
    assert api.get(f"/jobs/{reviewed}/tiles", params={"x": 1, "y": 1}).status_code == 404  # the margin
    assert api.get(f"/jobs/{reviewed}/tiles/{len(rows)}").status_code == 404

    # Strips of mostly empty glass (a tile a third on the fields) are scored but not counted.
    glass = [r for r in rows if float(r["tissue"]) < 0.5 and r["qc"] == "ok"]
    assert glass and all(r["call"] == "excluded" for r in glass)
    result = api.get(f"/jobs/{reviewed}/result").json()
    assert result["min_tissue_counted"] == 0.5 and result["n_excluded"] >= len(glass)
    counted = [r for r in rows if r["call"] in ("benign", "malignant")]
    assert result["n_tiles"] == len(counted)

    q = api.get(f"/jobs/{reviewed}/queue", params={"per_group": 5}).json()
    items = q["items"]
    assert not {it["tile"] for it in items} & {int(r["tile"]) for r in glass}
    groups = [it["group"] for it in items]
    assert groups == sorted(groups, key=["suspicious", "uncertain", "out_of_range"].index)
    assert len({it["tile"] for it in items}) == len(items)  # each tile once
    suspicious = [it for it in items if it["group"] == "suspicious"]
    assert suspicious and all(it["call"] == "malignant" for it in suspicious)
    assert [it["fused"] for it in suspicious] == sorted((it["fused"] for it in suspicious), reverse=True)
    called = [float(r["fused"]) for r in scored if r["call"] == "malignant"]
    assert suspicious[0]["fused"] == pytest.approx(max(called), abs=1e-4)
    # Ties on the fused score (the rank fusion saturates) are ordered by the models' mean.
    for a, b in zip(suspicious, suspicious[1:], strict=False):
        if a["fused"] == b["fused"]:
            assert np.mean(list(a["models"].values())) >= np.mean(list(b["models"].values())) - 1e-9
    uncertain = [it for it in items if it["group"] == "uncertain"]
    gaps = [abs(it["fused"] - q["tile_threshold"]) for it in uncertain]
    assert gaps == sorted(gaps)


def test_decisions_are_kept_revisable_and_in_every_export(api, reviewed, results_dir) -> None:
    rows = list(csv.DictReader(io.StringIO(api.get(f"/jobs/{reviewed}/tiles.csv").text)))
    benign = next(int(r["tile"]) for r in rows if r["call"] == "benign")
    malignant = next(int(r["tile"]) for r in rows if r["call"] == "malignant")
    other = next(int(r["tile"]) for r in rows if r["call"] == "benign" and int(r["tile"]) != benign)

    r = api.put(f"/jobs/{reviewed}/tiles/{benign}/review", json={"decision": "agree"})
    assert r.status_code == 200 and r.json()["review"]["label"] == "benign"
    assert r.json()["review"]["reviewer"] == "local"
    r = api.put(f"/jobs/{reviewed}/tiles/{malignant}/review", json={"decision": "benign", "reason": "smudge"})
    assert r.json()["summary"]["overturned"] == 1
    # Revised: the last decision counts, every version stays in the history.
    api.put(f"/jobs/{reviewed}/tiles/{other}/review", json={"decision": "not_assessable"})
    r = api.put(f"/jobs/{reviewed}/tiles/{other}/review", json={"decision": "malignant", "reason": "a blast"})
    s = r.json()["summary"]
    assert (s["reviewed"], s["agreed"], s["overturned"], s["not_assessable"]) == (3, 1, 2, 0)
    assert api.put(f"/jobs/{reviewed}/tiles/{other}/review", json={"decision": "maybe"}).status_code == 422
    assert api.put(f"/jobs/{reviewed}/tiles/99999/review", json={"decision": "agree"}).status_code == 404

    listed = api.get(f"/jobs/{reviewed}/reviews").json()
    assert [h["decision"] for h in listed["history"] if h["tile"] == other] == ["not_assessable", "malignant"]
    assert api.get(f"/jobs/{reviewed}/tiles/{other}").json()["review"]["reason"] == "a blast"

    r = api.put(f"/jobs/{reviewed}/signoff", json={"verdict": "indeterminate", "note": "recut"})
    assert r.status_code == 200
    assert api.put(f"/jobs/{reviewed}/signoff", json={"verdict": "fine"}).status_code == 422
    result = api.get(f"/jobs/{reviewed}/result").json()
    assert result["review"]["signoff"]["verdict"] == "indeterminate"
    assert result["review"]["overturned"] == 2 and result["verdict"] in (
        "benign",
        "malignant",
        "indeterminate",
    )

    # The exports carry the reviews (built again for the new revision).
    rows = {
        int(r["tile"]): r for r in csv.DictReader(io.StringIO(api.get(f"/jobs/{reviewed}/tiles.csv").text))
    }
    assert (rows[malignant]["review"], rows[malignant]["reviewed_class"]) == ("benign", "benign")
    assert rows[malignant]["call"] == "malignant" and rows[malignant]["review_reason"] == "smudge"
    assert rows[benign]["reviewed_class"] == "benign"
    untouched = next(t for t in rows if t not in (benign, malignant, other))
    assert rows[untouched]["review"] == rows[untouched]["reviewed_class"] == ""
    feats = {f["id"]: f for f in api.get(f"/jobs/{reviewed}/geojson").json()["features"]}
    moved = feats[f"tile-{malignant}"]["properties"]
    assert moved["classification"]["name"] == "benign" and moved["model_call"] == "malignant"
    assert feats[f"tile-{other}"]["properties"]["classification"]["name"] == "malignant"
    exports = results_dir / "jobs" / f"{reviewed}.exports"
    assert len(list(exports.glob("tiles.r*.csv"))) == 1  # earlier revisions' files removed
    audit = (results_dir / "audit.log").read_text() if (results_dir / "audit.log").exists() else ""
    assert not audit or '"action": "review"' in audit


def test_the_reviewed_tiles_export_as_a_labelled_image_set(api, reviewed, tmp_path, results_dir) -> None:
    r = api.get("/reviews/export.zip", params={"job_id": reviewed})
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        zf.extractall(tmp_path)
    from wbc_ray.manifest import read_manifest

    items = read_manifest(tmp_path / "manifest.csv")
    assert sorted(it.label for it in items) == [0, 0, 1]  # agree benign, overturned to benign, to malignant
    result = api.get(f"/jobs/{reviewed}/result").json()
    for it in items:
        with Image.open(it.path) as im:  # the models' tile, at their scale
            assert im.size == (result["tile_px"], result["tile_px"])
        assert it.mpp == pytest.approx(result["tile_mpp"], rel=1e-3)
    assert api.get("/reviews/export.zip", params={"job_id": "0" * 16}).status_code == 404

    # The CLI writes the same set from the service's results folder.
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "wbc_ray.cli", "review", "export", "--out", str(out)]
    args = [*cmd, "--results", str(results_dir), "--job", reviewed]
    run = subprocess.run(args, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "3 reviewed tiles (2 benign, 1 malignant)" in run.stdout
    assert "wbc-ray adapt --manifest" in run.stdout
    assert (out / "manifest.csv").read_text() == (tmp_path / "manifest.csv").read_text()
    again = subprocess.run([*cmd, "--results", str(results_dir)], capture_output=True, text=True)
    assert again.returncode != 0 and "is not empty" in again.stderr


# ---- the loop: a slide from another lab, reviewed, exported, adapted -------------------------------


def test_corrections_teach_the_models(api, other_lab_slide, models_dir, tmp_path) -> None:
    """Analyse another lab's slide, overturn the wrong calls through the API, export the reviewed
    tiles, adapt on them: the adapted release calls the overturned tiles the reviewer's way."""
    from wbc_ray.domain import read_fields
    from wbc_ray.manifest import read_manifest
    from wbc_ray.models import load_release
    from wbc_ray.training import AdaptConfig, adapt, fused_score

    slide, truth = other_lab_slide
    job = submit(api, slide)
    assert wait_done(api, job)["status"] == "done"
    rows = list(csv.DictReader(io.StringIO(api.get(f"/jobs/{job}/tiles.csv").text)))
    labels = _field_labels(truth, rows)
    overturned = []
    for r in rows:
        tile, want = int(r["tile"]), labels.get(int(r["tile"]))
        if want is None or r["call"] == "rejected":
            continue
        decision = "agree" if r["call"] == want else want
        api.put(f"/jobs/{job}/tiles/{tile}/review", json={"decision": decision}).raise_for_status()
        if decision != "agree":
            overturned.append(tile)
    # The release reads these blasts wrong: many of the malignant tiles are overturned (12 here).
    assert len(overturned) >= LAB_FIELDS // 3, len(overturned)

    data = tmp_path / "reviewed"
    with zipfile.ZipFile(io.BytesIO(api.get("/reviews/export.zip", params={"job_id": job}).content)) as zf:
        zf.extractall(data)
    out = tmp_path / "adapted"
    adapt(
        AdaptConfig(
            str(data / "manifest.csv"), str(out), str(models_dir), str(MANIFEST), replay=32, rates_grid=0
        ),
        log=lambda _: None,
    )
    assert json.loads((out / "release.json").read_text())["lineage"]["parent"]

    items = read_manifest(data / "manifest.csv")
    with open(data / "manifest.csv") as fh:
        by_tile = {int(row["tile"]): i for i, row in enumerate(csv.DictReader(fh))}
    x = read_fields([it.path for it in items], [it.mpp for it in items], 224)

    def reviewers_way(release) -> tuple[float, float]:
        """Of the overturned tiles, and of those agreed benign, the share called as reviewed."""
        clfs = load_release(release, precision="fp32")
        called = fused_score([clf.predict(x)[:, 1] for clf in clfs.values()]) >= 0.5
        want = np.array([it.label == 1 for it in items])
        ov = [by_tile[t] for t in overturned]
        kept = [i for i, it in enumerate(items) if it.label == 0]
        return float(np.mean(called[ov] == want[ov])), float(np.mean(called[kept] == want[kept]))

    parent, adapted = reviewers_way(models_dir), reviewers_way(out)
    # Judged here in fp32 on the exported tiles (the service called them in int8 on the slide), the
    # parent already takes the reviewer's side on some; the adapted release on many more (runs here:
    # 1 -> 7 of 12, 7 -> 14 of 16), and keeps the benign cells benign.
    assert adapted[0] >= max(0.4, parent[0] + 0.25), (parent, adapted)
    assert adapted[1] >= 0.9, (parent, adapted)


def _field_labels(truth: dict, rows: list[dict]) -> dict[int, str]:
    """Each tile's class from the composed slide's truth: the field its centre falls in."""
    fields = truth["fields"]
    out = {}
    for r in rows:
        cx, cy = int(r["x"]) + float(r["size"]) / 2, int(r["y"]) + float(r["size"]) / 2
        for f in fields:
            x, y, w, hgt = f["box"]
            if x <= cx < x + w and y <= cy < y + hgt:
                out[int(r["tile"])] = f["label"]
    return out
