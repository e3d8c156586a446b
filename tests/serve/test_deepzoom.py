"""Deep Zoom over REST: a finished job's slide and its call overlay on one grid, for the viewer."""

from __future__ import annotations

import io
import threading
import xml.etree.ElementTree as ET

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.serve.conftest import submit, wait_done

NS = "{http://schemas.microsoft.com/deepzoom/2008}"


@pytest.fixture(scope="module")
def viewed(server, mixed_slide):
    """A finished job of the mixed slide (one per module: every test here only reads it)."""
    with httpx.Client(base_url=server, timeout=60) as api:
        job = submit(api, mixed_slide)
        assert wait_done(api, job)["status"] == "done"
    return job


def _dzi(api, job: str, layer: str) -> dict:
    r = api.get(f"/jobs/{job}/{layer}.dzi")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/xml")
    root = ET.fromstring(r.text)
    size = root.find(f"{NS}Size")
    return {
        "format": root.get("Format"),
        "tile": int(root.get("TileSize")),
        "overlap": int(root.get("Overlap")),
        "width": int(size.get("Width")),
        "height": int(size.get("Height")),
    }


def test_slide_tiles_are_the_slides_own_pixels(api, viewed, mixed_slide) -> None:
    from wbc_ray.slides import DeepZoomGrid, open_slide

    d = _dzi(api, viewed, "slide")
    with open_slide(mixed_slide) as s:
        assert (d["width"], d["height"]) == s.dimensions and d["format"] == "jpeg"
        grid = DeepZoomGrid(d["width"], d["height"], d["tile"], d["overlap"])
        top = grid.levels - 1
        for col, row in ((0, 0), (1, 1), (grid.tile_count(top)[0] - 1, 0)):
            r = api.get(f"/jobs/{viewed}/slide_files/{top}/{col}_{row}.jpeg")
            assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
            shown = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB")).astype(int)
            x0, y0, x1, y1 = grid.tile_box(top, col, row)
            truth = s.read(x0, y0, 0, (x1 - x0, y1 - y0)).astype(int)
            assert shown.shape == truth.shape
            assert np.abs(shown - truth).mean() < 4, (col, row)  # JPEG at quality 85
        # The smallest levels come from the thumbnail: the whole slide in one pixel.
        assert Image.open(io.BytesIO(api.get(f"/jobs/{viewed}/slide_files/0/0_0.jpeg").content)).size == (
            1,
            1,
        )
    # Caching headers: a repeated request with the ETag is a 304 without a body.
    r = api.get(f"/jobs/{viewed}/slide_files/{top}/0_0.jpeg")
    again = api.get(
        f"/jobs/{viewed}/slide_files/{top}/0_0.jpeg", headers={"If-None-Match": r.headers["etag"]}
    )
    assert again.status_code == 304 and not again.content
    # A tile beyond the grid, a level beyond the pyramid, a malformed name: refused by name.
    cols, rows = grid.tile_count(top)
    assert api.get(f"/jobs/{viewed}/slide_files/{top}/{cols}_0.jpeg").status_code == 404
    assert api.get(f"/jobs/{viewed}/slide_files/{top + 1}/0_0.jpeg").status_code == 404
    assert api.get(f"/jobs/{viewed}/slide_files/{top}/0_0.gif").status_code == 422
    assert api.get(f"/jobs/{viewed}/thumbnail.dzi").status_code in (404, 422)


def test_the_overlay_shows_the_calls_on_the_same_grid(api, viewed) -> None:
    from wbc_ray.slides import DeepZoomGrid
    from wbc_ray.store._overlay import CALLED_RGB, FILL_ALPHA

    d = _dzi(api, viewed, "overlay")
    assert d["format"] == "png" and (d["width"], d["height"]) == (
        _dzi(api, viewed, "slide")["width"],
        d["height"],
    )
    grid = DeepZoomGrid(d["width"], d["height"], d["tile"], d["overlap"])
    whole = next(lv for lv in range(grid.levels) if max(grid.level_size(lv)) > d["tile"]) - 1
    r = api.get(f"/jobs/{viewed}/overlay_files/{whole}/0_0.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    px = np.asarray(Image.open(io.BytesIO(r.content)))
    assert px.shape[2] == 4
    result = api.get(f"/jobs/{viewed}/result").json()
    filled = (px[..., 3] == FILL_ALPHA).sum()
    outlined = (np.all(px[..., :3] == CALLED_RGB, axis=-1) & (px[..., 3] == 255)).sum()
    assert filled > 0.2 * px.shape[0] * px.shape[1]  # the tiles, translucent
    assert outlined > 0 and result["n_malignant"] > 0  # malignant calls outlined
    assert (px[:2, :2, 3] == 0).all()  # the glass margin: nothing drawn


def test_health_answers_while_a_viewer_pulls_hundreds_of_tiles(api, server, viewed) -> None:
    d = _dzi(api, viewed, "slide")
    from wbc_ray.slides import DeepZoomGrid

    grid = DeepZoomGrid(d["width"], d["height"], d["tile"], d["overlap"])
    wanted = [
        f"/jobs/{viewed}/{layer}_files/{lv}/{c}_{r}.{ext}"
        for lv in (grid.levels - 1, grid.levels - 2)
        for c in range(grid.tile_count(lv)[0])
        for r in range(grid.tile_count(lv)[1])
        for layer, ext in (("slide", "jpeg"), ("overlay", "png"))
    ]
    assert len(wanted) >= 200
    codes: list[int] = []

    def pull(part: list[str]) -> None:
        with httpx.Client(base_url=server, timeout=120) as c:
            codes.extend(c.get(u).status_code for u in part)

    pullers = [threading.Thread(target=pull, args=(wanted[k::4],)) for k in range(4)]
    for t in pullers:
        t.start()
    answered = 0
    with httpx.Client(base_url=server, timeout=60) as c:
        while any(t.is_alive() for t in pullers):
            assert c.get("/health").status_code == 200
            answered += any(t.is_alive() for t in pullers)
    for t in pullers:
        t.join()
    assert codes.count(200) == len(wanted)
    assert answered >= 10, f"/health answered {answered} times while {len(wanted)} tiles were pulled"
