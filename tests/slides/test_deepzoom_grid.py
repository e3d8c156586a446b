"""The Deep Zoom generator against OpenSlide's own (`openslide.deepzoom.DeepZoomGenerator`) on a
real scan, and on a plain image OpenSlide does not open."""

from __future__ import annotations

import numpy as np
import pytest
from openslide import OpenSlide
from openslide.deepzoom import DeepZoomGenerator

from tests.conftest import SLIDES, need_data


@pytest.mark.parametrize("name", ["pathml/small_HE.svs", "openslide-python/small.svs"])
def test_same_grid_and_pixels_as_openslides_generator(name: str) -> None:
    from wbc_ray.slides import deepzoom_grid, open_slide, read_deepzoom_tile

    need_data()
    path = SLIDES / name
    theirs = DeepZoomGenerator(OpenSlide(str(path)), tile_size=254, overlap=1, limit_bounds=False)
    with open_slide(path) as s:
        grid = deepzoom_grid(s)
        assert grid.levels == theirs.level_count
        thumb = s.thumbnail(2048)
        for level in range(grid.levels):
            assert grid.level_size(level) == theirs.level_dimensions[level]
            assert grid.tile_count(level) == theirs.level_tiles[level]
        # (At the tiniest levels OpenSlide's generator thumbnails to keep the aspect ratio and may
        # return a tile a pixel narrower than its own level size; the grid is compared above.)
        for level in (grid.levels - 1, grid.levels - 2, grid.levels - 3):
            cols, rows = grid.tile_count(level)
            for col, row in {(0, 0), (cols - 1, rows - 1), (cols // 2, rows // 2)}:
                ours = read_deepzoom_tile(s, grid, level, col, row, thumb).astype(int)
                ref = np.asarray(theirs.get_tile(level, (col, row)).convert("RGB")).astype(int)
                assert ours.shape == ref.shape, (level, col, row)
                # Resampling differs (Lanczos from the level below, or the thumbnail); the pixels
                # are the same image.
                diff = np.abs(ours - ref).mean()
                assert diff < 8, (level, col, row, diff)
                # ...and a tile read 4 px off would not pass (where the tile has texture).
                if ref.std() > 20 and level == grid.levels - 1 and ours.shape[1] > 8:
                    assert np.abs(ours[:, 4:] - ref[:, :-4]).mean() > 2 * diff
        assert grid.dzi("jpeg").count('TileSize="254"') == 1


def test_a_plain_image_and_tiles_that_do_not_exist(tmp_path) -> None:
    from PIL import Image

    from wbc_ray.slides import SlideError, deepzoom_grid, open_slide, read_deepzoom_tile

    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (300, 520, 3), np.uint8)
    Image.fromarray(img).save(tmp_path / "field.png")
    with open_slide(tmp_path / "field.png", default_mpp=0.5) as s:
        grid = deepzoom_grid(s)
        top = grid.levels - 1
        assert grid.tile_count(top) == (3, 2)
        px = read_deepzoom_tile(s, grid, top, 1, 1, s.thumbnail(2048))
        x0, y0, x1, y1 = grid.tile_box(top, 1, 1)
        assert np.array_equal(px, img[y0:y1, x0:x1])
        for bad in ((top, 3, 0), (top + 1, 0, 0), (-1, 0, 0)):
            with pytest.raises(SlideError, match="does not exist"):
                read_deepzoom_tile(s, grid, *bad)
