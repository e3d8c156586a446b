"""The record a running `wbc-ray serve` leaves on its machine, so that a one-off `wbc-ray analyze`
there finds it and sends its slides to it (at the service's speed, with the models already up)
instead of loading the models a second time beside it.

One record per user (in wbc-ray's cache folder). It holds no secret: the Ray address is local,
and the service's REST API keeps its own accounts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ._cache import cache_root


def record_path() -> Path:
    """Where the running service's record is: `<cache>/service.json`."""
    return cache_root() / "service.json"


def _started(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch), or None when it is not running."""
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def write_record(
    ray_address: str, url: str, models_dir: str, app_name: str, models: list[str] | None
) -> Path:
    """Record this process as the running service (written whole, then moved into place):
    `models` is the networks its Serve config names (None: every one in `models_dir`).
    """
    path = record_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "pid": os.getpid(),
        "started": _started(os.getpid()),
        "ray_address": ray_address,
        "url": url,
        "models_dir": str(Path(models_dir).resolve()),
        "models": sorted(models) if models else None,  # the Serve config's list; None: all of them
        "app_name": app_name,
        # Whether the cluster asks for Ray's token (a new local cluster does unless told not to);
        # the token itself stays where Ray keeps it (~/.ray/auth_token), never in this record.
        "ray_auth_mode": os.environ.get("RAY_AUTH_MODE", "disabled"),
    }
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(path)
    return path


def remove_record() -> None:
    """Remove the record if it is this process's (a newer service's record stays)."""
    found = _read()
    if found is not None and found.get("pid") == os.getpid():
        record_path().unlink(missing_ok=True)


def _read() -> dict[str, Any] | None:
    try:
        found = json.loads(record_path().read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def running_service() -> dict[str, Any] | None:
    """The running service's record, or None when there is none or its process is gone (a service
    that was killed leaves its record; a process that has the pid since is told apart by its
    start time).
    """
    found = _read()
    if found is None or not isinstance(found.get("pid"), int) or not found.get("ray_address"):
        return None
    started = _started(found["pid"])
    if started is None or found.get("started") is None or abs(started - float(found["started"])) > 1:
        return None
    return found
