"""Helpers for the REST tests (the running app itself is a fixture in tests/conftest.py)."""

from __future__ import annotations

import time

import httpx


def wait_done(api: httpx.Client, job_id: str, timeout: float = 600) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = api.get(f"/jobs/{job_id}").json()
        if st["status"] in {"done", "failed"}:
            return st
        time.sleep(0.5)
    raise TimeoutError(f"job {job_id} not finished in {timeout} s")
