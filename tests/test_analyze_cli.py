"""`wbc-ray analyze` as a user runs it: its own local Ray and Serve, JSON out, kill and resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr

from tests.conftest import SLIDES


def _cmd(*args: str, config: str | None = None) -> list[str]:
    return [sys.executable, "-m", "wbc_ray.cli", *(["--config", config] if config else []), "analyze", *args]


def test_analyze_json_bad_slide_kill_and_resume(models_dir, test_items, tmp_path) -> None:
    from wbc_ray.slides import compose_slide

    slide = tmp_path / "resume.tiff"
    compose_slide(test_items, slide, grid=(24, 24), malignant_fraction=0.3, seed=5)
    out = tmp_path / "out"
    # Units of 64 tiles (the default is 256), so the ~700-tile slide has enough of them to be
    # caught with some done and some not.
    cfg = tmp_path / "small_units.yaml"
    cfg.write_text("analysis:\n  chunk_tiles: 64\n")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    # Kill the whole process tree once some chunks are written.
    proc = subprocess.Popen(
        _cmd(str(slide), "--models", str(models_dir), "--out", str(out), "--json", config=str(cfg)),
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    store = out / "resume.tiff.zarr"
    deadline = time.time() + 300
    done = np.zeros(0, bool)
    try:
        while time.time() < deadline and proc.poll() is None:
            try:
                done = zarr.open_group(str(store), mode="r")["done"][:]
            except Exception:
                done = np.zeros(0, bool)
            if done.sum() >= 2:
                break
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    n_chunks = len(done)
    assert 2 <= done.sum() < n_chunks, f"could not catch the job mid-slide ({done.sum()}/{n_chunks})"
    killed_at = int(done.sum())

    # The rerun resumes the killed slide; beside it, a broken slide and a fresh copy of the killed
    # one (its own store: a clean run, in the same process, so one Ray/Serve start fewer).
    clean_copy = tmp_path / "clean.tiff"
    shutil.copyfile(slide, clean_copy)
    r = subprocess.run(
        _cmd(
            str(slide),
            str(SLIDES / "openslide-python/unreadable.svs"),
            str(clean_copy),
            "--models",
            str(models_dir),
            "--out",
            str(out),
            "--json",
            config=str(cfg),
        ),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 1, r.stderr[-2000:]  # one slide failed, the others were analysed
    assert r.stdout.lstrip().startswith("["), (r.stdout[-3000:], r.stderr[-3000:])
    rows = json.loads(r.stdout)
    assert [os.path.basename(x["slide"]) for x in rows] == ["resume.tiff", "unreadable.svs", "clean.tiff"]
    good, bad, c = rows
    assert good["verdict"] in {"malignant", "benign", "indeterminate"} and good["n_tiles"] > 300
    assert set(good) >= {"slide", "verdict", "malignant_fraction", "interval", "n_tiles", "result"}
    assert "Bogus marker length" in bad["error"] and bad["verdict"] is None
    res = json.loads((out / "resume.tiff.json").read_text())
    assert res["timings"]["chunks_run"] <= n_chunks - killed_at  # resumed, not restarted
    assert json.loads((out / "clean.tiff.json").read_text())["timings"]["chunks_run"] == n_chunks

    # The clean run of the same slide gives the same result.
    assert (c["verdict"], c["n_tiles"]) == (good["verdict"], good["n_tiles"])
    assert c["malignant_fraction"] == pytest.approx(good["malignant_fraction"], abs=0.01)
    a = zarr.open_group(good["result"], mode="r")["fused"][:]
    b = zarr.open_group(c["result"], mode="r")["fused"][:]
    assert np.allclose(a, b, atol=0.02)
