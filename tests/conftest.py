"""Shared fixtures: the real data folder, a real local Ray, composed slides, the running Serve app."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("WBC_RAY_DATA", REPO.parent / "shared" / "data"))
SLIDES = DATA / "slides"
MANIFEST = DATA / "all_taleqani" / "split.csv"

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def need_data() -> None:
    if not MANIFEST.exists() or not SLIDES.exists():
        pytest.skip(f"shared data folder not found at {DATA} (set WBC_RAY_DATA)")


@pytest.fixture(scope="session")
def ray_local():
    import ray
    import torch

    from wbc_ray.pipeline import init_ray

    # Two CPUs as on CI; a GPU machine gets all of its CPUs, which configs/serve.gpu.yaml needs.
    init_ray(num_cpus=None if torch.cuda.is_available() else 2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def test_items():
    need_data()
    from wbc_ray.manifest import read_manifest

    return read_manifest(MANIFEST, "test")


@pytest.fixture(scope="session")
def composed(tmp_path_factory, test_items) -> Path:
    """A small composed slide (6 x 8 fields, 25% malignant) shared by tests."""
    from wbc_ray.slides import compose_slide

    out = tmp_path_factory.mktemp("slides") / "mix.tiff"
    compose_slide(test_items, out, grid=(6, 8), malignant_fraction=0.25, seed=7)
    return out


def full_models() -> Path | None:
    """The full trained set, if this machine has it: $WBC_RAY_TEST_MODELS, $WBC_RAY_MODELS, ./weights."""
    from wbc_ray.training import has_models

    for cand in (os.environ.get("WBC_RAY_TEST_MODELS"), os.environ.get("WBC_RAY_MODELS"), REPO / "weights"):
        if cand and has_models(cand):
            return Path(cand)
    return None


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """Checkpoints for the serving tests: the full set when present, else the quick preset,
    trained once per machine into the user cache (about 2 minutes; plumbing only)."""
    need_data()
    from wbc_ray.serve.app import configured_precisions
    from wbc_ray.training import ensure_models, quick_models_dir

    precision = configured_precisions()
    return full_models() or ensure_models(
        quick_models_dir(), MANIFEST, "quick", progress=False, precision=precision
    )


@pytest.fixture(scope="session")
def trained_models(models_dir: Path) -> Path:
    """Only for tests that judge accuracy: quick-preset models are not accurate by design.

    The slide-level tile rates belong to the weights (`make models` measures them); when a
    weights folder lacks them they are measured here, on validation-split slides, once.
    """
    if full_models() is None:
        pytest.skip(
            "accuracy tests need the full trained models: run `make models` or set WBC_RAY_TEST_MODELS"
        )
    from wbc_ray.serve.app import configured_precisions
    from wbc_ray.training import ensure_tile_rates

    ensure_tile_rates(models_dir, MANIFEST, configured_precisions())
    return models_dir


# ---- the Serve app on a loopback port: the REST tests (tests/serve) and the UI tests (tests/ui) ----
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
