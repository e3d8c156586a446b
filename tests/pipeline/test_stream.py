from __future__ import annotations

import numpy as np
import pytest

from wbc_ray.pipeline import plan_slide, stream_slide, work_unit
from wbc_ray.slides import GridSpec, open_slide, read_tile
from wbc_ray.store import done_chunks, open_store


def test_tiles_land_in_zarr_exactly_as_read(ray_local, composed, tmp_path) -> None:
    plan = plan_slide(composed, GridSpec(tile_px=64, mpp=1.0))
    out = tmp_path / "job.zarr"
    res = stream_slide(plan, out, chunk_tiles=16, progress=False)
    n = len(plan.grid)
    assert res.n_tiles == n > 40 and res.n_chunks == -(-n // 16)
    g = open_store(out)
    assert g["pixels"].shape == (n, 64, 64, 3)
    assert g["pixels"].chunks == (16, 64, 64, 3)
    assert np.array_equal(g["coords"][:], plan.grid.coords)
    assert done_chunks(out).all()
    attrs = dict(g.attrs)
    assert attrs["status"] == "tiled" and attrs["slide"]["vendor"] == "generic-tiff"
    assert attrs["tiling"]["level"] == plan.grid.level and len(attrs["slide_sha256"]) == 64
    with open_slide(composed) as s:
        for i in (0, n // 2, n - 1):  # first, middle, last (a partial chunk)
            x, y = plan.grid.coords[i]
            want = read_tile(s, int(x), int(y), plan.grid.level, plan.grid.read_px, 64)
            assert np.array_equal(g["pixels"][i], want)


def test_resume_skips_done_chunks(ray_local, composed, tmp_path) -> None:
    plan = plan_slide(composed, GridSpec(tile_px=64, mpp=1.0))
    out = tmp_path / "resume.zarr"
    stream_slide(plan, out, chunk_tiles=16, progress=False)
    g = open_store(out, "r+")
    before = np.asarray(g["pixels"][:])
    # Simulate a kill: two chunks lost their data and their done flag.
    g["done"][1] = False
    g["done"][3] = False
    g["pixels"][16:32] = 0
    g["pixels"][48:64] = 0
    res = stream_slide(plan, out, chunk_tiles=16, progress=False)
    assert res.chunks_run == 2
    assert np.array_equal(open_store(out)["pixels"][:], before)


def test_layout_mismatch_is_refused(ray_local, composed, tmp_path) -> None:
    out = tmp_path / "x.zarr"
    stream_slide(plan_slide(composed, GridSpec(tile_px=64, mpp=1.0)), out, chunk_tiles=16, progress=False)
    with pytest.raises(FileExistsError, match="different layout"):
        stream_slide(plan_slide(composed, GridSpec(tile_px=32, mpp=1.0)), out, chunk_tiles=16, progress=False)


def test_tissue_free_slide_gives_empty_store(ray_local, tmp_path) -> None:
    from PIL import Image

    p = tmp_path / "glass.png"
    Image.new("RGB", (300, 300), (238, 235, 240)).save(p)
    plan = plan_slide(p, GridSpec(tile_px=32, mpp=0.5), default_mpp=0.5)
    res = stream_slide(plan, tmp_path / "glass.zarr", chunk_tiles=8, progress=False)
    assert res.n_tiles == 0 and open_store(tmp_path / "glass.zarr")["pixels"].shape[0] == 0


def test_scoring_work_units_shrink_for_small_slides() -> None:
    assert work_unit(2500, 256, 4) == 256  # large slide: the configured unit
    assert work_unit(500, 256, 4) == 128  # 4 units in flight, in steps of 32
    assert work_unit(130, 256, 4) == 64
    assert work_unit(10, 256, 4) == 32  # never below 32
    assert work_unit(10, 16, 4) == 16  # nor above the configured unit
    assert work_unit(0, 256, 4) == 32


def test_tile_slide_takes_the_settings_and_overrides_them_per_flag(ray_local, composed, tmp_path) -> None:
    from wbc_ray.config import load_settings
    from wbc_ray.pipeline import tile_slide

    s = load_settings(**{"tiling.tile_px": 48, "tiling.mpp": 1.0, "tiling.chunk_tiles": 32})
    res = tile_slide(composed, tmp_path / "a.zarr", settings=s, progress=False, preview=tmp_path / "p.png")
    g = open_store(res.store)
    assert g["pixels"].shape[1:] == (48, 48, 3) and g["pixels"].chunks[0] == 32
    assert (tmp_path / "p.png").stat().st_size > 1000
    res = tile_slide(composed, tmp_path / "b.zarr", settings=s, tile_px=64, progress=False)
    assert open_store(res.store)["pixels"].shape[1:] == (64, 64, 3)
    # A coarser grid over the same slide has fewer tiles.
    assert res.n_tiles < g["coords"].shape[0]
