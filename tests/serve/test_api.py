from __future__ import annotations

import csv
import hashlib
import io
import shutil

import numpy as np
import pytest
from PIL import Image

from tests.conftest import API_CONFIDENCE, DATA, MANIFEST, RELEASE, SLIDES
from tests.serve.conftest import submit, wait_done


def test_health_models_docs(api, models_dir) -> None:
    from wbc_ray.models import int8_path
    from wbc_ray.serve.app import config_args

    h = api.get("/health").json()
    assert h["status"] == "ok" and sorted(h["models"]) == ["inception_v3", "mobilenet", "xception"]
    m = api.get("/models").json()
    assert {x["name"] for x in m["models"]} == {"inception_v3", "mobilenet", "xception"}
    assert all(len(x["version"]) == 12 for x in m["models"])
    assert {"mobilenet", "xception", "inception_v3", "Ensemble", "Ingress"} <= set(m["deployments"])
    # Replicas configured for int8 run it when an int8 model exists, else serve float and say why.
    wanted = config_args()
    for st in m["stats"]:
        if wanted.precision_of(st["name"]) == "int8":
            if int8_path(models_dir, st["name"]).exists():
                assert st["precision"] == "int8" and st["note"] == ""
            else:
                assert st["precision"] != "int8" and "wbc-ray quantize" in st["note"]
    assert api.get("/docs").status_code == 200
    paths = api.get("/openapi.json").json()["paths"]
    assert {"/jobs", "/jobs/upload", "/jobs/{job_id}", "/score", "/models", "/health"} <= set(paths)


def test_upload_job_end_to_end(api, mixed_slide) -> None:
    with open(mixed_slide, "rb") as fh:
        r = api.post("/jobs/upload", files={"file": ("mixed.tiff", fh, "image/tiff")})
    assert r.status_code == 202, r.text
    job = r.json()["job_id"]
    st = wait_done(api, job)
    assert st["status"] == "done", st
    assert st["progress"]["done"] == st["progress"]["total"] > 50 and st["progress"]["fraction"] == 1.0
    res = api.get(f"/jobs/{job}/result").json()
    assert res["verdict"] in {"malignant", "benign", "indeterminate"}
    lo, hi = res["interval"]
    assert lo <= res["malignant_fraction"] <= hi and res["tau"] == 0.2
    assert res["confidence"] == API_CONFIDENCE  # the app's settings file (`--config`) reached it
    assert {m["name"] for m in res["models"]} == {"inception_v3", "mobilenet", "xception"}
    assert res["slide"] == "mixed.tiff" and res["timings"]["total_s"] > 0
    png = api.get(f"/jobs/{job}/heatmap.png")
    assert png.headers["content-type"] == "image/png"
    img = Image.open(io.BytesIO(png.content))
    assert img.size[0] > 100 and np.asarray(img).std() > 5
    gj = api.get(f"/jobs/{job}/geojson").json()
    assert len(gj["features"]) == res["n_tiles"] + res["n_excluded"] + res["n_rejected"]
    assert res["domain"]["checked"] and res["stain"] == "none" and res["out_of_range_share"] <= 0.2
    f0 = gj["features"][0]
    assert f0["properties"]["objectType"] == "detection"
    assert f0["properties"]["classification"]["name"] in {"benign", "malignant"}
    assert {"fused", "p_mobilenet", "p_xception", "p_inception_v3"} <= set(f0["properties"]["measurements"])
    rows = list(csv.DictReader(io.StringIO(api.get(f"/jobs/{job}/tiles.csv").text)))
    assert len(rows) == len(gj["features"])
    calls = sum(r["call"] == "malignant" for r in rows)
    assert calls == res["n_malignant"]
    # MobileNet runs in its default precision; Xception in int8, which has no gradients, so its
    # float weights explain.
    # By default each model explains the class it called for the tile (from the stored scores).
    for model in ("mobilenet", "xception"):
        cam = api.get(f"/jobs/{job}/tiles/0/gradcam.png", params={"model": model})
        assert cam.status_code == 200 and cam.content[:4] == b"\x89PNG", cam.text
        p = float(rows[0][f"p_{model}"])
        assert float(cam.headers["X-Model-Probability-Malignant"]) == pytest.approx(p, abs=1e-4)
        assert cam.headers["X-Explained-Class"] == ("malignant" if p >= 0.5 else "benign")
        assert cam.headers["X-Evidence"] in {"some", "none"}
    other = api.get(f"/jobs/{job}/tiles/0/gradcam.png", params={"model": "mobilenet", "target": "malignant"})
    assert other.status_code == 200 and other.headers["X-Explained-Class"] == "malignant"
    bad = api.get(f"/jobs/{job}/tiles/0/gradcam.png", params={"model": "mobilenet", "target": "both"})
    assert bad.status_code == 422
    assert api.get(f"/jobs/{job}/tiles/0/gradcam.png", params={"model": "resnet"}).status_code == 404
    assert api.get(f"/jobs/{job}/tiles/99999/gradcam.png", params={"model": "mobilenet"}).status_code == 404


