"""The Python example in the docs runs as written, against the release and the real data."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO, need_data


def test_the_python_api_example_runs() -> None:
    need_data()
    r = subprocess.run(
        [sys.executable, "docs/examples/python_api.py"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    assert lines[0].startswith("aperio (16, 16)")
    calls = [line.split(": ")[1].split()[0] for line in lines[1:]]
    folders = [line.split("/")[0].strip() for line in lines[1:]]
    assert len(calls) == 4 and calls == ["benign" if f == "Benign" else "malignant" for f in folders]
