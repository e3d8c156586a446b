"""A real local Ray with the Serve app running, on a loopback port, for the REST tests."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import SLIDES

PORT = 8123


@pytest.fixture(scope="session")
def results_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("results")


@pytest.fixture(scope="session")
def slide_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("slides_in")


def start_app(models_dir: Path, results_dir: Path, slide_dir: Path) -> str:
    """Start the Serve app the REST tests run against and wait until it answers; its base URL."""
    from wbc_ray.serve import start

    start(
        models_dir=str(models_dir),
        results_dir=str(results_dir),
        port=PORT,
        slide_roots=[str(slide_dir), str(SLIDES)],
        max_upload_mb=8,
        # Below the analysis work unit (256 tiles), so every job here also runs the ensemble's
        # splitting of requests larger than the CNNs' batch cap.
        max_batch_tiles=96,
    )
    base = f"http://127.0.0.1:{PORT}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(1)
    return base


@pytest.fixture(scope="session")
def server(ray_local, models_dir, results_dir, slide_dir):
    from ray import serve

    yield start_app(models_dir, results_dir, slide_dir)
    serve.shutdown()


@pytest.fixture()
def api(server):
    with httpx.Client(base_url=server, timeout=60) as c:
        yield c


def wait_done(api: httpx.Client, job_id: str, timeout: float = 600) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = api.get(f"/jobs/{job_id}").json()
        if st["status"] in {"done", "failed"}:
            return st
        time.sleep(0.5)
    raise TimeoutError(f"job {job_id} not finished in {timeout} s")
