"""`wbc-ray quantize`: int8 models from validation images (OpenVINO, NNCF), their decisions checked."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import InvalidInput
from ..manifest import image_key, read_manifest
from ..models import (
    Classifier,
    Int8Model,
    available,
    int8_path,
    load_checkpoint,
    quantize_int8,
    save_int8,
    to_openvino,
)
from ..release import is_release
from ._images import load_images
from ._predictions import PREDICTIONS, read_predictions


@dataclass(frozen=True)
class Int8Report:
    name: str
    path: Path
    calibration_images: int
    test_images: int
    agreement: float  # share of test images with the same calibrated decision as fp32
    held_agreement: float  # the same on held-out validation images fp32 is sure of (see below)
    held_shift: float  # mean |int8 - fp32| malignant probability on held-out validation images
    kept: bool


# A sound int8 model moves probabilities a little and flips a decision now and then near the
# threshold; a broken one (wrong ranges, or kernels whose int16 sums saturate: see models._quantize)
# moves them a lot and flips decisions fp32 was sure of. Ranges that do either on held-out
# validation images are not stored, so the app serves the default precision. Decisions count
# only where fp32 is at least 0.1 from the threshold: an undertrained model (a smoke run)
# scores everything within 0.01 of 0.5, where any rounding flips half its calls.
MAX_MEAN_SHIFT = 0.05
MIN_AGREEMENT = 0.97


def quantize_models(
    models_dir: str | os.PathLike[str],
    manifest: str | os.PathLike[str],
    names: list[str] | None = None,
    images: int = 256,
    batch: int = 32,
) -> list[Int8Report]:
    """For each model: an int8 model quantized on the first `images` validation images, checked
    against fp32 on the rest of the validation split, and how often it decides as the fp32 one on
    the test split (reported, never used to choose). For a release, fp32 is the answers recorded
    in its evaluation (so a machine whose fp32 differs shows up), and the int8 models go to the
    release's folder in the user cache (`models.int8_path`). An int8 model that moves held-out
    probabilities or decisions too far (MAX_MEAN_SHIFT, MIN_AGREEMENT) is not kept.
    """
    reports = []
    val = read_manifest(manifest, "val")
    test = read_manifest(manifest, "test")
    recorded = _release_decisions(models_dir, manifest)
    for name in names or available(models_dir):
        model, card = load_checkpoint(models_dir, name)
        ref = Classifier(model, card, device="cpu", precision="fp32")
        x_val = load_images(val, card.input_size)[0].numpy()
        calib, held = ref.inputs(x_val[:images]), x_val[images:]
        # A release is checked against the fp32 answers it was cut with, image by image.
        p_held = recorded["val"][name][images:] if recorded else ref.predict(held, batch)[:, 1]
        q = quantize_int8(to_openvino(model, calib), calib)
        p_q = Classifier(compile_int8(q), card, device="cpu", precision="int8").predict(held, batch)[:, 1]
        shift = float(np.abs(p_q - p_held).mean()) if len(held) else 0.0
        sure = np.abs(p_held - 0.5) >= 0.1
        same = (p_q >= 0.5) == (p_held >= 0.5)
        held_agree = float(same[sure].mean()) if sure.any() else 1.0
        path = int8_path(models_dir, name)
        report = Int8Report(name, path, len(calib), 0, float("nan"), held_agree, shift, False)
        if shift > MAX_MEAN_SHIFT or held_agree < MIN_AGREEMENT:
            path.unlink(missing_ok=True)  # a stale int8 model must not be served either
            path.with_suffix(".bin").unlink(missing_ok=True)
            reports.append(report)
            continue
        save_int8(q, path, card.version)
        int8 = Classifier.load(models_dir, name, device="cpu", precision="int8")  # as served: from disk
        x = load_images(test, card.input_size)[0].numpy()
        p_ref = recorded["test"][name] if recorded else ref.predict(x, batch)[:, 1]
        same = (p_ref >= 0.5) == (int8.predict(x, batch)[:, 1] >= 0.5)
        reports.append(replace(report, test_images=len(x), agreement=float(np.mean(same)), kept=True))
    return reports


def _release_decisions(
    models_dir: str | os.PathLike[str], manifest: str | os.PathLike[str]
) -> dict[str, dict[str, np.ndarray]] | None:
    """{split: {model: fp32 malignant probabilities in manifest order}} recorded in a release's
    evaluation (val and test), or None for a plain checkpoint folder or a release that records
    none (an adapted one, `wbc-ray adapt`: fp32 is then computed here).
    """
    recorded = [Path(models_dir, "eval", split, PREDICTIONS) for split in ("val", "test")]
    if not is_release(models_dir) or not all(p.is_file() for p in recorded):
        return None
    out: dict[str, dict[str, np.ndarray]] = {}
    for split in ("val", "test"):
        rows = read_predictions(Path(models_dir, "eval", split, PREDICTIONS))
        items = read_manifest(manifest, split)
        try:
            per_image = [rows[image_key(it.path, manifest)] for it in items]
        except KeyError as exc:
            raise InvalidInput(
                f"{manifest}: image {exc} is not in the release's {split} predictions"
            ) from None
        out[split] = {n: np.array([r[n] for r in per_image]) for n in available(models_dir)}
    return out


def compile_int8(ov_model: object) -> Int8Model:
    """The quantized model compiled for this CPU, on this process's threads (a seam for tests)."""
    return Int8Model(ov_model)
