"""The Gradio page in a real headless Chromium, as its own process over the running REST API."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

CHROMIUM = os.environ.get("WBC_RAY_CHROMIUM", "/usr/bin/chromium")
UI_PORT = 8124


def _free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture(scope="module")
def ui(server):
    """`wbc-ray ui` started as the operator would, against the test app."""
    if not Path(CHROMIUM).exists():
        why = f"no Chromium at {CHROMIUM} (`make browser` installs it; or set WBC_RAY_CHROMIUM)"
        if os.environ.get("WBC_RAY_REQUIRE_BROWSER") == "1":
            pytest.fail(why)
        pytest.skip(why)
    assert _free(UI_PORT), f"port {UI_PORT} is taken"
    exe = shutil.which("wbc-ray", path=str(Path(sys.executable).parent))
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen(
        [exe or "wbc-ray", "ui", "--api", server, "--port", str(UI_PORT)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{UI_PORT}"
    deadline = time.time() + 90
    while time.time() < deadline and proc.poll() is None:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail(f"`wbc-ray ui` did not come up:\n{proc.stdout.read() if proc.stdout else ''}")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def page(ui):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-background-networking"]
        )
        pg = browser.new_page(viewport={"width": 1400, "height": 1800})
        pg.goto(ui, wait_until="domcontentloaded")
        pg.wait_for_selector("#analyse", timeout=60_000)
        yield pg
        browser.close()


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


def _wait_status(page, pattern: str, timeout_s: float = 300) -> str:
    deadline = time.time() + timeout_s
    text = ""
    while time.time() < deadline:
        text = page.inner_text("#status")
        if re.search(pattern, text):
            return text
        time.sleep(0.3)
    raise AssertionError(f"status never matched {pattern!r}; last: {text!r}")


def test_a_slide_from_upload_to_verdict_heatmap_and_gradcam(page, server, composed) -> None:
    _upload(page, composed)
    page.click("#analyse")
    seen = {_wait_status(page, r"Running — \d+ / \d+ tiles|Done")}  # live progress (or already done)
    done = _wait_status(page, r"Done")
    job = re.search(r"job ([0-9a-f]{16})", done)
    assert job, done
    res = httpx.get(f"{server}/jobs/{job.group(1)}/result", timeout=30).json()

    # The verdict card says what the API says.
    card = page.inner_text("#verdict")
    assert f"Verdict: {res['verdict'].upper()}" in card
    assert f"{res['malignant_fraction']:.3f}" in card
    assert f"{res['interval'][0]:.3f}–{res['interval'][1]:.3f}" in card
    assert f"{res['n_tiles']:,}" in card
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
    tiles = httpx.get(f"{server}/jobs/{job.group(1)}/tiles.csv", timeout=30).text.splitlines()[1:]
    top = max(tiles, key=lambda r: float(r.split(",")[5]))
    assert f"tile {top.split(',')[0]}: fused" in page.input_value("#tile input")
    # Another tile from the list is explained in its turn, with that tile's probabilities.
    second = sorted(tiles, key=lambda r: -float(r.split(",")[5]))[1].split(",")[0]
    page.click("#tile input")
    page.get_by_role("option", name=re.compile(rf"^tile {second}: ")).first.click()
    page.wait_for_function(
        "t => document.querySelector('#tile input').value.startsWith(t)", arg=f"tile {second}: "
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
    done = _wait_status(page, rf"job {mine['job_id']}", timeout_s=120)
    assert "Done" in done
    card = page.inner_text("#verdict")
    assert f"Verdict: {res['verdict'].upper()}" in card and f"{res['malignant_fraction']:.3f}" in card
    page.wait_for_function("document.querySelectorAll('#gradcam img').length >= 3", timeout=120_000)


def test_a_bad_upload_is_named_and_the_page_keeps_working(page, server, tmp_path) -> None:
    junk = tmp_path / "notes.tiff"
    junk.write_bytes(b"this is not a slide\n" * 100)
    _upload(page, junk)
    page.click("#analyse")
    text = _wait_status(page, r"Error \(4\d\d\)", timeout_s=60)
    assert "notes.tiff: not a slide" in text  # says which file and why
    assert httpx.get(f"{server}/health", timeout=10).status_code == 200


def test_a_slide_by_its_path_on_the_server(page, server, slide_dir, composed) -> None:
    target = slide_dir / "by_path.tiff"
    shutil.copyfile(composed, target)
    clear = page.locator("#slide-file button[aria-label='Clear']")
    if clear.count():
        clear.first.click()
    page.fill("#slide-path textarea, #slide-path input", str(target))
    before = {j["job_id"] for j in httpx.get(f"{server}/jobs", timeout=30).json()}
    page.click("#analyse")
    done = _wait_status(page, r"Done — .* job [0-9a-f]{16}", timeout_s=180)
    job = re.search(r"job ([0-9a-f]{16})", done)
    assert job and job.group(1) not in before, done
    rec = httpx.get(f"{server}/jobs/{job.group(1)}", timeout=30).json()
    assert rec["slide"] == str(target)  # the path went in
    res = httpx.get(f"{server}/jobs/{job.group(1)}/result", timeout=30).json()
    assert f"Verdict: {res['verdict'].upper()}" in page.inner_text("#verdict")
