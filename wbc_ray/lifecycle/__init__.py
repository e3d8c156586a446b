"""What serving needs from the models beyond their weights, built from a release or checkpoint
folder: int8 models for CPUs, the slide-level tile-call rates, the images and recorded answers
they are checked on. Serving, analysis and training import these from here; this package
imports no training, pipeline or Serve code.
"""

from ._images import load_images
from ._int8 import MAX_MEAN_SHIFT, MIN_AGREEMENT, Int8Report, compile_int8, quantize_models
from ._predictions import PREDICTIONS, read_predictions, write_predictions
from ._served import ensure_served
from ._tile_rates import (
    RATES_FILE,
    ensure_tile_rates,
    has_int8,
    load_tile_rates,
    measure_tile_rates,
    rates_for,
    rates_path,
    served_precisions,
    shipped_precisions,
)

__all__ = [
    "MAX_MEAN_SHIFT",
    "MIN_AGREEMENT",
    "PREDICTIONS",
    "RATES_FILE",
    "Int8Report",
    "compile_int8",
    "ensure_served",
    "ensure_tile_rates",
    "has_int8",
    "load_images",
    "load_tile_rates",
    "measure_tile_rates",
    "quantize_models",
    "rates_for",
    "rates_path",
    "read_predictions",
    "served_precisions",
    "shipped_precisions",
    "write_predictions",
]
