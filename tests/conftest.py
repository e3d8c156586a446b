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


def pytest_collection_modifyitems(config, items) -> None:  # type: ignore[no-untyped-def]
    """Two streams for `make test` (pytest-xdist, `-n 2 --dist loadgroup`): the tests of the
    session's Serve app in one, everything else in the other, each in collection order.

    On 2 cores the suite waits more than it computes (Ray and Serve starting, replicas loading,
    jobs polled), so two streams finish in well under the time of one. Each stream has its own
    Ray; the Serve app's port (8123) and the app restarts stay in one stream, and the multi-node
    cluster tests, which need a Ray of their own, still run first in theirs.
    """
    for item in items:
        group = "serve_app" if "server" in getattr(item, "fixturenames", ()) else "rest"
        item.add_marker(pytest.mark.xdist_group(group))


def other_lab_blast(rgb):  # type: ignore[no-untyped-def]
    """A Taleqani blast field as another lab's scanner shows it: cells at a quarter of their size
    (a magnification misread twice over). Release 3 learned cells down to half their size; at a
    quarter it calls about half of them benign, which is what the other-lab tests need.
    """
    from wbc_ray.domain import shift_image

    return shift_image(shift_image(rgb, "scale_0.5"), "scale_0.5")


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


RELEASE = REPO / "weights"


def full_models() -> Path:
    """The trained set the tests run: $WBC_RAY_TEST_MODELS, else $WBC_RAY_MODELS, else the release
    committed in weights/ (checked file by file against its manifest)."""
    from wbc_ray.models import available

    for cand in (os.environ.get("WBC_RAY_TEST_MODELS"), os.environ.get("WBC_RAY_MODELS")):
        if cand:
            return Path(cand)
    available(RELEASE)  # raises, naming the file, where the release is damaged
    return RELEASE


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The release, with what serving it needs on this machine built once (int8 models and their
    tile rates, in the user cache: a few minutes on a fresh machine)."""
    need_data()
    from wbc_ray.lifecycle import ensure_served
    from wbc_ray.serve.app import configured_precisions

    return ensure_served(full_models(), MANIFEST, configured_precisions())


@pytest.fixture(scope="session")
def trained_models(models_dir: Path) -> Path:
    """For tests that judge accuracy (the release is always there; the name says what they need)."""
    return models_dir


def checkpoint_copy(models_dir: Path, dest: Path) -> Path:
    """The models as a plain checkpoint folder in `dest` (weights, cards and int8 builds; no tile
    rates, no release manifest), for tests that write beside the checkpoints."""
    import shutil

    from wbc_ray.models import available, int8_path

    dest.mkdir(parents=True)
    for name in available(models_dir):
        for suffix in (".safetensors", ".json"):
            shutil.copy2(models_dir / f"{name}{suffix}", dest / f"{name}{suffix}")
        xml = int8_path(models_dir, name)
        for f in (xml, xml.with_suffix(".bin")):
            if f.exists():
                shutil.copy2(f, dest / f.name)
    return dest


# ---- the Serve app on a loopback port: the REST tests (tests/serve) and the UI tests (tests/ui) ----
PORT = 8123
API_CONFIDENCE = 0.9  # the interval level of the app's own settings file (default 0.95)


@pytest.fixture(scope="session")
def results_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("results")


@pytest.fixture(scope="session")
def slide_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("slides_in")


def start_app(models_dir: Path, results_dir: Path, slide_dir: Path, service: dict | None = None) -> str:
    """Start the Serve app the REST tests run against and wait until it answers; its base URL."""
    from wbc_ray.serve import start

    # A settings file of its own (as `wbc-ray --config X serve` passes one): the REST tests check
    # that the app analyses with it, not with configs/default.yaml.
    settings = results_dir.parent / "api_settings.yaml"
    import yaml

    extra = yaml.safe_dump({"service": service}) if service else ""
    settings.write_text(f"ensemble:\n  confidence: {API_CONFIDENCE}\n" + extra)
    start(
        settings=str(settings),
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


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (moto in server mode) on 127.0.0.1, with the standard AWS
    variables pointing at it, set before any Ray node starts so that its workers inherit them.
    Yields the secret key, which must never show up in a record or a log."""
    import secrets
    import subprocess
    import sys

    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            httpx.get(url, timeout=2)
            break
        except httpx.HTTPError:
            time.sleep(0.3)
    secret = "wbc-test-" + secrets.token_hex(12)
    env = {
        "AWS_ACCESS_KEY_ID": "wbc-test-key",
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_ENDPOINT_URL": url,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield secret
    proc.terminate()
    proc.wait(timeout=30)
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
