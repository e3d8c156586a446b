"""`wbc-ray evaluate --out DIR`: metrics, table and plots of the models and their fusions."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._shared import add_manifest, add_models, add_serve_config, manifest, models_dir

NAME = "evaluate"
HELP = "metrics, table and plots of the models and their fusions"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_models(p)
    add_manifest(p)
    p.add_argument("--split", help="rows of this split only (default: all rows)")
    p.add_argument("--perturb", choices=["none", "grayscale", "stain"], default="none")
    p.add_argument("--out", required=True, help="folder for metrics.json, metrics.md and the plots")
    p.add_argument(
        "--served",
        action="store_true",
        help="score each model in the precision the Serve config serves it in (e.g. int8), not fp32",
    )
    add_serve_config(p, "Ray Serve config for --served")
    p.add_argument(
        "--precision",
        choices=["fp32", "bf16", "amp", "int8"],
        help="one precision for every model (default: the device's; a release's figures are fp32)",
    )


def run(args: argparse.Namespace) -> int:
    from ..models import available
    from ..training import evaluate, markdown_table

    models = models_dir(args)
    precision = None
    if args.served:
        from ..serve.app import configured_precisions

        precision = configured_precisions(args.serve_config, available(models))
    elif args.precision:
        precision = {n: args.precision for n in available(models)}
    res = evaluate(
        models, manifest(args), args.out, split=args.split, perturb=args.perturb, precision=precision
    )
    for name, note in res.get("notes", {}).items():
        print(f"note: {name}: {note}", file=sys.stderr)
    print(markdown_table(res))
    print(f"wrote {Path(args.out) / 'metrics.json'}, metrics.md, roc.png, confusion.png")
    return 0
