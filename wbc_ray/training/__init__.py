"""Datasets from manifests, batched augmentation, the training loop, metrics, calibration."""

from ._data import augment, grayscale_u8, load_images, stain_jitter_u8
from ._evaluate import evaluate, markdown_table
from ._int8 import Int8Report, quantize_models
from ._metrics import best_threshold, binary_metrics, roc_auc, roc_curve
from ._presets import PRESETS, ensure_models, ensure_served, has_models, quick_models_dir
from ._tile_rates import RATES_FILE, ensure_tile_rates, load_tile_rates, measure_tile_rates, rates_for
from ._train import DEFAULT_EPOCHS, TrainConfig, fit_temperature, train, train_many

__all__ = [
    "Int8Report",
    "quantize_models",
    "RATES_FILE",
    "ensure_tile_rates",
    "load_tile_rates",
    "measure_tile_rates",
    "rates_for",
    "DEFAULT_EPOCHS",
    "TrainConfig",
    "augment",
    "best_threshold",
    "binary_metrics",
    "PRESETS",
    "ensure_models",
    "ensure_served",
    "evaluate",
    "has_models",
    "fit_temperature",
    "markdown_table",
    "grayscale_u8",
    "load_images",
    "quick_models_dir",
    "roc_auc",
    "roc_curve",
    "stain_jitter_u8",
    "train",
    "train_many",
]