def test_score_patches(api) -> None:
    with open(MANIFEST) as fh:
        rows = list(csv.DictReader(fh))
    pick = [r for r in rows if r["split"] == "test"]
    ben = next(r for r in pick if r["label"] == "benign")
    mal = next(r for r in pick if r["label"] == "malignant")
    files = [
        ("files", (f"{r['label']}.jpg", (MANIFEST.parent / r["path"]).read_bytes(), "image/jpeg"))
        for r in (ben, mal)
    ]
    out = api.post("/score", files=files).json()
    assert [p["name"] for p in out["patches"]] == ["benign.jpg", "malignant.jpg"]
    for p in out["patches"]:
        assert set(p["models"]) == {"inception_v3", "mobilenet", "xception"}
        for probs in p["models"].values():
            assert probs["benign"] + probs["malignant"] == pytest.approx(1, abs=1e-4)
        assert 0 <= p["fused"] <= 1
    vote = api.post(
        "/score",
        params={"fusion": "vote"},
        files=[("files", ("a.jpg", (MANIFEST.parent / mal["path"]).read_bytes(), "image/jpeg"))],
    ).json()
    # A share of three votes (sent as float32, so 2/3 arrives as 0.6666667).
    fused = vote["patches"][0]["fused"]
    assert vote["fusion"] == "vote" and min(abs(fused - k / 3) for k in range(4)) < 1e-6


def test_score_checks_each_patch_against_the_domain_and_takes_a_scale(api) -> None:
    from wbc_ray.domain import FEATURE_PX, load_domain, read_field

    with open(MANIFEST) as fh:
        test_rows = [r for r in csv.DictReader(fh) if r["split"] == "test"]
    pbc = DATA / "pbc" / "labels.csv"
    with open(pbc) as fh:
        cell = pbc.parent / next(csv.DictReader(fh))["path"]
    # A test image the release's own check puts in range (97 % of them are).
    check = load_domain(RELEASE).check
    near = next(
        MANIFEST.parent / r["path"]
        for r in test_rows
        if not check.out_of_range(
            check.distances(read_field(MANIFEST.parent / r["path"], None, FEATURE_PX)[None])
        )[0]
    )
    files = [
        ("files", ("lab.jpg", near.read_bytes(), "image/jpeg")),
        ("files", ("pbc.jpg", cell.read_bytes(), "image/jpeg")),
    ]
    out = api.post("/score", files=files).json()
    assert out["threshold"] == pytest.approx(check.threshold, abs=1e-3) and out["stain"] == "none"
    assert "no mpp given" in out["scale"]
    lab, other = out["patches"]
    assert lab["qc"] == "ok" and lab["out_of_range"] is False and lab["domain"] < out["threshold"]
    assert other["out_of_range"] is True
    scaled = api.post("/score", params={"mpp": 0.1, "stain": "reinhard"}, files=files[1:]).json()
    assert "rescaled from 0.1 um/px" in scaled["scale"] and scaled["stain"] == "reinhard"
    assert scaled["patches"][0]["out_of_range"] is True
    assert api.post("/score", params={"stain": "vahadane"}, files=files[1:]).status_code == 422
    assert api.post("/score", params={"mpp": -1}, files=files[1:]).status_code == 422


def test_interactive_scoring_matches_bulk(server) -> None:
    """Patches a person waits for skip the slide-tile queue (`interactive`); the numbers are the
    bulk path's. 150 tiles: more than the test app's batch cap and two compute steps."""
    from wbc_ray.lifecycle import load_images
    from wbc_ray.manifest import read_manifest
    from wbc_ray.serve import ensemble_handle

    items = read_manifest(MANIFEST, "test")[:150]
    # Tiles come at the largest input side; a smaller model resizes them down itself.
    size = max(c["input_size"] for c in ensemble_handle().models.remote().result())
    tiles = load_images(items, size)[0].numpy()
    h = ensemble_handle()
    bulk = h.score.remote(tiles).result()
    now = h.score.remote(tiles, interactive=True).result()
    assert bulk["probs"].shape == (150, 3, 2)
    np.testing.assert_allclose(now["probs"], bulk["probs"], atol=1e-5)
    np.testing.assert_array_equal(now["call"], bulk["call"])


def raw_upload(api, filename: bytes, content: bytes):  # type: ignore[no-untyped-def]
    """A multipart upload written by hand, so the file name reaches the server byte for byte."""
    b = b"wbcboundary1234"
    body = (
        b"--"
        + b
        + b'\r\nContent-Disposition: form-data; name="file"; filename="'
        + filename
        + b'"\r\nContent-Type: application/octet-stream\r\n\r\n'
        + content
        + b"\r\n--"
        + b
        + b"--\r\n"
    )
    return api.post(
        "/jobs/upload", content=body, headers={"Content-Type": "multipart/form-data; boundary=" + b.decode()}
    )


def _digest(results_dir, job: str) -> str:
    import zarr

    g = zarr.open_group(str(results_dir / "jobs" / f"{job}.zarr"), mode="r")
    h = hashlib.sha256()
    for name in ("coords", "fused", "probs"):
        h.update(np.ascontiguousarray(g[name][:]).tobytes())
    return h.hexdigest()


