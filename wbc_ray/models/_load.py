"""`load_release`: the released classifiers for a notebook or script (above the release checks
and the classifier, so neither imports the other).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..config import load_settings
from ._checkpoint import available
from ._classifier import Classifier


def load_release(
    models_dir: str | os.PathLike[str] | None = None, precision: str | None = None
) -> dict[str, Any]:
    """The released classifiers, each checked against the release record first.

    Parameters
    ----------
    models_dir : path, optional
        A release (or a folder of checkpoints). Default: the settings' ``models_dir``, i.e.
        ``$WBC_RAY_MODELS`` or the release committed in ``weights/``.
    precision : {"fp32", "bf16", "int8", "amp"}, optional
        Compute precision for every model; default: the device's (fp32 or bf16 on CPUs, AMP on
        GPUs). ``"int8"`` needs ``wbc-ray quantize`` to have built the int8 models on this machine;
        where one is missing that model falls back to the default precision.

    Returns
    -------
    dict of str to Classifier
        One ``Classifier`` per model name; ``predict(tiles)`` gives calibrated class
        probabilities (benign, malignant) for uint8 RGB tiles of shape (N, H, W, 3).

    Raises
    ------
    ReleaseError
        A file of the release is missing, cut short, altered or not listed (the message names it).
    """
    d = Path(models_dir) if models_dir is not None else load_settings().models_dir
    return {n: Classifier.load_served(d, n, precision)[0] for n in available(d)}  # type: ignore[arg-type]
