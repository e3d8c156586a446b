"""Tiling a slide into a Zarr store without scoring it (`wbc-ray tile`)."""

from __future__ import annotations

import os

from ..config import Settings, load_settings
from ..slides import GridSpec, grid_preview, open_slide, tile_grid, tissue_mask
from ._stream import StreamResult, plan_slide, stream_slide


def tile_slide(
    slide: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    settings: Settings | None = None,
    tile_px: int | None = None,
    mpp: float | None = None,
    stride_px: int | None = None,
    min_tissue: float | None = None,
    slide_mpp: float | None = None,
    preview: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> StreamResult:
    """Tile one slide with Ray Data into a Zarr store of tile pixels, coordinates and tissue.

    Parameters
    ----------
    slide, out
        The slide file and the Zarr store to write (a rerun resumes an unfinished store).
    settings
        Tiling defaults (``tiling`` and ``slides`` sections); the loaded settings if None.
    tile_px, mpp, stride_px, min_tissue
        Overrides of the settings' tile grid; None keeps the setting.
    slide_mpp
        The slide's microns per pixel where its metadata lacks or misstates them.
    preview
        Also write a PNG of the tissue mask and the grid over the thumbnail here.
    progress
        Show a progress bar.

    Returns
    -------
    StreamResult
        The store, tile and chunk counts, and the time taken.
    """
    s = settings or load_settings()
    t = s.tiling
    spec = GridSpec(
        tile_px=tile_px or t.tile_px,
        mpp=mpp or t.mpp,
        stride_px=stride_px or t.stride_px,
        min_tissue=t.min_tissue if min_tissue is None else min_tissue,
    )
    default_mpp = s.slides.default_mpp
    plan = plan_slide(
        slide, spec, slide_mpp=slide_mpp, default_mpp=default_mpp, thumbnail_px=s.slides.thumbnail_px
    )
    if preview:
        with open_slide(slide, mpp=slide_mpp, default_mpp=default_mpp) as opened:
            mask = tissue_mask(opened)
            grid_preview(opened, mask, tile_grid(opened, mask, spec)).save(preview)
    return stream_slide(
        plan,
        out,
        chunk_tiles=t.chunk_tiles,
        store_pixels=t.store_pixels,
        read_cpus=t.read_cpus,
        progress=progress,
    )
