"""Ready-made training recipes: `full` (make models) and `quick` (demo and tests, a few minutes)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..models import available, list_models
from ._int8 import quantize_models
from ._tile_rates import ensure_tile_rates, has_int8
from ._train import TrainConfig, train

PRESETS: dict[str, dict[str, Any]] = {
    # For plumbing (demo without weights, CI): 80 px is the smallest input InceptionV3 takes
    # with margin; 2 epochs on 400 images per split train all three in about 2 minutes on 2
    # cores. Such models are NOT accurate (from scratch they need ~20 epochs): tests that judge
    # accuracy use the full `make models` set.
    "quick": {"input_size": 80, "epochs": 2, "batch_size": 32, "limit": 400},
}
# Per-model input sides where a preset differs from its default. As `make models` trains Xception
# smaller than the other two, so does the quick preset: the code the quick models exercise (demo,
# CI) then includes tiles read once and resized per model.
INPUT_SIZES: dict[str, dict[str, int]] = {"quick": {"xception": 64}}


def quick_models_dir() -> Path:
    """Where the quick preset is trained once per machine (user cache, outside the checkout)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "wbc-ray" / "quick_models"


def has_models(models_dir: str | os.PathLike[str]) -> bool:
    return set(list_models()) <= set(available(models_dir))


def ensure_models(
    models_dir: str | os.PathLike[str],
    manifest: str | os.PathLike[str],
    preset: str = "quick",
    progress: bool = True,
    precision: Mapping[str, str] | None = None,
) -> Path:
    """Train the preset into `models_dir` unless all three checkpoints are already there, then
    build what serving them needs (`ensure_served`; small slides: the preset is for plumbing)."""
    out = Path(models_dir)
    have = set(available(out))
    for name in list_models():
        if name not in have:
            settings = dict(PRESETS[preset])
            settings["input_size"] = INPUT_SIZES.get(preset, {}).get(name, settings["input_size"])
            train(
                TrainConfig(model=name, manifest=str(manifest), out=str(out), progress=progress, **settings)
            )
    return ensure_served(out, manifest, precision, images=128, grid=8)


def ensure_served(
    models_dir: str | os.PathLike[str],
    manifest: str | os.PathLike[str],
    precision: Mapping[str, str] | None = None,
    images: int = 256,
    grid: int = 16,
) -> Path:
    """What serving `models_dir` in `precision` (a Serve config's) needs on this machine, built
    once: the int8 models where int8 is asked for (for a release, into its folder in the user
    cache), then the tile rates measured on the calls the app makes (a release ships them for
    fp32 and bf16; int8 ones are measured here)."""
    out = Path(models_dir)
    wanted = [n for n in available(out) if (precision or {}).get(n) == "int8" and not has_int8(out, n)]
    if wanted:
        quantize_models(out, manifest, wanted, images=images)
    ensure_tile_rates(out, manifest, precision, grid=grid)
    return out
