"""Helpers for the REST tests (the running app itself is a fixture in tests/conftest.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import DATA, other_lab_blast


def wait_done(api: httpx.Client, job_id: str, timeout: float = 600) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = api.get(f"/jobs/{job_id}").json()
        if st["status"] in {"done", "failed"}:
            return st
        time.sleep(0.5)
    raise TimeoutError(f"job {job_id} not finished in {timeout} s")


def submit(api: httpx.Client, path: Path, **extra: object) -> str:
    """Submit `path` as a job; its id (the refusal's status and text where it is refused)."""
    r = api.post("/jobs", json={"path": str(path), **extra})
    assert r.status_code == 202, (r.status_code, r.text)
    return str(r.json()["job_id"])


@pytest.fixture(scope="session")
def mixed_slide(slide_dir, test_items):
    """A 10 x 10-field slide, 40 % malignant, in the folder the app may read."""
    from wbc_ray.slides import compose_slide

    p = slide_dir / "mixed.tiff"
    compose_slide(test_items, p, grid=(10, 10), malignant_fraction=0.4, seed=11)
    return p


SCHEMATHESIS_CONFIG = Path(__file__).with_name("schemathesis.toml")


def run_schemathesis(base: str, slide: Path, token: str | None = None) -> str:
    """Schemathesis with every check against the live service at `base`, its job routes pointed at
    a finished job of `slide` (and deletion at another); fails with its report. Returns the report.

    The by-design refusals are listed by operation in tests/serve/schemathesis.toml.
    """
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    api = httpx.Client(base_url=base, headers=headers, timeout=60)
    jobs = []
    deadline = time.time() + 600
    while len(jobs) < 2:
        r = api.post("/jobs", json={"path": str(slide)})
        if r.status_code == 429 and time.time() < deadline:  # the queue of an earlier test
            time.sleep(2)
            continue
        assert r.status_code == 202, r.text
        jobs.append(r.json()["job_id"])
    for job in jobs:
        assert wait_done(api, job)["status"] == "done"
    exe = str(Path(sys.executable).parent / "schemathesis")
    cmd = [exe, "--config-file", str(SCHEMATHESIS_CONFIG), "run", f"{base}/openapi.json"]
    cmd += ["--checks", "all", "--max-examples", "5", "--seed", "1", "--no-color"]
    if token:
        cmd += ["-H", f"Authorization: Bearer {token}"]
    env = {**os.environ, "WBC_RAY_SCHEMA_JOB": jobs[0], "WBC_RAY_SCHEMA_DELETE_JOB": jobs[1]}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    report = r.stdout + r.stderr
    assert r.returncode == 0, report[-12000:]
    generated = re.search(r"(\d+) generated, (\d+) passed", report)
    assert generated and int(generated.group(1)) >= 100 and generated.group(1) == generated.group(2), report
    tested = re.search(r"Tested: (\d+)", report)
    assert tested and int(tested.group(1)) >= 13, report  # every route of the schema
    return report


LAB_FIELDS = 24  # of each class, on the slide from another lab


@pytest.fixture(scope="session")
def other_lab_slide(slide_dir, test_items):
    """A slide of another lab's cells: PBC's normal cells (at their true size) and Taleqani blasts
    at a quarter of their size, which the release often calls benign; its truth per field."""
    from wbc_ray.domain import to_field
    from wbc_ray.manifest import Item, read_manifest
    from wbc_ray.slides import compose_slide

    rng = np.random.default_rng(5)
    pbc = read_manifest(DATA / "pbc" / "labels.csv")
    fields = slide_dir / "other_lab_fields"
    fields.mkdir()
    items = []
    for k, it in enumerate(pbc[i] for i in rng.permutation(len(pbc))[:LAB_FIELDS]):
        with Image.open(it.path) as im:
            x = to_field(np.asarray(im.convert("RGB")), it.mpp or 0.1, 224)
        Image.fromarray(x).save(fields / f"n{k}.png")
        items.append(Item(fields / f"n{k}.png", 0, None, None))
    for k, it in enumerate([it for it in test_items if it.label == 1][:LAB_FIELDS]):
        with Image.open(it.path) as im:
            x = other_lab_blast(np.asarray(im.convert("RGB").resize((224, 224))))
        Image.fromarray(x).save(fields / f"b{k}.png")
        items.append(Item(fields / f"b{k}.png", 1, None, None))
    out = slide_dir / "other_lab.tiff"
    truth = compose_slide(items, out, grid=(6, 8), malignant_fraction=0.5, seed=2)
    return out, truth
