"""Helpers for the REST tests (the running app itself is a fixture in tests/conftest.py)."""

from __future__ import annotations

import time

import httpx
import pytest


def wait_done(api: httpx.Client, job_id: str, timeout: float = 600) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = api.get(f"/jobs/{job_id}").json()
        if st["status"] in {"done", "failed"}:
            return st
        time.sleep(0.5)
    raise TimeoutError(f"job {job_id} not finished in {timeout} s")


@pytest.fixture(scope="session")
def mixed_slide(slide_dir, test_items):
    """A 10 x 10-field slide, 40 % malignant, in the folder the app may read."""
    from wbc_ray.slides import compose_slide

    p = slide_dir / "mixed.tiff"
    compose_slide(test_items, p, grid=(10, 10), malignant_fraction=0.4, seed=11)
    return p
