"""`wbc-ray calibrate`: tile call rates on composed slides (`lifecycle.measure_tile_rates`)."""

from __future__ import annotations

import argparse

from ._shared import add_manifest, add_models, add_serve_config, manifest, models_dir, settings

NAME = "calibrate"
HELP = "measure tile call rates on composed slides (the slide-level adjusted count)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_models(p)
    add_manifest(p)
    p.add_argument("--split", default="val", help="images to compose the slides from (default: val)")
    p.add_argument("--grid", type=int, default=16, help="fields per side of each slide (default: 16)")
    p.add_argument("--seed", type=int, default=0)
    add_serve_config(p, "Serve config whose per-model precisions to use")


def run(args: argparse.Namespace) -> int:
    from ..lifecycle import measure_tile_rates, rates_path
    from ..models import available
    from ..serve.app import configured_precisions

    models = models_dir(args)
    rec = measure_tile_rates(
        models,
        manifest(args),
        split=args.split,
        grid=args.grid,
        seed=args.seed,
        min_tissue=settings(args).tiling.min_tissue,
        # Calls as the Serve app makes them: the per-model precisions of its config.
        precision=configured_precisions(args.serve_config, available(models)),
    )
    print(f"tile call rates on composed {args.split or 'all-rows'} slides ({args.grid}x{args.grid} fields):")
    for fusion, r in rec["fusions"].items():
        curve = "  ".join(f"{f:.2f}->{share:.3f}" for f, share in r["curve"])
        print(f"  {fusion:<11} fraction->share of malignant tiles: {curve}")
    print(f"wrote {rates_path(models)}")
    return 0
