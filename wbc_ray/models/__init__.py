"""Architecture registry, preprocessing, checkpoints (safetensors + model card), Grad-CAM."""

from ..scale import tile_scale
from ._checkpoint import ModelCard, available, default_card, load_checkpoint, save_checkpoint
from ._classifier import Classifier, autocast, default_device, training_precision
from ._cpu import cpu_has_bf16
from ._gradcam import gradcam
from ._preprocess import preprocess
from ._quantize import BUCKETS as INT8_BUCKETS
from ._quantize import SCHEMES as INT8_SCHEMES
from ._quantize import (
    Int8Graph,
    Int8Unavailable,
    compiled_cache,
    int8_matches,
    int8_path,
    load_int8,
    measure_int8,
    save_int8,
)
from ._registry import (
    REGISTRY,
    ArchSpec,
    WeightsUnavailable,
    build_model,
    get_spec,
    list_models,
    load_backbone,
)

__all__ = [
    "REGISTRY",
    "ArchSpec",
    "Classifier",
    "INT8_BUCKETS",
    "INT8_SCHEMES",
    "Int8Graph",
    "Int8Unavailable",
    "ModelCard",
    "WeightsUnavailable",
    "autocast",
    "available",
    "build_model",
    "compiled_cache",
    "cpu_has_bf16",
    "default_card",
    "default_device",
    "get_spec",
    "gradcam",
    "int8_matches",
    "int8_path",
    "list_models",
    "load_backbone",
    "load_checkpoint",
    "load_int8",
    "measure_int8",
    "save_int8",
    "preprocess",
    "save_checkpoint",
    "tile_scale",
    "training_precision",
]
