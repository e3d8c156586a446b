"""The review workspace in Chromium: the slide at full resolution is the slide's own pixels, a
click opens any tile with its scores, the queue steps and flies, and an overturned call is in
the export."""

from __future__ import annotations

import csv
import io
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from tests._browser import browser_page, need_chromium
from tests.serve.conftest import submit, wait_done


@pytest.fixture(scope="module")
def viewed_slide(slide_dir, test_items):
    """A 6 x 8-field slide, a quarter malignant, in a folder the service reads."""
    from wbc_ray.slides import compose_slide

    p = slide_dir / "viewed.tiff"
    compose_slide(test_items, p, grid=(6, 8), malignant_fraction=0.25, seed=7)
    return p


@pytest.fixture(scope="module")
def job(server, viewed_slide):
    need_chromium()
    with httpx.Client(base_url=server, timeout=60) as api:
        job = submit(api, viewed_slide)
        assert wait_done(api, job)["status"] == "done"
    return job


def _settled(page, timeout_s: float = 60) -> None:
    """Until every tile the view needs is drawn (both layers)."""
    page.wait_for_function(
        "() => { const w = window.wbcReview.viewer.world; return w.getItemCount() === 2 &&"
        " w.getItemAt(0).getFullyLoaded() && w.getItemAt(1).getFullyLoaded(); }",
        timeout=timeout_s * 1000,
    )
    time.sleep(0.3)  # the frame after the last tile


def _on_screen(page, x: float, y: float) -> tuple[float, float]:
    """Page coordinates of level-0 point (x, y)."""
    p = page.evaluate(
        "([x, y]) => { const v = window.wbcReview.viewer;"
        " const q = v.world.getItemAt(0).imageToViewerElementCoordinates(new OpenSeadragon.Point(x, y));"
        " const r = v.element.getBoundingClientRect(); return [r.left + q.x, r.top + q.y]; }",
        [x, y],
    )
    return float(p[0]), float(p[1])


def test_the_viewer_shows_pixels_opens_tiles_and_steps_the_queue(server, job, viewed_slide) -> None:
    from wbc_ray.slides import open_slide

    api = httpx.Client(base_url=server, timeout=60)
    queue = api.get(f"/jobs/{job}/queue", params={"per_group": 25}).json()["items"]
    with browser_page(f"{server}/viewer?job={job}", ready="body[data-ready='1']", height=1000) as page:
        _settled(page)
        assert "viewed.tiff" in page.inner_text("header")
        assert "µm/px" in page.inner_text("#slide-details")
        assert "Malignant share of the scored tiles" in page.inner_text("#verdict")

        # Full resolution: one slide pixel per screen pixel, centred on a field, calls hidden.
        page.uncheck("#overlay-on")
        cx, cy = queue[0]["x"] + 100, queue[0]["y"] + 100
        page.evaluate(
            "([x, y]) => { const v = window.wbcReview.viewer, img = v.world.getItemAt(0);"
            " v.viewport.zoomTo(img.imageToViewportZoom(1), null, true);"
            " v.viewport.panTo(img.imageToViewportCoordinates(x, y), true); }",
            [cx, cy],
        )
        _settled(page)
        left, top = _on_screen(page, cx - 96, cy - 96)
        shot = page.screenshot(clip={"x": left, "y": top, "width": 192, "height": 192})
        shown = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB")).astype(int)
        with open_slide(viewed_slide) as s:
            truth = s.read(int(round(cx - 96)), int(round(cy - 96)), 0, (192, 192)).astype(int)
        assert np.abs(shown - truth).mean() < 8, np.abs(shown - truth).mean()  # JPEG tiles

        # Step the queue: the viewer flies to each tile and shows its scores.
        page.keyboard.press("n")
        page.wait_for_function(
            f"() => document.querySelector('#tile-title').textContent.startsWith('Tile {queue[0]['tile']} ')"
        )
        assert page.inner_text("#queue-pos").startswith("1 / ")
        page.click("#next")
        second = queue[1]
        page.wait_for_function(
            f"() => document.querySelector('#tile-title').textContent.startsWith('Tile {second['tile']} ')"
        )
        centre = page.evaluate(
            "() => { const v = window.wbcReview.viewer; const c = v.viewport.getCenter(false);"
            " const p = v.world.getItemAt(0).viewportToImageCoordinates(c); return [p.x, p.y]; }"
        )
        assert abs(centre[0] - (second["x"] + second["size"] / 2)) < second["size"] / 2
        assert abs(centre[1] - (second["y"] + second["size"] / 2)) < second["size"] / 2
        scores = page.inner_text("#tile-scores")
        for model, p in second["models"].items():
            assert f"{model}: p(malignant)" in scores and f"{p:.3f}" in scores

        # Any tile opens with a click, a benign call included; its Grad-CAMs follow.
        rows = list(csv.DictReader(io.StringIO(api.get(f"/jobs/{job}/tiles.csv").text)))
        benign = next(r for r in rows if r["call"] == "benign")
        bx, by = int(benign["x"]) + 112, int(benign["y"]) + 112
        # The last fly-to may still be animating: jump to where it ends, then pan at once.
        page.evaluate(
            "([x, y]) => { const v = window.wbcReview.viewer, img = v.world.getItemAt(0);"
            " v.viewport.fitBounds(v.viewport.getBounds(false), true);"
            " v.viewport.panTo(img.imageToViewportCoordinates(x, y), true); }",
            [bx, by],
        )
        _settled(page)
        page.mouse.click(*_on_screen(page, bx, by))
        page.wait_for_function(
            f"() => document.querySelector('#tile-title').textContent.startsWith('Tile {benign['tile']} ')"
        )
        assert "called benign" in page.inner_text("#tile-title")
        page.wait_for_selector("#cams figure img", timeout=120_000)

        # Overturn it; the export has the reviewer's class beside the models' call.
        page.click("button[data-decision='malignant']")
        page.wait_for_function(
            "() => document.querySelector('#tile-review').textContent.startsWith('Reviewed')"
        )
        assert "1 overturned" in page.inner_text("#review-counts")
        page.check("#overlay-on")
        _settled(page)
    after = {r["tile"]: r for r in csv.DictReader(io.StringIO(api.get(f"/jobs/{job}/tiles.csv").text))}
    assert (after[benign["tile"]]["call"], after[benign["tile"]]["reviewed_class"]) == ("benign", "malignant")
