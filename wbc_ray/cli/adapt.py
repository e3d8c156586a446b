"""`wbc-ray adapt --manifest LAB.csv --out DIR`: the released models adapted to a lab's own cells."""

from __future__ import annotations

import argparse

from ._shared import models_dir, settings

NAME = "adapt"
HELP = "adapt a release to a lab's labelled images (as few as 20 per class): a new release in --out"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", required=True, help="the lab's images: CSV path,label[,split][,mpp]")
    p.add_argument("--out", required=True, help="new folder for the adapted release")
    p.add_argument("--from", dest="models", help="the release to adapt (default: settings models_dir)")
    p.add_argument("--mpp", type=float, help="the lab images' microns per pixel (else an mpp column)")
    p.add_argument(
        "--replay",
        type=int,
        help="the parent's training images kept in the fit, so its own lab is not forgotten "
        "(default 256; 0: none)",
    )
    p.add_argument("--seed", type=int, help="for the held-out part and the replayed sample (default 0)")
    p.add_argument(
        "--rates-grid",
        type=int,
        help="side of the slides of the lab's images the tile rates are measured on (default 8; 0: none)",
    )


def run(args: argparse.Namespace) -> int:
    from ..training import AdaptConfig, adapt

    replay = settings(args).data_dir / "all_taleqani" / "split.csv"
    named = (("replay", args.replay), ("seed", args.seed), ("rates_grid", args.rates_grid))
    given = {k: v for k, v in named if v is not None}
    adapt(
        AdaptConfig(
            manifest=args.manifest,
            out=args.out,
            parent=str(models_dir(args)),
            replay_manifest=str(replay) if args.replay != 0 and replay.is_file() else None,
            mpp=args.mpp,
            **given,
        )
    )
    return 0
