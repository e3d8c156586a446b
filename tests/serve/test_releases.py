"""One service, several releases: the shipped release and a lab's adapted one side by side (an
application per release), a submission naming which, each result naming its release and
lineage, the adapted release's own domain statistics for that lab's slides.

The lab's release is deployed here beside the main one (and the app redeployed as before at the
end)."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import start_app
from tests.serve.conftest import submit, wait_done


@pytest.fixture(scope="module")
def two_releases(server, models_dir, results_dir, slide_dir, lab_release):
    """The lab's release deployed beside the running app, which is redeployed in place to know it
    (a full stop and start of Serve is tests/serve/test_restart.py's); afterwards, as before."""
    from ray import serve

    from wbc_ray.serve import APP_NAME
    from wbc_ray.serve._requests import release_app_name

    base = start_app(models_dir, results_dir, slide_dir, service={"releases": {"lab": str(lab_release)}})
    yield base
    serve.delete(release_app_name(APP_NAME, "lab"))
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
        name: submit(api, other_lab_slide[0], **extra)
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
