"""The Gradio page in a real headless Chromium, as its own process over the running REST API."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import httpx
import pytest

from tests._browser import browser_page, ui_process, wait_status

UI_PORT = 8124


@pytest.fixture(scope="module")
def ui(server):
    """`wbc-ray ui` started as the operator would, against the test app."""
    with ui_process(server, UI_PORT) as url:
        yield url


@pytest.fixture(scope="module")
def page(ui):
    with browser_page(ui) as pg:
        yield pg


def _upload(page, path: Path) -> None:
    """Put a file in the slide box (replacing one already there) and wait until it shows."""
    clear = page.locator("#slide-file button[aria-label='Clear']")
    if clear.count():
        clear.first.click()
    page.locator("#slide-file input[type=file]").set_input_files(str(path))
    page.wait_for_function(
        "name => document.querySelector('#slide-file').innerText.replace(/\\s+/g, '').includes(name)",
        arg=path.name,
        timeout=30_000,
    )


def test_a_slide_from_upload_to_verdict_heatmap_and_gradcam(page, server, composed) -> None:
    _upload(page, composed)
    page.click("#analyse")
    seen = {wait_status(page, r"Running — \d+ / \d+ tiles|Done")}  # live progress (or already done)
    done = wait_status(page, r"Done")
    job = re.search(r"job ([0-9a-f]{16})", done)
    assert job, done
    res = httpx.get(f"{server}/jobs/{job.group(1)}/result", timeout=30).json()

    # The verdict card says what the API says.
    card = page.inner_text("#verdict")
    assert f"Verdict: {res['verdict'].upper()}" in card
    assert f"{res['malignant_fraction']:.3f}" in card
    assert f"{res['interval'][0]:.3f}–{res['interval'][1]:.3f}" in card
    assert f"{res['n_tiles']:,}" in card
    assert "Review: not reviewed yet" in card  # the slide summary says what the reviewer did
    # What quality control and the domain check found, and the normalisation used (menu: release).
    assert f"Rejected by quality control (not scored) {res['n_rejected']:,}" in card
    assert "Domain check:" in card and f"stain normalisation {res['stain']}" in card
    # The interval picture and the heatmap are images the browser decoded.
    size = page.eval_on_selector("#interval img", "i => [i.naturalWidth, i.naturalHeight]")
    assert size[0] > 300 and size[1] > 50
    size = page.eval_on_selector("#heatmap img", "i => [i.naturalWidth, i.naturalHeight]")
    assert size[0] > 100 and size[1] > 100
    # Agreement: one row per model plus unanimity.
    table = page.inner_text("#agreement")
    for m in ("inception_v3", "mobilenet", "xception", "all models agree"):
        assert m in table
    # Grad-CAM for the most suspicious tile: one image per model, captioned with its probability.
    page.wait_for_function("document.querySelectorAll('#gradcam img').length >= 3", timeout=120_000)
    cams = page.inner_text("#gradcam")
    for m in ("inception_v3", "mobilenet", "xception"):
        assert re.search(rf"{m}: p\(malignant\) \d\.\d{{3}}", cams), cams
    # The tiles are the service's review queue, most suspicious first.
    queue = httpx.get(f"{server}/jobs/{job.group(1)}/queue", params={"per_group": 10}, timeout=30).json()
    assert f"1. most suspicious · tile {queue['items'][0]['tile']}: fused" in page.input_value("#tile input")
    # Another tile from the list is explained in its turn, with that tile's probabilities.
    second = queue["items"][1]["tile"]
    page.click("#tile input")
    page.get_by_role("option", name=re.compile(rf"^2\. .* tile {second}: ")).first.click()
    page.wait_for_function(
        "t => document.querySelector('#tile input').value.includes(t)", arg=f" tile {second}: "
    )
    g = httpx.get(
        f"{server}/jobs/{job.group(1)}/tiles/{second}/gradcam.png", params={"model": "mobilenet"}, timeout=60
    )
    p_mob = float(g.headers["X-Model-Probability-Malignant"])
    page.wait_for_function(
        "t => document.querySelector('#gradcam').innerText.includes(t)",
        arg=f"mobilenet: p(malignant) {p_mob:.3f}",
        timeout=120_000,
    )
    # The slide's details beside the job; the review workspace in the page, for this job.
    assert "µm/px" in done or "resolution not recorded" in done, done
    src = page.get_attribute("#review iframe", "src") or ""
    assert f"/viewer?job={job.group(1)}" in src, src
    # Downloads: the three exports, named for the job.
    files = re.sub(r"\s+", "", page.inner_text("#downloads"))
    for suffix in (".result.json", ".tiles.csv", ".geojson"):
        assert f"{job.group(1)}{suffix}" in files, files
    assert seen


def test_an_earlier_analysis_reopens_after_a_reload(page, ui, server, composed) -> None:
    jobs = httpx.get(f"{server}/jobs", timeout=30).json()
    mine = [j for j in jobs if j["slide"] == composed.name and j["status"] == "done"][-1]
    res = httpx.get(f"{server}/jobs/{mine['job_id']}/result", timeout=30).json()
    page.goto(ui, wait_until="domcontentloaded")  # a fresh page: nothing shown
    page.wait_for_selector("#analyse", timeout=60_000)
    assert "Verdict" not in page.inner_text("#verdict")
    page.click("#jobs input")
    page.get_by_role("option", name=re.compile(re.escape(composed.name))).first.click()
    done = wait_status(page, rf"job {mine['job_id']}", timeout_s=120)
    assert "Done" in done
    card = page.inner_text("#verdict")
    assert f"Verdict: {res['verdict'].upper()}" in card and f"{res['malignant_fraction']:.3f}" in card
    page.wait_for_function("document.querySelectorAll('#gradcam img').length >= 3", timeout=120_000)


def test_a_bad_upload_is_named_and_the_page_keeps_working(page, server, tmp_path) -> None:
    junk = tmp_path / "notes.tiff"
    junk.write_bytes(b"this is not a slide\n" * 100)
    _upload(page, junk)
    page.click("#analyse")
    text = wait_status(page, r"Error \(4\d\d\)", timeout_s=60)
    assert "notes.tiff: not a slide" in text  # says which file and why
    assert httpx.get(f"{server}/health", timeout=10).status_code == 200


def test_a_slide_by_its_path_on_the_server(page, server, slide_dir, composed) -> None:
    target = slide_dir / "by_path.tiff"
    shutil.copyfile(composed, target)
    clear = page.locator("#slide-file button[aria-label='Clear']")
    if clear.count():
        clear.first.click()
    # A path outside the slide folders: refused, naming the folders that are allowed.
    page.fill("#slide-path textarea, #slide-path input", "/etc/hostname")
    page.click("#analyse")
    refused = wait_status(page, r"Error \(403\)", timeout_s=60)
    assert str(slide_dir) in refused, refused
    page.fill("#slide-path textarea, #slide-path input", str(target))
    before = {j["job_id"] for j in httpx.get(f"{server}/jobs", timeout=30).json()}
    page.click("#analyse")
    wait_status(page, r"Submitting|Submitted|Running|Done", timeout_s=60)  # the refusal is gone
    assert "Error" not in page.inner_text("#status")
    done = wait_status(page, r"Done — .* job [0-9a-f]{16}", timeout_s=180)
    job = re.search(r"job ([0-9a-f]{16})", done)
    assert job and job.group(1) not in before, done
    rec = httpx.get(f"{server}/jobs/{job.group(1)}", timeout=30).json()
    assert rec["slide"] == str(target)  # the path went in
    res = httpx.get(f"{server}/jobs/{job.group(1)}/result", timeout=30).json()
    assert f"Verdict: {res['verdict'].upper()}" in page.inner_text("#verdict")
