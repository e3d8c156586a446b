"""`wbc-ray domain`: fit a release's domain check and stain references from its training images."""

from __future__ import annotations

import argparse

from ._shared import add_manifest, manifest, models_dir

NAME = "domain"
HELP = "fit the domain check and stain references of a release (a new release version)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", help="release folder (default: settings models_dir, i.e. weights)")
    add_manifest(p)
    p.add_argument(
        "--stain-default",
        choices=["none", "macenko", "reinhard"],
        default="none",
        help="the normalisation analyses use unless told (choose by `wbc-ray evaluate --sets`)",
    )
    p.add_argument(
        "--version",
        help="the new release's version (default: the previous one + 1); the release's own version adds "
        "the domain file and the reports under eval/ to that release",
    )


def run(args: argparse.Namespace) -> int:
    from ..training import add_domain

    add_domain(models_dir(args), manifest(args), args.stain_default, args.version)
    return 0
