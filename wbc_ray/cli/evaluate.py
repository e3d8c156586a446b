"""`wbc-ray evaluate --out DIR`: metrics, table and plots of the models and their fusions."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._shared import add_manifest, add_models, add_serve_config, manifest, models_dir, settings

NAME = "evaluate"
HELP = "metrics, table and plots of the models and their fusions"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_models(p)
    add_manifest(p)
    p.add_argument("--split", help="rows of this split only (default: all rows)")
    p.add_argument("--perturb", choices=["none", "grayscale", "stain"], default="none")
    p.add_argument(
        "--sets",
        help="YAML listing several data sets (configs/eval_sets.yaml): one report, a row per set",
    )
    p.add_argument(
        "--mpp",
        type=float,
        help="the images' microns per pixel (rows with an mpp column keep theirs): each is rescaled "
        "to the models' field as slide tiles are; without, an image is taken as one whole field",
    )
    p.add_argument(
        "--stain",
        default=None,
        help="stain normalisations to compare, comma-separated from none, macenko, reinhard "
        "(with --sets or --mpp; default none)",
    )
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


def _run_sets(args: argparse.Namespace) -> int:
    from ..training import EvalSet, EvalSets, evaluate_sets, load_sets, sets_table

    s = settings(args)
    if args.sets:
        spec, root = load_sets(args.sets, s.data_dir)
    else:
        one = EvalSet(
            name=Path(manifest(args)).stem,
            manifest=str(Path(manifest(args)).resolve()),
            split=args.split,
            mpp=args.mpp,
        )
        spec, root = EvalSets(sets=[one]), Path("/")
    stains = tuple((args.stain or "none").split(","))
    precision = args.precision or "fp32"
    report = evaluate_sets(
        models_dir(args),
        spec,
        args.out,
        root=root,
        stains=stains,
        precision=precision,
        qc=s.qc,
        log=lambda m: print(m, file=sys.stderr),
    )
    print(sets_table(report, full=True))
    print(f"wrote {Path(args.out) / 'sets.json'}, sets.md, sets.png")
    return 0


def run(args: argparse.Namespace) -> int:
    from ..models import available
    from ..training import evaluate, markdown_table

    if args.sets or args.mpp is not None or args.stain:
        return _run_sets(args)
    print(
        "note: images without a scale (no --mpp, no mpp column) are each taken as one whole field, "
        "as the training images are (224 px = 112 um)",
        file=sys.stderr,
    )
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
