"""`wbc-ray tile SLIDE --out STORE`: tiles into a Zarr store, no scoring (`pipeline.tile_slide`)."""

from __future__ import annotations

import argparse

from ._shared import add_quiet, add_slide_mpp, settings

NAME = "tile"
HELP = "tile a slide with Ray Data into a Zarr store"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("slide")
    p.add_argument("--out", required=True, help="the Zarr store (a rerun resumes it)")
    p.add_argument("--tile-px", type=int, help="tile side in px (default: settings tiling.tile_px)")
    p.add_argument(
        "--mpp", type=float, help="target microns/pixel of the tiles (default: settings tiling.mpp)"
    )
    p.add_argument("--stride-px", type=int, help="default: settings tiling.stride_px (the tile side)")
    p.add_argument("--min-tissue", type=float, help="default: settings tiling.min_tissue")
    add_slide_mpp(p)
    p.add_argument("--preview", help="also write a PNG of mask and grid over the thumbnail")
    add_quiet(p)


def run(args: argparse.Namespace) -> int:
    from ..pipeline import tile_slide

    res = tile_slide(
        args.slide,
        args.out,
        settings=settings(args),
        tile_px=args.tile_px,
        mpp=args.mpp,
        stride_px=args.stride_px,
        min_tissue=args.min_tissue,
        slide_mpp=args.slide_mpp,
        preview=args.preview,
        progress=not args.quiet,
    )
    print(
        f"{res.n_tiles} tiles from {args.slide} -> {res.store} in {res.seconds:.1f} s "
        f"({res.tiles_per_s:.0f} tiles/s; {res.n_chunks - res.chunks_run} chunks already done)"
    )
    return 0
