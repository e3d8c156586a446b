"""Operator mistakes at `wbc-ray serve`: each one line, `wbc-ray: error: ...` with what to do,
exit code 2, no traceback, before Ray starts."""

from __future__ import annotations

import shutil
import socket
import sqlite3

import pytest

from tests.conftest import RELEASE, need_data
from tests.test_cli import cli


def _one_line_error(r, *words: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("wbc-ray: error:")]
    assert len(lines) == 1, r.stderr[-2000:]
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_a_database_from_a_newer_version(tmp_path) -> None:
    need_data()
    results = tmp_path / "results"
    results.mkdir()
    with sqlite3.connect(results / "service.db") as c:
        c.execute("PRAGMA user_version = 99")
    r = cli("serve", "--results", str(results), "--port", "8181")
    _one_line_error(r, "service.db", "newer wbc-ray", "schema 99", "upgrade wbc-ray")


def test_a_results_folder_that_cannot_be_written(tmp_path) -> None:
    need_data()
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    r = cli("serve", "--results", str(blocker / "results"), "--port", "8181")
    _one_line_error(r, "results folder", "not writable", "--results")


def test_a_missing_or_damaged_release(tmp_path) -> None:
    need_data()
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line_error(
        cli("serve", "--models", str(empty), "--port", "8181"), "no model checkpoints", "--models"
    )
    damaged = tmp_path / "release"
    shutil.copytree(RELEASE, damaged)
    with open(damaged / "domain.json", "a") as fh:
        fh.write(" ")
    _one_line_error(cli("serve", "--models", str(damaged), "--port", "8181"), "domain.json", "release")


def test_a_serve_config_with_an_unknown_key(tmp_path) -> None:
    need_data()
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(
        "applications:\n  - name: wbc-ray\n    import_path: wbc_ray.serve.app:build_app\n"
        "    args: {fusion: mean, torch_thread: 2}\n"
    )
    r = cli("serve", "--serve-config", str(cfg), "--port", "8181")
    _one_line_error(r, str(cfg), "torch_thread", "Extra inputs are not permitted")


def test_a_port_in_use(tmp_path) -> None:
    need_data()
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        r = cli("serve", "--results", str(tmp_path / "r"), "--port", str(port))
    _one_line_error(r, f"port {port}", "not free", "--port")


@pytest.mark.parametrize("limit", ["files", "bytes"])
def test_score_bounds_are_413_naming_the_setting(api, limit) -> None:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 150, 200)).save(buf, format="PNG")
    if limit == "files":
        files = [("files", (f"p{i}.png", buf.getvalue(), "image/png")) for i in range(65)]
        r = api.post("/score", files=files)
        assert r.status_code == 413 and "service.max_score_files" in r.json()["detail"], r.text
    else:
        big = buf.getvalue() + b"\0" * (16 * 2**20 + 1)
        r = api.post("/score", files=[("files", ("big.png", big, "image/png"))])
        assert r.status_code == 413 and "service.max_score_mb" in r.json()["detail"], r.text
    assert api.get("/health").status_code == 200
