"""`wbc-ray quantize`: int8 models for CPU serving, checked (`lifecycle.quantize_models`)."""

from __future__ import annotations

import argparse
import sys

from ._shared import add_manifest, add_models, add_serve_config, manifest, models_dir

NAME = "quantize"
HELP = "quantize the models to int8 for CPU serving (OpenVINO) and check decisions"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_models(p)
    add_manifest(p)
    p.add_argument("--model", action="append", help="one architecture (repeatable; default: all)")
    p.add_argument("--images", type=int, default=256, help="validation images to quantize on (default: 256)")
    add_serve_config(p, "Serve config whose per-model precisions to use")


def run(args: argparse.Namespace) -> int:
    from ..lifecycle import quantize_models
    from ..release import derived_dir, is_release

    models = models_dir(args)
    for r in quantize_models(models, manifest(args), args.model or None, images=args.images):
        if not r.kept:
            print(
                f"{r.name:>13}: int8 NOT kept: on held-out validation images it moves the malignant"
                f" probability by {r.held_shift:.3f} on average and decides as fp32 on"
                f" {r.held_agreement:.2%} of those fp32 is sure of; the app serves this model in its"
                " default precision",
                file=sys.stderr,
            )
            continue
        print(
            f"{r.name:>13}: int8 model from {r.calibration_images} validation images"
            f" -> {r.path}; decisions agree with fp32 on {r.agreement:.2%} of {r.test_images} test"
            f" images ({r.held_agreement:.2%} of the held-out validation images fp32 is sure of)"
        )
    if is_release(models):
        # A release ships tile rates for the float precisions; the int8 ones are measured here,
        # once, so that `wbc-ray serve` starts ready.
        from ..lifecycle import ensure_tile_rates
        from ..serve.app import configured_precisions

        rec = ensure_tile_rates(models, manifest(args), configured_precisions(args.serve_config))
        print(f"tile rates for {rec['precision']} ready in {derived_dir(models)}")
    return 0
