"""Datasets from manifests, batched augmentation, the training loop, metrics, calibration."""

from ._data import augment, grayscale_u8, load_images, stain_jitter_u8
from ._evaluate import evaluate, markdown_table
from ._int8 import Int8Report, quantize_models
from ._metrics import best_threshold, binary_metrics, roc_auc, roc_curve
from ._served import ensure_served
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
    "ensure_served",
    "evaluate",
    "fit_temperature",
    "markdown_table",
    "grayscale_u8",
    "load_images",
    "roc_auc",
    "roc_curve",
    "stain_jitter_u8",
    "train",
    "train_many",
]
