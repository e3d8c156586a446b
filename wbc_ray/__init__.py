"""wbc-ray: screening of whole-slide scans for acute lymphoblastic leukemia on Ray.

The few things a notebook needs, imported on first use (``import wbc_ray`` stays light):

- ``open_slide(path)``: a whole-slide file or image (``wbc_ray.slides``).
- ``analyze_slides(paths, out_dir)``: tiles, the three CNNs on Ray Serve, the slide verdict.
- ``load_release(models_dir=None)``: the released classifiers, verified file by file.
- ``fuse(probs, method)``: fuse per-model probabilities (fuzzy rank, mean, vote).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .config import VERSION as __version__

_EXPORTS = {
    "open_slide": "wbc_ray.slides",
    "analyze_slides": "wbc_ray.analyze",
    "load_release": "wbc_ray.models",
    "fuse": "wbc_ray.ensemble",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'wbc_ray' has no attribute {name!r}")
