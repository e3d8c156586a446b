"""One service, several releases: the shipped release and a lab's adapted one side by side (an
application per release), a submission naming which, each result naming its release and
lineage, the adapted release's own domain statistics for that lab's slides.

The app is restarted here with the lab's release beside the main one (and restarted as before at
the end)."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import DATA, MANIFEST, other_lab_blast, start_app
from tests.serve.conftest import wait_done

PER_CLASS = 24


@pytest.fixture(scope="module")
def lab_release(tmp_path_factory, models_dir, test_items):
    """A release adapted to another lab's cells (PBC's normal cells, Taleqani blasts at a quarter
    of their size)."""
    from wbc_ray.manifest import read_manifest
    from wbc_ray.training import AdaptConfig, adapt

    d = tmp_path_factory.mktemp("lab_images")
    rng = np.random.default_rng(8)
    pbc = read_manifest(DATA / "pbc" / "labels.csv")
    rows = ["path,label,mpp"] + [
        f"{pbc[i].path},benign,0.1" for i in rng.permutation(len(pbc))[PER_CLASS : 2 * PER_CLASS]
    ]
    for k, it in enumerate([it for it in test_items if it.label == 1][PER_CLASS : 2 * PER_CLASS]):
        with Image.open(it.path) as im:
            x = other_lab_blast(np.asarray(im.convert("RGB")))
        Image.fromarray(x).save(d / f"blast_{k:02d}.png")
        rows.append(f"{d / f'blast_{k:02d}.png'},malignant,")
    (d / "lab.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path_factory.mktemp("releases") / "lab"
    adapt(
        AdaptConfig(str(d / "lab.csv"), str(out), str(models_dir), str(MANIFEST), replay=32, rates_grid=3),
        log=lambda _: None,
    )
    return out


@pytest.fixture(scope="module")
def two_releases(server, models_dir, results_dir, slide_dir, lab_release):
    from ray import serve

    serve.shutdown()
    base = start_app(models_dir, results_dir, slide_dir, service={"releases": {"lab": str(lab_release)}})
    yield base
    serve.shutdown()
    start_app(models_dir, results_dir, slide_dir)


def test_a_submission_names_its_release(two_releases, lab_release, models_dir, other_lab_slide) -> None:
    api = httpx.Client(base_url=two_releases, timeout=60)
    held = api.get("/models").json()["releases"]
    assert set(held) == {"main", "lab"}
    main_version = json.loads((models_dir / "release.json").read_text())["version"]
    assert held["main"]["version"] == main_version
    assert held["lab"]["lineage"]["parent"] == main_version and held["lab"]["created"]
    assert held["lab"]["models"] != held["main"]["models"]

    bad = api.post("/jobs", json={"path": str(other_lab_slide[0]), "release": "nope"})
    assert bad.status_code == 422 and "it holds: main, lab" in bad.json()["detail"]

    jobs = {
        name: api.post("/jobs", json={"path": str(other_lab_slide[0]), **extra}).json()["job_id"]
        for name, extra in (("main", {}), ("lab", {"release": "lab"}))
    }
    results = {}
    for name, job in jobs.items():
        assert wait_done(api, job, timeout=900)["status"] == "done"
        results[name] = api.get(f"/jobs/{job}/result").json()
        assert results[name]["release"] == name
        # Each result's models are its release's, the adapted ones naming their parent.
        assert {m["name"]: m["version"] for m in results[name]["models"]} == held[name]["models"]
    assert all(m.get("adapted", {}).get("from_release") == main_version for m in results["lab"]["models"])
    # That lab's slide, read by its own release: the blasts are seen, and its domain statistics
    # (refitted on the lab's images) keep its tiles in range.
    assert results["lab"]["n_malignant"] > results["main"]["n_malignant"], (results["lab"], results["main"])
    assert results["lab"]["n_out_of_range"] <= results["main"]["n_out_of_range"]
    # With the lab release's own tile rates (measured by adapt), its estimate is adjusted, not raw.
    assert results["lab"]["adjusted_by"] is not None and results["main"]["adjusted_by"] is not None
    # Explanations come from the job's own release.
    rows = api.get(f"/jobs/{jobs['lab']}/tiles.csv").text.splitlines()
    head, first = rows[0].split(","), rows[1].split(",")
    g = api.get(f"/jobs/{jobs['lab']}/tiles/{first[0]}/gradcam.png", params={"model": "mobilenet"})
    assert g.status_code == 200
    assert float(g.headers["X-Model-Probability-Malignant"]) == pytest.approx(
        float(first[head.index("p_mobilenet")]), abs=1e-3
    )
