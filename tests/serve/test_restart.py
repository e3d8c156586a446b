"""Serve going down and coming back between analyses: Ray Data's pooled task workers keep a
cached handle to the old controller, and must find the new one."""

from __future__ import annotations

import httpx
import numpy as np

from tests.conftest import start_app


def test_analysis_after_a_serve_restart(
    server, models_dir, results_dir, slide_dir, composed, tmp_path
) -> None:
    from ray import serve

    from wbc_ray.analyze import analyze_slides
    from wbc_ray.store import array, open_store

    def analyze(out: str):  # type: ignore[no-untyped-def]
        (r,) = analyze_slides([str(composed)], models_dir=str(models_dir), out_dir=out, progress=False)
        assert r.ok, r.error
        return r

    before = analyze(str(tmp_path / "before"))
    stored = np.asarray(array(open_store(before.store, "r"), "fused")[:])

    serve.shutdown()
    assert start_app(models_dir, results_dir, slide_dir) == server
    after = analyze(str(tmp_path / "after"))

    assert after.result["n_tiles"] == before.result["n_tiles"]
    assert after.result["malignant_fraction"] == before.result["malignant_fraction"]
    np.testing.assert_array_equal(np.asarray(array(open_store(after.store, "r"), "fused")[:]), stored)
    # What was stored before the restart is untouched, and the REST API answers again.
    np.testing.assert_array_equal(np.asarray(array(open_store(before.store, "r"), "fused")[:]), stored)
    assert httpx.get(f"{server}/health", timeout=10).status_code == 200
