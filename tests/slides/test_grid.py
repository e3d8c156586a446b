from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import SLIDES, need_data
from wbc_ray.slides import GridSpec, SlideError, choose_level, open_slide, tile_grid, tissue_mask
from wbc_ray.slides._tissue import _dilate, _erode, otsu_threshold, tissue_mask_from_rgb


def test_otsu_splits_two_modes() -> None:
    vals = np.concatenate([np.full(500, 0.1), np.full(500, 0.7)])
    assert 0.1 <= otsu_threshold(vals) < 0.7


@pytest.mark.parametrize("shape", [(1, 1), (2, 7), (40, 33), (257, 300)])
def test_square_morphology_matches_scipy(shape: tuple[int, int]) -> None:
    # The mask's clean-up uses its own shifted-view morphology for speed; it must keep scipy's
    # results exactly, edges included (outside the image is background for both).
    from scipy import ndimage

    rng = np.random.default_rng(sum(shape))
    for density in (0.1, 0.5, 0.9):
        m = rng.random(shape) < density
        sq = np.ones((3, 3), bool)
        closed = ndimage.binary_closing(m, structure=sq, iterations=2)
        assert np.array_equal(_erode(_dilate(m, 5), 5), closed)
        opened = ndimage.binary_opening(m, structure=sq)
        assert np.array_equal(_dilate(_erode(m, 3), 3), opened)
        assert np.array_equal(_dilate(m, 3), ndimage.binary_dilation(m, structure=sq))
        assert np.array_equal(_erode(m, 5), ndimage.binary_erosion(m, structure=sq, iterations=2))


def test_mask_of_glass_is_empty_and_of_a_stained_block_is_found() -> None:
    glass = np.full((200, 200, 3), (238, 235, 240), np.uint8)
    assert not tissue_mask_from_rgb(glass)[0].any()
    img = glass.copy()
    img[50:150, 60:160] = (150, 80, 170)
    mask, _ = tissue_mask_from_rgb(img, um_per_px=2.0)
    assert mask[60:140, 70:150].all() and not mask[:30].any() and not mask[:, :40].any()


def test_he_tiles_cover_tissue_and_skip_glass() -> None:
    need_data()
    with open_slide(SLIDES / "pathml/small_HE.svs") as s:
        mask = tissue_mask(s)
        grid = tile_grid(s, mask, GridSpec(tile_px=224, mpp=0.5, min_tissue=0.25))
        assert 0.2 < mask.fraction() < 0.6  # a strip of tissue on mostly white glass
        # The thumbnail the mask was computed on travels with it (plans reuse it as the preview).
        assert mask.thumbnail.shape[:2] == mask.mask.shape and mask.thumbnail.dtype == np.uint8
        rows, cols = grid.shape
        assert 20 < len(grid) < rows * cols
        # Kept tiles are stained, dropped tiles are mostly glass.
        kept = np.array([s.read(int(x), int(y), 0, (224, 224)).mean() for x, y in grid.coords[:12]])
        all_xy = {(int(x), int(y)) for x, y in grid.coords}
        dropped = [
            (int(c * grid.stride0), int(r * grid.stride0))
            for r in range(rows)
            for c in range(cols)
            if (int(c * grid.stride0), int(r * grid.stride0)) not in all_xy
        ]
        glass = np.array([s.read(x, y, 0, (224, 224)).mean() for x, y in dropped[:12]])
        assert kept.mean() < 200 < glass.mean()


def test_level_choice_and_read_size() -> None:
    need_data()
    with open_slide(SLIDES / "openslide-python/boxes.tiff", mpp=0.5) as s:
        # downsamples 1, 2, 4, 8: target 1.0 mpp is level 1 exactly, 1.5 reads level 1 scaled.
        assert choose_level(s, 1.0)[0] == 1
        assert choose_level(s, 1.5)[0] == 1
        assert choose_level(s, 0.25)[0] == 0
        mask = tissue_mask(s)
        g = tile_grid(s, mask, GridSpec(tile_px=16, mpp=1.5, min_tissue=0.0))
        assert g.level == 1 and g.read_px == 24 and g.size0 == pytest.approx(48)
        assert len(g) == g.shape[0] * g.shape[1]
        with pytest.raises(ValueError):
            GridSpec(tile_px=16, min_tissue=2)


def test_slide_without_mpp_needs_a_setting() -> None:
    need_data()
    with open_slide(SLIDES / "openslide-python/boxes.png") as s, pytest.raises(SlideError, match="mpp"):
        choose_level(s, 0.5)


def test_composed_slide_grid_finds_every_field(composed) -> None:
    truth = json.loads(composed.with_suffix(".json").read_text())
    with open_slide(composed) as s:
        assert s.info.vendor == "generic-tiff" and s.mpp == pytest.approx(0.5)
        mask = tissue_mask(s)
        grid = tile_grid(s, mask, GridSpec(tile_px=224, mpp=0.5))
    centers = grid.coords + grid.size0 / 2
    for f in truth["fields"]:
        x, y, w, h = f["box"]
        inside = (centers[:, 0] > x) & (centers[:, 0] < x + w) & (centers[:, 1] > y) & (centers[:, 1] < y + h)
        near = np.hypot(centers[:, 0] - (x + w / 2), centers[:, 1] - (y + h / 2)) < w
        assert inside.any() or near.any(), f"field at {f['box']} has no tile"
    # The glass margin stays out.
    assert grid.coords[:, 0].min() > 0 or grid.coords[:, 1].min() > 0


def test_tiles_come_in_bands_of_rows_column_by_column(composed) -> None:  # type: ignore[no-untyped-def]
    from wbc_ray.slides._grid import BAND_ROWS

    with open_slide(composed) as s:
        grid = tile_grid(s, tissue_mask(s), GridSpec(tile_px=64, mpp=0.5, min_tissue=0.25))
    rows, cols = grid.cells[:, 0], grid.cells[:, 1]
    key = np.stack([rows // BAND_ROWS, cols, rows], axis=1)
    assert len(grid) > 4 * BAND_ROWS and rows.max() >= BAND_ROWS  # more than one band
    assert all(tuple(a) < tuple(b) for a, b in zip(key[:-1], key[1:], strict=True))
    # Coordinates follow the cells they belong to.
    np.testing.assert_array_equal(grid.coords[:, 0], np.floor(cols * grid.stride0).astype(np.int64))
