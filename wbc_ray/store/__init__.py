"""Zarr result stores: layout, chunk writes, resume state, exports."""

from ._exports import geojson, geojson_text, heatmap_png, overlay_png, tiles_csv
from ._overlay import CallOverlay
from ._tiles import QUEUE_GROUPS, TileTable
from ._zarr import array, attrs, create_store, done_chunks, done_tiles, layout, open_store, write_chunk

__all__ = [
    "QUEUE_GROUPS",
    "CallOverlay",
    "TileTable",
    "array",
    "attrs",
    "create_store",
    "done_chunks",
    "done_tiles",
    "geojson",
    "geojson_text",
    "heatmap_png",
    "layout",
    "open_store",
    "overlay_png",
    "tiles_csv",
    "write_chunk",
]
