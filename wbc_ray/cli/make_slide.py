"""`wbc-ray make-slide`: a labelled test slide composed of the manifest's images."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._shared import add_manifest, add_quiet, given, manifest

NAME = "make-slide"
HELP = "compose a labelled test slide (pyramidal TIFF + truth JSON)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_manifest(p)
    p.add_argument("--split", help="images of this split only (default: all rows)")
    p.add_argument("--out", required=True, help="the TIFF to write; the truth goes beside it as .json")
    p.add_argument("--grid", nargs=2, type=int, metavar=("ROWS", "COLS"), default=(10, 10))
    p.add_argument("--malignant-fraction", type=float, default=0.3, help="share of ALL fields (default: 0.3)")
    p.add_argument("--seed", type=int, help="default: compose_slide's (0)")
    p.add_argument("--mpp", type=float, help="microns per pixel of the slide (default: compose_slide's, 0.5)")
    add_quiet(p)


def run(args: argparse.Namespace) -> int:
    from ..manifest import read_manifest
    from ..slides import compose_slide

    items = read_manifest(manifest(args), args.split)
    truth = compose_slide(
        items,
        args.out,
        grid=(args.grid[0], args.grid[1]),
        malignant_fraction=args.malignant_fraction,
        progress=not args.quiet,
        **given(args, "seed", "mpp"),  # type: ignore[arg-type]
    )
    print(
        f"wrote {args.out} ({truth['width']}x{truth['height']} px, {truth['n_fields']} fields, "
        f"malignant fraction {truth['malignant_fraction']:.3f}, slide {truth['slide_label']}) "
        f"and {Path(args.out).with_suffix('.json')}"
    )
    return 0
