"""Direct TIFF tile reads must give OpenSlide's pixels exactly, or not be used at all."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SLIDES, need_data
from wbc_ray.slides import SlideError, open_slide
from wbc_ray.slides._tiff_direct import TiffTiles, open_direct

TIFF_BASED = [
    "openslide-python/boxes.tiff",
    "openslide-python/small.svs",
    "pathml/small_HE.svs",
    "pathml/small_HE_levels.tiff",
]


def _same_regions(path: Path, n: int = 25) -> None:
    rng = np.random.default_rng(0)
    with open_slide(path) as fast, open_slide(path, direct=False) as ref:
        assert "tiff-direct" in fast.info.reader and ref.info.reader == "openslide"
        for level, ((w, h), ds) in enumerate(
            zip(fast.info.level_dimensions, fast.info.level_downsamples, strict=True)
        ):
            for _ in range(n):
                # Regions anywhere, including hanging off every edge of the level.
                lx, ly = int(rng.integers(-60, w)), int(rng.integers(-60, h))
                size = (int(rng.integers(1, 300)), int(rng.integers(1, 300)))
                x, y = round(lx * ds), round(ly * ds)
                np.testing.assert_array_equal(fast.read(x, y, level, size), ref.read(x, y, level, size))
        # Thumbnails (the tissue mask's input) too: OpenSlide's get_thumbnail against the direct one.
        for side in (64, 512, 2048):
            np.testing.assert_array_equal(fast.thumbnail(side), ref.thumbnail(side))


@pytest.mark.parametrize("name", TIFF_BASED)
def test_direct_reads_equal_openslide_on_fixtures(name: str) -> None:
    need_data()
    _same_regions(SLIDES / name)


def test_direct_reads_equal_openslide_on_composed_slide(composed: Path) -> None:
    _same_regions(composed)


def test_non_tiff_vendors_read_through_openslide() -> None:
    need_data()
    with open_slide(SLIDES / "openslide-python/boxes_0.dcm") as s:
        assert s.info.reader == "openslide"
    assert open_slide(SLIDES / "openslide-python/boxes.png").info.reader == "pillow"


def test_levels_that_disagree_with_openslide_are_dropped(composed: Path) -> None:
    with open_slide(composed, direct=False) as ref:
        info = ref.info

        def inverted(x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
            return 255 - ref.read(x, y, level, (w, h))

        dims, ds = info.level_dimensions, info.level_downsamples
        assert open_direct(str(composed), info.vendor, dims, ds, inverted) is None
        tiles = open_direct(
            str(composed), info.vendor, dims, ds, lambda x, y, lv, w, h: ref.read(x, y, lv, (w, h))
        )
        assert isinstance(tiles, TiffTiles) and sorted(tiles.levels) == list(range(info.level_count))
        tiles.close()


def test_off_grid_reads_of_reduced_levels_go_to_openslide(composed: Path) -> None:
    with open_slide(composed) as fast, open_slide(composed, direct=False) as ref:
        assert fast.info.level_count > 1 and fast.info.level_downsamples[1] > 1
        # x = 3 is not a whole pixel of level 1, so only OpenSlide knows how it resamples it.
        np.testing.assert_array_equal(fast.read(3, 5, 1, (40, 30)), ref.read(3, 5, 1, (40, 30)))


def test_truncated_tile_data_is_a_slide_error(composed: Path, tmp_path: Path) -> None:
    data = composed.read_bytes()
    cut = tmp_path / "cut.tiff"
    with open_slide(composed) as s:
        # Keep the header and the first tiles of level 0, lose the rest of the file.
        lv = s._backend.direct.levels[0]  # type: ignore[attr-defined]
        offsets = lv.page.dataoffsets
        end = int(offsets[len(offsets) // 2])
    cut.write_bytes(data[:end])
    with pytest.raises(SlideError, match="cut.tiff"), open_slide(cut) as s:
        w, h = s.dimensions
        for y in range(0, h, 256):
            s.read(0, y, 0, (w, 256))
