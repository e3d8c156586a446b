from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import MANIFEST, SLIDES, need_data


def cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wbc_ray.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def test_info_json() -> None:
    need_data()
    r = cli("info", str(SLIDES / "pathml/small_HE.svs"), "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["vendor"] == "aperio" and d["dimensions"] == [2220, 2967] and d["mpp"] == pytest.approx(0.499)


@pytest.mark.parametrize(
    "name", ["openslide-python/unreadable.svs", "pathml/small_dicom.dcm", "pathml/smalltif.tif", "nope.svs"]
)
def test_info_bad_files_exit_nonzero_without_traceback(name: str) -> None:
    need_data()
    r = cli("info", str(SLIDES / name))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and name.split("/")[-1] in r.stderr and "error" in r.stderr


def test_make_slide_then_tile(tmp_path) -> None:
    need_data()
    out = tmp_path / "s.tiff"
    r = cli(
        "make-slide",
        "--manifest",
        str(MANIFEST),
        "--split",
        "test",
        "--out",
        str(out),
        "--grid",
        "3",
        "4",
        "--malignant-fraction",
        "0.5",
        "--seed",
        "2",
        "--quiet",
    )
    assert r.returncode == 0, r.stderr
    truth = json.loads(out.with_suffix(".json").read_text())
    assert truth["n_fields"] == 12 and truth["n_malignant"] == 6
    z = tmp_path / "s.zarr"
    preview = tmp_path / "p.png"
    r = cli(
        "tile",
        str(out),
        "--out",
        str(z),
        "--tile-px",
        "64",
        "--mpp",
        "1.0",
        "--preview",
        str(preview),
        "--quiet",
    )
    assert r.returncode == 0, r.stderr
    assert "tiles from" in r.stdout and preview.stat().st_size > 1000
    import zarr

    assert zarr.open_group(str(z), mode="r")["done"][:].all()
    # A second run finds every chunk done.
    r = cli("tile", str(out), "--out", str(z), "--tile-px", "64", "--mpp", "1.0", "--quiet")
    assert r.returncode == 0 and "chunks already done" in r.stdout
