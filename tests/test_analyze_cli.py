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
    compose_slide(test_items, slide, grid=(20, 20), malignant_fraction=0.3, seed=5)
    out = tmp_path / "out"
    # Units of 64 tiles (the default is 256), so the ~530-tile slide has enough of them to be
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


def test_analyze_uses_a_running_serve_and_says_so(models_dir, test_items, tmp_path) -> None:
    """With a `wbc-ray serve` running on the machine, a plain `wbc-ray analyze` sends its tiles
    to it (saying so) and gets the scores the one-off local engine gets, bit for bit; where the
    service's record is stale, or once the service is stopped (SIGTERM, as a service manager
    stops it), analyze scores in its own process.

    One model served (the same Serve config given to both commands): the engines' agreement on
    all three is tests/serve/test_analysis.py's; this test is about finding the service.
    """
    import httpx
    import yaml

    from wbc_ray.serve_config import default_serve_config, load_serve_config
    from wbc_ray.slides import compose_slide

    slide = tmp_path / "svc.tiff"
    compose_slide(test_items, slide, grid=(10, 10), malignant_fraction=0.3, seed=7)
    port = "8131"
    config = load_serve_config(default_serve_config())
    config["app"]["args"]["models"] = ["mobilenet"]  # the app's entry, inside the whole file
    serve_config = tmp_path / "one_model.yaml"
    serve_config.write_text(yaml.safe_dump(config["config"]))
    # A cache folder of its own: the service's record is found there, and nowhere else.
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "WBC_RAY_CACHE": str(tmp_path / "cache")}
    env.pop("RAY_ADDRESS", None)
    record = tmp_path / "cache" / "service.json"

    def analyze(out: str) -> subprocess.CompletedProcess[str]:
        args = [str(slide), "--models", str(models_dir), "--out", str(tmp_path / out), "--json"]
        args += ["--serve-config", str(serve_config)]
        return subprocess.run(_cmd(*args), env=env, capture_output=True, text=True, timeout=600)

    # A record whose process is gone (a service killed with SIGKILL leaves one) is ignored.
    gone = subprocess.Popen(["true"])
    gone.wait()
    record.parent.mkdir()
    record.write_text(json.dumps({"pid": gone.pid, "started": 1.0, "ray_address": "127.0.0.1:1", "url": "x"}))
    local = analyze("local")
    assert local.returncode == 0, local.stderr[-2000:]
    assert "using the running wbc-ray serve" not in local.stderr
    record.unlink()
    serve_cmd = [sys.executable, "-m", "wbc_ray.cli", "serve", "--models", str(models_dir), "--port", port]
    serve_cmd += ["--serve-config", str(serve_config), "--results", str(tmp_path / "svc_results")]
    proc = subprocess.Popen(
        serve_cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.time() + 240
        while not record.exists():
            assert proc.poll() is None and time.time() < deadline, "wbc-ray serve did not come up"
            time.sleep(1)
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code == 200
        served = analyze("served")
    finally:
        proc.terminate()  # SIGTERM: the service removes its record and stops Serve and Ray
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, "wbc-ray serve did not stop on SIGTERM"
    assert not record.exists(), "the stopped service left its record"
    assert served.returncode == 0, served.stderr[-3000:]
    assert f"using the running wbc-ray serve (pid {proc.pid}, http://127.0.0.1:{port})" in served.stderr
    a, b = (json.loads((tmp_path / d / "svc.tiff.json").read_text()) for d in ("local", "served"))
    assert (a["timings"]["engine"], b["timings"]["engine"]) == ("local", "serve")
    assert [m["name"] for m in b["models"]] == ["mobilenet"]
    for name in ("probs", "fused", "qc"):
        x = zarr.open_group(str(tmp_path / "local" / "svc.tiff.zarr"), mode="r")[name][:]
        y = zarr.open_group(str(tmp_path / "served" / "svc.tiff.zarr"), mode="r")[name][:]
        assert np.array_equal(x, y, equal_nan=True), name
    assert (a["verdict"], a["malignant_fraction"]) == (b["verdict"], b["malignant_fraction"])
