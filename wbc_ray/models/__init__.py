"""Architecture registry, preprocessing, checkpoints (safetensors + model card), Grad-CAM."""

from ..scale import tile_scale
from ._checkpoint import ModelCard, available, default_card, load_checkpoint, save_checkpoint
from ._classifier import Classifier, autocast, default_device
from ._gradcam import gradcam
from ._preprocess import preprocess
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
    "ModelCard",
    "WeightsUnavailable",
    "autocast",
    "available",
    "build_model",
    "default_card",
    "default_device",
    "get_spec",
    "gradcam",
    "list_models",
    "load_backbone",
    "load_checkpoint",
    "preprocess",
    "save_checkpoint",
    "tile_scale",
]
