"""Retake the README's and the docs' pictures from the real page (`make screenshots`).

Starts the service (a local Ray and the Serve app on 127.0.0.1:8130) and the Gradio page
(127.0.0.1:8131) over a composed slide of the test split, analyses it through the page, and
photographs in headless Chromium: the page after the analysis (docs/ui.png), the review
workspace over the whole slide with the calls (docs/review-slide.png), a field zoomed to the
cells (docs/review-zoom.png), and the review queue on a tile with its Grad-CAMs
(docs/review-queue.png).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

DOCS = Path(__file__).resolve().parent
DATA = Path(os.environ.get("WBC_RAY_DATA", DOCS.parent.parent / "shared" / "data"))
API, UI = 8130, 8131
CHROMIUM = os.environ.get("WBC_RAY_CHROMIUM", "/usr/bin/chromium")


def _wait(url: str, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} did not answer in {seconds:.0f} s")


def _settled(page) -> None:  # type: ignore[no-untyped-def]
    page.wait_for_function(
        "() => { const w = window.wbcReview.viewer.world; return w.getItemCount() === 2 &&"
        " w.getItemAt(0).getFullyLoaded() && w.getItemAt(1).getFullyLoaded(); }",
        timeout=120_000,
    )
    time.sleep(0.5)


def main() -> None:
    from playwright.sync_api import sync_playwright
    from ray import serve

    from wbc_ray.manifest import read_manifest
    from wbc_ray.serve import start
    from wbc_ray.slides import compose_slide

    work = Path(tempfile.mkdtemp(prefix="wbc-ray-shots-"))
    slides = work / "slides"
    slides.mkdir()
    slide = slides / "smear_B12.tiff"
    items = read_manifest(DATA / "all_taleqani" / "split.csv", "test")
    compose_slide(items, slide, grid=(8, 10), malignant_fraction=0.3, seed=12)
    print("starting the service ...", flush=True)
    start(port=API, results_dir=str(work / "results"), slide_roots=[str(slides)])
    api = f"http://127.0.0.1:{API}"
    _wait(f"{api}/health")
    ui = subprocess.Popen(
        [sys.executable, "-m", "wbc_ray.cli", "ui", "--api", api, "--port", str(UI)],
        env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"},
    )
    try:
        _wait(f"http://127.0.0.1:{UI}")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{UI}", wait_until="domcontentloaded")
            page.wait_for_selector("#analyse", timeout=60_000)
            page.fill("#slide-path textarea, #slide-path input", str(slide))
            page.click("#analyse")
            print("analysing through the page ...", flush=True)
            deadline = time.time() + 600
            while not re.search(r"Done", page.inner_text("#status")) and time.time() < deadline:
                time.sleep(1)
            job = re.search(r"job ([0-9a-f]{16})", page.inner_text("#status"))
            if job is None:
                raise SystemExit(f"the analysis did not finish: {page.inner_text('#status')}")
            page.wait_for_function("document.querySelectorAll('#gradcam img').length >= 3", timeout=300_000)
            page.set_viewport_size({"width": 1400, "height": 1500})
            page.screenshot(path=str(DOCS / "ui.png"), clip={"x": 0, "y": 0, "width": 1400, "height": 1500})

            view = browser.new_page(viewport={"width": 1500, "height": 900})
            view.goto(f"{api}/viewer?job={job.group(1)}", wait_until="domcontentloaded")
            view.wait_for_selector("body[data-ready='1']", timeout=120_000)
            _settled(view)
            view.screenshot(path=str(DOCS / "review-slide.png"))
            # The review queue: its second tile, flown to, with each model's Grad-CAM.
            view.keyboard.press("n")
            view.keyboard.press("n")
            view.wait_for_function("document.querySelectorAll('#cams img').length >= 3", timeout=300_000)
            _settled(view)
            view.screenshot(path=str(DOCS / "review-queue.png"))
            # A field at full resolution (one slide pixel per screen pixel), the calls faint.
            view.fill("#opacity", "25")
            view.dispatch_event("#opacity", "input")
            view.evaluate(
                "() => { const v = window.wbcReview.viewer, img = v.world.getItemAt(0);"
                " v.viewport.zoomTo(img.imageToViewportZoom(1), null, true); }"
            )
            _settled(view)
            view.screenshot(path=str(DOCS / "review-zoom.png"))
            browser.close()
        for name in ("ui.png", "review-slide.png", "review-queue.png", "review-zoom.png"):
            print(f"wrote docs/{name}")
    finally:
        ui.terminate()
        ui.wait(timeout=30)
        serve.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
