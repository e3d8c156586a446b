"""`wbc-ray ui` as its own process and a headless Chromium page on it, for the browser tests."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

CHROMIUM = os.environ.get("WBC_RAY_CHROMIUM", "/usr/bin/chromium")


def need_chromium() -> None:
    """Skip without a Chromium, except in CI (WBC_RAY_REQUIRE_BROWSER=1), where that fails."""
    if not Path(CHROMIUM).exists():
        why = f"no Chromium at {CHROMIUM} (`make browser` installs it; or set WBC_RAY_CHROMIUM)"
        if os.environ.get("WBC_RAY_REQUIRE_BROWSER") == "1":
            pytest.fail(why)
        pytest.skip(why)


def _free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@contextmanager
def ui_process(api: str, port: int) -> Iterator[str]:
    """`wbc-ray ui --api API` started as the operator would; its URL once it answers."""
    need_chromium()
    assert _free(port), f"port {port} is taken"
    exe = shutil.which("wbc-ray", path=str(Path(sys.executable).parent))
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen(
        [exe or "wbc-ray", "ui", "--api", api, "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
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
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextmanager
def browser_page(url: str, ready: str = "#analyse", height: int = 1800) -> Iterator[Any]:
    """A headless Chromium page on `url` (the UI by default), once `ready` is there."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-background-networking"]
        )
        try:
            pg = browser.new_page(viewport={"width": 1400, "height": height})
            pg.goto(url, wait_until="domcontentloaded")
            pg.wait_for_selector(ready, timeout=60_000)
            yield pg
        finally:
            browser.close()


def wait_status(page: Any, pattern: str, timeout_s: float = 300) -> str:
    """The page's status line once it matches `pattern`."""
    import re

    deadline = time.time() + timeout_s
    text = ""
    while time.time() < deadline:
        text = page.inner_text("#status")
        if re.search(pattern, text):
            return text
        time.sleep(0.3)
    raise AssertionError(f"status never matched {pattern!r}; last: {text!r}")