def test_three_at_once_match_one_at_a_time(api, slide_dir, test_items, results_dir) -> None:
    from wbc_ray.slides import compose_slide

    paths = []
    for i, frac in enumerate((0.0, 0.5, 1.0)):
        p = slide_dir / f"trio_{i}.tiff"
        compose_slide(test_items, p, grid=(6, 7), malignant_fraction=frac, seed=20 + i)
        paths.append(p)
    alone = []
    for p in paths:
        job = submit(api, p)
        assert wait_done(api, job)["status"] == "done"
        alone.append(api.get(f"/jobs/{job}/result").json())
    jobs = [submit(api, p) for p in paths]
    together = []
    for job in jobs:
        assert wait_done(api, job)["status"] == "done"
        together.append(api.get(f"/jobs/{job}/result").json())
    for a, b in zip(alone, together, strict=True):
        assert (a["verdict"], a["n_tiles"], a["n_malignant"]) == (
            b["verdict"],
            b["n_tiles"],
            b["n_malignant"],
        )
        assert a["malignant_fraction"] == pytest.approx(b["malignant_fraction"])
    listed = {j["job_id"] for j in api.get("/jobs").json()}
    assert set(jobs) <= listed


def test_bad_input_gets_4xx_and_the_service_stays_up(
    api, mixed_slide, slide_dir, results_dir, tmp_path
) -> None:
    # A job runs while the bad requests come in; it must finish, and an earlier result stay intact.
    first = submit(api, mixed_slide)
    assert wait_done(api, first)["status"] == "done"
    before = _digest(results_dir, first)
    running = submit(api, mixed_slide)
    uploads_before = sorted((results_dir / "uploads").iterdir())

    broken = {
        "unreadable.svs": (SLIDES / "openslide-python/unreadable.svs", "Bogus marker length"),
        "unopenable.tiff": (SLIDES / "openslide-python/unopenable.tiff", "Unsupported TIFF compression"),
        "small_dicom.dcm": (SLIDES / "pathml/small_dicom.dcm", "image flavor"),
        "smalltif.tif": (SLIDES / "pathml/smalltif.tif", "unsupported pixel format"),
        "small_vectra.qptiff": (SLIDES / "pathml/small_vectra.qptiff", "not a slide format"),
    }
    for name, (path, reason) in broken.items():
        r = api.post("/jobs/upload", files={"file": (name, path.read_bytes(), "application/octet-stream")})
        assert r.status_code == 422, (name, r.text)
        detail = r.json()["detail"]
        assert name in detail and reason in detail and "uploads" not in detail
    r = api.post("/jobs/upload", files={"file": ("notes.svs", b"just text\n" * 100, "text/plain")})
    assert r.status_code == 422 and "not a slide format" in r.json()["detail"]
    r = api.post("/jobs/upload", files={"file": ("big.svs", b"\0" * (9 * 2**20), "application/octet-stream")})
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    hostile = ["../../etc/passwd", "..\\..\\boot.ini", "a\x00b.svs", ("x" * 300) + ".svs", "bad\x07name.svs"]
    for name in hostile:
        r = raw_upload(api, name.encode(), b"data")
        assert r.status_code == 400, (name, r.status_code, r.text)
    r = api.post(
        "/jobs/upload", files={"file": ("präparat_血液.svs", b"not a slide", "application/octet-stream")}
    )
    assert r.status_code == 422 and "präparat_血液.svs" in r.json()["detail"]
    for path, code in {
        # What the schema says of a path (absolute, no NUL, no URI, bounded) is a 422 naming it.
        "../../etc/passwd": 422,
        "/tmp/../../etc/passwd": 403,
        "/etc/passwd": 403,
        "/nope/slide.svs": 403,  # outside the slide folders, decided before looking at the disk
        "bad\x00.svs": 422,
        "s3://bucket/x.svs": 422,
        "/" + "a" * 5000: 422,
    }.items():
        r = api.post("/jobs", json={"path": path})
        assert r.status_code == code, (path, r.status_code, r.text)
    for bad in ("0123", "../../x", "zzzzzzzzzzzzzzzz"):
        assert api.get(f"/jobs/{bad}").status_code == 404
    r = api.post("/score", files=[("files", ("x.png", b"not an image", "image/png"))])
    assert r.status_code == 422 and "x.png" in r.json()["detail"]
    assert api.post("/jobs", json={"path": str(mixed_slide), "fusion": "max"}).status_code == 422
    # A unicode name with real slide content is fine.
    uni = slide_dir / "präparat.tiff"
    shutil.copy(mixed_slide, uni)
    ok = api.post("/jobs", json={"path": str(uni)})
    assert ok.status_code == 202

    assert api.get("/health").json()["status"] == "ok"
    assert wait_done(api, running)["status"] == "done"
    assert wait_done(api, ok.json()["job_id"])["status"] == "done"
    assert _digest(results_dir, first) == before
    assert (
        api.get(f"/jobs/{first}/result").json()["verdict"]
        == api.get(f"/jobs/{running}/result").json()["verdict"]
    )
    assert sorted((results_dir / "uploads").iterdir()) == uploads_before  # refused uploads are not kept
