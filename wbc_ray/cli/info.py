"""`wbc-ray info SLIDE`: a slide's metadata (vendor, size, levels, microns per pixel)."""

from __future__ import annotations

import argparse
import json

from ._shared import add_slide_mpp

NAME = "info"
HELP = "print a slide's metadata"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("slide")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_slide_mpp(p)


def run(args: argparse.Namespace) -> int:
    from ..slides import open_slide

    with open_slide(args.slide, mpp=args.slide_mpp) as slide:
        d = slide.info.to_dict()
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    for key, value in d.items():
        print(f"{key:>18}: {value}")
    return 0
