"""Training: batched augmentation, the training loop, metrics, evaluation, cutting releases."""

from ._adapt import (
    TUNINGS,
    AdaptConfig,
    Refit,
    adapt,
    choose_tuning,
    fused_score,
    model_features,
    model_head,
    replay_sample,
    source_weights,
)
from ._data import augment, grayscale_u8, stain_jitter_u8
from ._domain import add_domain
from ._evaluate import evaluate, markdown_table
from ._metrics import best_threshold, binary_metrics, roc_auc, roc_curve
from ._mix import mix_manifest
from ._release import ReleaseRefused, cut_release, update_readme
from ._sets import EvalSet, EvalSets, evaluate_sets, held_out_images, load_sets, sets_table
from ._train import DEFAULT_EPOCHS, TrainConfig, fit_temperature, train, train_many

__all__ = [
    "TUNINGS",
    "AdaptConfig",
    "choose_tuning",
    "fused_score",
    "Refit",
    "model_features",
    "model_head",
    "replay_sample",
    "source_weights",
    "adapt",
    "EvalSet",
    "EvalSets",
    "ReleaseRefused",
    "add_domain",
    "cut_release",
    "evaluate_sets",
    "load_sets",
    "held_out_images",
    "mix_manifest",
    "sets_table",
    "update_readme",
    "DEFAULT_EPOCHS",
    "TrainConfig",
    "augment",
    "best_threshold",
    "binary_metrics",
    "evaluate",
    "fit_temperature",
    "markdown_table",
    "grayscale_u8",
    "roc_auc",
    "roc_curve",
    "stain_jitter_u8",
    "train",
    "train_many",
]
