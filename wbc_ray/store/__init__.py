"""Zarr result stores: layout, chunk writes, resume state."""

from ._zarr import array, create_store, done_chunks, layout, open_store, write_chunk

__all__ = ["array", "create_store", "layout", "done_chunks", "open_store", "write_chunk"]
