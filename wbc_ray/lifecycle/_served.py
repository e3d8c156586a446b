"""What serving a set of models needs on this machine, built once: int8 models and their tile rates."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ..models import available
from ._int8 import quantize_models
from ._tile_rates import ensure_tile_rates, has_int8


def ensure_served(
    models_dir: str | os.PathLike[str],
    manifest: str | os.PathLike[str],
    precision: Mapping[str, str] | None = None,
    images: int = 256,
    grid: int = 16,
) -> Path:
    """The int8 models where `precision` (a Serve config's) asks for int8 and none is built yet
    (for a release, into its folder in the user cache), then the tile rates measured on the calls
    the app makes (a release ships them for fp32 and bf16; int8 ones are measured here). About a
    minute for the release on a 2-core CPU; nothing once built.
    """
    out = Path(models_dir)
    wanted = [n for n in available(out) if (precision or {}).get(n) == "int8" and not has_int8(out, n)]
    if wanted:
        quantize_models(out, manifest, wanted, images=images)
    ensure_tile_rates(out, manifest, precision, grid=grid)
    return out
