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


# The tests that run against the session's Serve app (the `server` fixture), by node id.
SERVE_APP_TESTS = (
    "tests/serve/",
    "tests/ui/",
    "tests/training/test_adapt.py::test_analysing_with_other_models_than_the_running_app_is_refused",
)


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist's
def pytest_xdist_make_scheduler(config, log):  # type: ignore[no-untyped-def]
    """Two streams for `make test` (`pytest -n 2`): the tests of the session's Serve app in one,
    everything else in the other, each in collection order.

    On 2 cores the suite waits much of the time (Ray and Serve starting, replicas loading, jobs
    polled), so two streams finish well before one would. Each stream has its own Ray; the Serve
    app's port (8123) and its redeployments stay in one stream, and the multi-node cluster tests,
    which need a Ray of their own, still run first in theirs. (xdist's own `loadgroup` marks no
    longer take with pytest 9: it rewrites a node id attribute pytest 9 does not read.)
    """
    from xdist.scheduler import LoadScopeScheduling

    class TwoStreams(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "serve_app" if nodeid.startswith(SERVE_APP_TESTS) else "rest"

    return TwoStreams(config, log)


def pytest_collection_modifyitems(config, items) -> None:  # type: ignore[no-untyped-def]
    """A test that uses the Serve app outside SERVE_APP_TESTS would start a second app on its port
    in the other stream: refused at collection."""
    stray = [it.nodeid for it in items if "server" in it.fixturenames]
    stray = [nodeid for nodeid in stray if not nodeid.startswith(SERVE_APP_TESTS)]
    if stray:
        raise pytest.UsageError(f"tests that use the `server` fixture belong in SERVE_APP_TESTS: {stray}")


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


def _one_xception() -> dict:
    """The Serve config's own Xception options, with one replica (an override replaces a
    deployment's options whole, so it starts from them)."""
    from wbc_ray.serve_config import default_serve_config, load_serve_config

    deployments = load_serve_config(default_serve_config())["app"]["deployments"]
    (opts,) = [d for d in deployments if d["name"] == "xception"]
    return {**{k: v for k, v in opts.items() if k != "name"}, "num_replicas": 1}


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
        # One Xception replica, not the config's two: the app is deployed six times in a run and
        # no test here is about throughput (a replica's start is seconds of CPU on 2 cores).
        deployment_options={"xception": _one_xception()},
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


LAB_PER_CLASS = 24  # images of each class in the other lab's set that `adapt` learns from


def _lab_images(d: Path, test_items) -> Path:  # type: ignore[no-untyped-def]
    """Another lab's labelled images (PBC's normal cells at their scale, Taleqani blasts at a
    quarter of their size; none of them on tests/serve's other-lab slide) and their manifest."""
    import numpy as np
    from PIL import Image

    from wbc_ray.manifest import read_manifest

    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(8)
    pbc = read_manifest(DATA / "pbc" / "labels.csv")
    picked = rng.permutation(len(pbc))[LAB_PER_CLASS : 2 * LAB_PER_CLASS]
    rows = ["path,label,mpp"] + [f"{pbc[i].path},benign,0.1" for i in picked]
    blasts = [it for it in test_items if it.label == 1][LAB_PER_CLASS : 2 * LAB_PER_CLASS]
    for k, it in enumerate(blasts):
        with Image.open(it.path) as im:
            x = other_lab_blast(np.asarray(im.convert("RGB")))
        Image.fromarray(x).save(d / f"blast_{k:02d}.png")
        rows.append(f"{d / f'blast_{k:02d}.png'},malignant,")
    (d / "lab.csv").write_text("\n".join(rows) + "\n")
    return d / "lab.csv"


@pytest.fixture(scope="session")
def lab_manifest(tmp_path_factory, test_items) -> Path:
    """The other lab's image set (`_lab_images`), for tests that adapt or refuse to."""
    return _lab_images(tmp_path_factory.mktemp("lab"), test_items)


@pytest.fixture(scope="session")
def lab_release(tmp_path_factory, models_dir, test_items) -> Path:
    """The release adapted to the other lab's images, made once per run and shared by both of
    `make test`'s streams (a lock in the run's temporary folder): `adapt` trains, so each
    stream adapting its own would cost a minute of the two cores."""
    import fcntl

    from wbc_ray.training import AdaptConfig, adapt

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's folder, above each stream's own
    out = root / "lab_release"
    with open(root / "lab_release.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "release.json").exists():
            manifest = _lab_images(root / "lab_release_images", test_items)
            replayed = str(MANIFEST)
            config = AdaptConfig(str(manifest), str(out), str(models_dir), replayed, replay=32, rates_grid=3)
            adapt(config, log=lambda _: None)
    return out


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
