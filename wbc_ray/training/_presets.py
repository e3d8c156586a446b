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
    measure their slide-level tile rates (small slides: the preset is for plumbing) and their
    int8 models (so the demo and tests serve the precisions configs/serve.yaml names)."""
    out = Path(models_dir)
    have = set(available(out))
    for name in list_models():
        if name not in have:
            settings = dict(PRESETS[preset])
            settings["input_size"] = INPUT_SIZES.get(preset, {}).get(name, settings["input_size"])
            train(
                TrainConfig(model=name, manifest=str(manifest), out=str(out), progress=progress, **settings)
            )
    # int8 models first: the tile rates must be measured on the calls the app makes (`precision`,
    # from the Serve config, int8 where an int8 model exists).
    stale = [name for name in list_models() if not has_int8(out, name)]
    if stale:
        quantize_models(out, manifest, stale, images=128)
    ensure_tile_rates(out, manifest, precision, grid=8)
    return out
