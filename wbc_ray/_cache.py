"""wbc-ray's folder in the user cache: per-machine things derived from the repository's files
(int8 models, tile rates) and local copies of remote slides.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """$WBC_RAY_CACHE, else $XDG_CACHE_HOME/wbc-ray, else ~/.cache/wbc-ray."""
    if os.environ.get("WBC_RAY_CACHE"):
        return Path(os.environ["WBC_RAY_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "wbc-ray"
