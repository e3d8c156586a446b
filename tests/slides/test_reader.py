from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SLIDES, need_data
from wbc_ray.slides import SlideError, open_slide

READABLE = {
    "openslide-python/boxes.tiff": ("generic-tiff", (300, 250), 4),
    "openslide-python/small.svs": ("aperio", (16, 16), 1),
    "openslide-python/boxes_0.dcm": ("dicom", (16, 16), 1),
    "openslide-python/boxes.png": ("pillow-png", (300, 250), 1),
    "pathml/small_HE.svs": ("aperio", (2220, 2967), 1),
    "pathml/small_HE_levels.tiff": ("generic-tiff", (300, 250), 4),
}
BROKEN = {
    "openslide-python/unreadable.svs": "Bogus marker length",
    "openslide-python/unopenable.tiff": "Unsupported TIFF compression",
    "pathml/small_dicom.dcm": "image flavor",
    "pathml/smalltif.tif": "unsupported pixel format",
    "pathml/small_vectra.qptiff": "not a slide format",
}


@pytest.mark.parametrize("name", sorted(READABLE))
def test_readable_fixtures(name: str) -> None:
    need_data()
    vendor, dims, levels = READABLE[name]
    with open_slide(SLIDES / name) as s:
        assert s.info.vendor == vendor
        assert s.dimensions == dims
        assert s.info.level_count == levels
        region = s.read(0, 0, 0, (10, 7))
        assert region.shape == (7, 10, 3) and region.dtype == np.uint8
        thumb = s.thumbnail(64)
        assert max(thumb.shape[:2]) <= 64 and thumb.shape[2] == 3


def test_svs_metadata_and_associated_images() -> None:
    need_data()
    with open_slide(SLIDES / "pathml/small_HE.svs") as s:
        assert s.mpp == pytest.approx(0.499)
        assert s.info.objective_power == 20
        assert set(s.info.associated_images) == {"label", "macro", "thumbnail"}
        assert s.associated_image("label").ndim == 3
        with pytest.raises(SlideError, match="no associated image"):
            s.associated_image("nope")


def test_mpp_override_and_default() -> None:
    need_data()
    png = SLIDES / "openslide-python/boxes.png"
    assert open_slide(png).mpp is None
    assert open_slide(png, default_mpp=0.25).mpp == 0.25
    svs = SLIDES / "pathml/small_HE.svs"
    assert open_slide(svs, default_mpp=0.25).mpp == pytest.approx(0.499)  # file wins over default
    assert open_slide(svs, mpp=1.0).mpp == 1.0  # explicit override wins over file


def test_reads_outside_the_slide_are_white() -> None:
    need_data()
    with open_slide(SLIDES / "openslide-python/boxes.png") as s:
        r = s.read(290, 240, 0, (20, 20))
        assert (r[15:, 15:] == 255).all()
        assert np.array_equal(r[:10, :10], s.read(290, 240, 0, (10, 10)))


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_fixtures_raise_slide_error(name: str) -> None:
    need_data()
    with pytest.raises(SlideError) as info:
        open_slide(SLIDES / name)
    msg = str(info.value)
    assert Path(name).name in msg and BROKEN[name] in msg


def _png_header(w: int, h: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def test_bad_inputs(tmp_path: Path) -> None:
    need_data()
    empty = tmp_path / "empty.svs"
    empty.write_bytes(b"")
    text = tmp_path / "notes.svs"
    text.write_text("this is not a slide\n" * 20)
    truncated = tmp_path / "truncated.svs"
    data = (SLIDES / "pathml/small_HE.svs").read_bytes()
    truncated.write_bytes(data[: len(data) // 3])
    giga = tmp_path / "giga.png"
    giga.write_bytes(_png_header(100_000, 100_000))
    cases = {
        empty: "file is empty",
        text: "not a slide format",
        tmp_path: "is a directory",
        tmp_path / "missing.svs": "no such file",
        giga: "pyramidal TIFF",
        truncated: "",
    }
    for path, reason in cases.items():
        with pytest.raises(SlideError) as info:
            s = open_slide(path)
            s.read(0, 0, 0, s.dimensions)  # a truncated file may open; reading all must fail
        assert path.name in str(info.value) and reason in str(info.value)


def test_hostile_names_are_shown_safely(tmp_path: Path) -> None:
    need_data()
    weird = tmp_path / ("ünï\x07cödé" + "x" * 200 + ".svs")
    shutil.copy(SLIDES / "openslide-python/unreadable.svs", weird)
    with pytest.raises(SlideError) as info:
        open_slide(weird)
    assert "\x07" not in str(info.value) and "\\x07" in str(info.value)
    with pytest.raises(SlideError, match="cannot access"):
        open_slide("bad\0name.svs")


def test_gigapixel_tiff_header_is_refused_without_decoding(tmp_path: Path) -> None:
    tifffile = pytest.importorskip("tifffile")
    small = tmp_path / "claims_huge.tif"
    tifffile.imwrite(small, np.zeros((8, 8, 3), np.uint8), photometric="rgb")
    raw = bytearray(small.read_bytes())
    page = tifffile.TiffFile(small).pages[0]
    for code in (256, 257):  # ImageWidth, ImageLength
        tag = page.tags[code]
        fmt = "<I" if tag.dtype == 4 else "<H"
        value = 120_000 if fmt == "<I" else 60_000
        struct.pack_into(fmt, raw, tag.valueoffset, value)
    small.write_bytes(bytes(raw))
    with pytest.raises(SlideError, match="pyramidal TIFF"):
        open_slide(small)


def test_large_single_level_thumbnail_is_built_in_bands(tmp_path: Path, monkeypatch) -> None:
    need_data()
    from wbc_ray.slides import _reader

    with open_slide(SLIDES / "pathml/small_HE.svs") as s:
        direct = s.thumbnail(256).astype(int)
        monkeypatch.setattr(_reader, "MAX_DIRECT_THUMB_PIXELS", 1000)
        monkeypatch.setattr(_reader, "THUMB_BAND_PIXELS", 2220 * 100)
        banded = s.thumbnail(256).astype(int)
    assert abs(direct.shape[0] - banded.shape[0]) <= 1 and direct.shape[1] == banded.shape[1]
    h = min(direct.shape[0], banded.shape[0])
    assert np.abs(direct[:h] - banded[:h]).mean() < 8
