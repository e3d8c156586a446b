"""`wbc-ray analyze SLIDE... --out DIR`: verdicts for slides (`wbc_ray.analyze.analyze_slides`)."""

from __future__ import annotations

import argparse
import json

from ..analyze import ENGINES
from ..ensemble import FUSIONS
from ._shared import add_models, add_serve_config, add_slide_mpp, claim_stdout, models_dir, settings

NAME = "analyze"
HELP = "analyse slides: tile, score with the three CNNs, verdict"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("slides", nargs="+")
    add_models(p)
    p.add_argument("--out", required=True, help="results folder (one <slide>.zarr each)")
    p.add_argument("--fusion", choices=FUSIONS, help="default: settings ensemble.fusion")
    p.add_argument(
        "--stain",
        choices=["release", "none", "macenko", "reinhard"],
        help="stain normalisation (default: settings domain.stain; release: the release's measured choice)",
    )
    add_slide_mpp(p)
    add_serve_config(p, "Serve config: its app args (models, precision, threads) apply on either engine")
    p.add_argument(
        "--engine",
        choices=ENGINES,
        default="auto",
        help="local: score in this process; serve: send the tiles to the running `wbc-ray serve` on this "
        "machine; ray: Ray Data and a Serve app (RAY_ADDRESS's cluster, or started here); auto (default): "
        "ray where RAY_ADDRESS is set, serve where a `wbc-ray serve` with the same models runs, else local",
    )
    p.add_argument("--json", action="store_true", help="print a JSON list instead of the table")


def run(args: argparse.Namespace) -> int:
    from ..analyze import analyze_slides, print_summary

    # --json owns stdout: everything else written there (Ray's raylet warnings, C libraries)
    # goes to stderr, so the output always parses.
    json_out = claim_stdout() if args.json else None
    results = analyze_slides(
        args.slides,
        models_dir=str(models_dir(args)),
        out_dir=args.out,
        settings=settings(args),
        fusion=args.fusion,
        stain=args.stain,
        slide_mpp=args.slide_mpp,
        progress=not args.json,
        serve_config=args.serve_config,
        engine=args.engine,
    )
    if json_out is not None:
        json_out.write(json.dumps([r.summary() for r in results], indent=2) + "\n")
        json_out.flush()
    else:
        print_summary(results)
    return 0 if all(r.ok for r in results) else 1
