"""What lies between a slide's pixels and the models: tile quality control, stain
normalisation, the domain check (is this like what the models learned from?), images of any
scale onto the models' field, and the shifted copies the checks are measured on.

Torch-free (NumPy, Pillow, torchstain's NumPy backend): Ray Data readers import it.
"""

from ._check import DomainCheck, fit_check
from ._features import FEATURE_PX, FEATURES, image_stats
from ._field import FIELD_UM, TRAINING_MPP, read_field, read_fields, to_field
from ._qc import OK, REASONS, QcThresholds, qc_stats, reason_counts, tile_qc
from ._release import DOMAIN_FILE, DomainFile, load_domain, write_domain
from ._screen import Screened, TileScreen
from ._shifts import SHIFT_MEANING, SHIFTS, shift_image
from ._stain import STAIN_METHODS, StainMethod, StainNormalizer, fit_references

__all__ = [
    "DOMAIN_FILE",
    "FEATURES",
    "FEATURE_PX",
    "FIELD_UM",
    "OK",
    "REASONS",
    "SHIFTS",
    "SHIFT_MEANING",
    "STAIN_METHODS",
    "TRAINING_MPP",
    "DomainCheck",
    "DomainFile",
    "QcThresholds",
    "Screened",
    "StainMethod",
    "StainNormalizer",
    "TileScreen",
    "fit_check",
    "fit_references",
    "image_stats",
    "load_domain",
    "qc_stats",
    "read_field",
    "read_fields",
    "reason_counts",
    "shift_image",
    "tile_qc",
    "to_field",
    "write_domain",
]
