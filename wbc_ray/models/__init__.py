"""Architecture registry, preprocessing, checkpoints (safetensors + model card), Grad-CAM."""

from ..scale import tile_scale
from ._checkpoint import (
    TRAINING_PX,
    ModelCard,
    available,
    default_card,
    load_card,
    load_checkpoint,
    save_checkpoint,
)
from ._classifier import Classifier, autocast, default_device, training_precision
from ._cpu import cpu_has_amx, cpu_has_bf16
from ._gradcam import gradcam
from ._load import load_release
from ._preprocess import preprocess
from ._quantize import (
    Int8Model,
    Int8Unavailable,
    int8_id,
    int8_path,
    load_int8,
    quantize_int8,
    save_int8,
    to_openvino,
)
from ._registry import (
    REGISTRY,
    ArchSpec,
    WeightsUnavailable,
    build_model,
    get_spec,
    list_models,
    load_backbone,
    submodule,
)
from ._scorer import STEP_TILES, TileScorer

__all__ = [
    "STEP_TILES",
    "TileScorer",
    "TRAINING_PX",
    "cpu_has_amx",
    "submodule",
    "REGISTRY",
    "ArchSpec",
    "Classifier",
    "Int8Model",
    "Int8Unavailable",
    "ModelCard",
    "WeightsUnavailable",
    "autocast",
    "available",
    "build_model",
    "load_card",
    "cpu_has_bf16",
    "default_card",
    "default_device",
    "get_spec",
    "gradcam",
    "int8_id",
    "int8_path",
    "list_models",
    "load_backbone",
    "load_checkpoint",
    "load_int8",
    "load_release",
    "quantize_int8",
    "save_int8",
    "preprocess",
    "save_checkpoint",
    "tile_scale",
    "to_openvino",
    "training_precision",
]
