"""`pip install .` (not editable) into a new virtual environment, then wbc-ray from another
folder: the settings and Serve configs ship inside the package, and so does `py.typed`.

The wheel is built from this checkout; the dependencies come from the suite's own environment
(on PYTHONPATH, where .pth files such as the editable install's are not read), so the test needs
no network and installs nothing twice.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from tests.conftest import DATA, RELEASE, REPO, need_data


def _run(
    cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_a_plain_install_runs_from_another_folder(tmp_path) -> None:
    need_data()
    wheels = tmp_path / "wheels"
    build = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(REPO),
        ],
        cwd=tmp_path,
        env=dict(os.environ),
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = wheels.glob("wbc_ray-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"wbc_ray/py.typed", "wbc_ray/configs/default.yaml", "wbc_ray/configs/serve.yaml"} <= names
    venv = tmp_path / "venv"
    assert _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path, env=dict(os.environ)).returncode == 0
    py, cli = venv / "bin" / "python", venv / "bin" / "wbc-ray"
    env = {
        **os.environ,
        "PYTHONPATH": sysconfig.get_paths()["purelib"],  # the dependencies, not the editable wbc_ray
        "WBC_RAY_MODELS": str(RELEASE),
        "WBC_RAY_DATA": str(DATA),
    }
    env.pop("WBC_RAY_CONFIG", None)
    inst = _run(
        [str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], cwd=tmp_path, env=env
    )
    assert inst.returncode == 0, inst.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _run(
        [str(py), "-c", "import wbc_ray, wbc_ray.config as c; print(wbc_ray.__file__, c.CONFIG_DIR)"],
        elsewhere,
        env,
    )
    assert where.returncode == 0 and str(venv) in where.stdout and str(REPO) not in where.stdout, where
    info = _run(
        [str(cli), "info", str(DATA / "slides" / "pathml" / "small_HE.svs"), "--json"], elsewhere, env
    )
    assert info.returncode == 0 and json.loads(info.stdout)["vendor"] == "aperio", info.stderr[-2000:]
    # The settings (default.yaml inside the package) and the release from WBC_RAY_MODELS.
    settings = _run(
        [
            str(py),
            "-c",
            "from wbc_ray.config import load_settings as l; s = l(); print(s.qc.min_sharpness, s.models_dir)",
        ],
        elsewhere,
        env,
    )
    assert settings.returncode == 0 and settings.stdout.split() == ["-3.9", str(RELEASE)], settings
    # A serve preflight reads the packaged Serve config and the release, then finds the port.
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        serve = _run(
            [str(cli), "serve", "--port", str(port), "--results", str(tmp_path / "r")], elsewhere, env
        )
    assert serve.returncode == 2 and f"port {port}" in serve.stderr and "Traceback" not in serve.stderr, (
        serve.stderr[-2000:]
    )
