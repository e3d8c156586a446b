"""Zarr v3 result layout: one group per job, chunks along tiles aligned with work units.

A store is a local folder or a URI (`s3://bucket/x.zarr`, through fsspec; credentials from the
standard environment variables).

Workers write disjoint chunk ranges, then flip their entry in `done`; a restarted job skips
chunks already marked done. Attributes are written by the driver only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import zarr

from ..errors import OutputExists

# Pixels compress poorly and cost CPU to compress; metadata arrays are tiny.
_PIXEL_CODECS: dict[str, Any] = {"compressors": None}


def create_store(
    path: str | os.PathLike[str],
    *,
    n_tiles: int,
    chunk_tiles: int,
    attrs: Mapping[str, Any],
    tile_px: int | None = None,
    n_classes: int | None = None,
    grid_shape: tuple[int, int] | None = None,
) -> zarr.Group:
    """Create (or reopen for resume, when the layout matches) a job's group."""
    path = os.fspath(path)
    n_chunks = max(1, -(-n_tiles // chunk_tiles))
    if exists(path):
        g = zarr.open_group(path, mode="r+")
        same = g.attrs.get("layout") == _layout(n_tiles, chunk_tiles, tile_px, n_classes)
        if same:
            g.attrs.update(dict(attrs))
            if n_classes is not None:
                _screen_arrays(g, max(n_tiles, 0), max(1, chunk_tiles))  # stores from before them
            return g
        raise OutputExists(f"{path} exists with a different layout; choose another output path")
    g = zarr.open_group(path, mode="w")
    c = max(1, chunk_tiles)
    n = max(n_tiles, 0)
    g.create_array("coords", shape=(n, 2), chunks=(c, 2), dtype="int64", fill_value=-1)
    g.create_array("cells", shape=(n, 2), chunks=(c, 2), dtype="int64", fill_value=-1)
    g.create_array("tissue", shape=(n,), chunks=(c,), dtype="float32", fill_value=np.nan)
    g.create_array("done", shape=(n_chunks,), chunks=(1,), dtype="bool", fill_value=False)
    # Times each tile's row was written: 1 everywhere once a job is done, also after a node or
    # worker was lost mid-job (a rerun task skips finished units).
    g.create_array("writes", shape=(n,), chunks=(c,), dtype="uint8", fill_value=0)
    if tile_px is not None:
        g.create_array(
            "pixels",
            shape=(n, tile_px, tile_px, 3),
            chunks=(c, tile_px, tile_px, 3),
            dtype="uint8",
            fill_value=0,
            **_PIXEL_CODECS,
        )
    if n_classes is not None:
        g.create_array(
            "probs", shape=(n, 3, n_classes), chunks=(c, 3, n_classes), dtype="float32", fill_value=np.nan
        )
        g.create_array("fused", shape=(n,), chunks=(c,), dtype="float32", fill_value=np.nan)
        _screen_arrays(g, n, c)
    if grid_shape is not None:
        g.create_array("heatmap", shape=grid_shape, chunks=grid_shape, dtype="float32", fill_value=np.nan)
    g.attrs.update({**dict(attrs), "layout": _layout(n_tiles, chunk_tiles, tile_px, n_classes)})
    return g


def _screen_arrays(g: zarr.Group, n: int, c: int) -> None:
    """Per tile: the quality-control reason code (0 usable) and the domain check's distance."""
    if "qc" not in g:
        g.create_array("qc", shape=(n,), chunks=(c,), dtype="uint8", fill_value=0)
    if "domain" not in g:
        g.create_array("domain", shape=(n,), chunks=(c,), dtype="float32", fill_value=np.nan)


def _layout(n: int, chunk: int, tile_px: int | None, n_classes: int | None) -> dict[str, Any]:
    return {"n_tiles": n, "chunk_tiles": chunk, "tile_px": tile_px, "n_classes": n_classes}


def array(group: zarr.Group, name: str) -> zarr.Array:
    """A named array of a job group (typed, for callers that slice it)."""
    node = group[name]
    if not isinstance(node, zarr.Array):
        raise KeyError(f"{name} is not an array in {group.store}")
    return node


def attrs(group: zarr.Group) -> dict[str, Any]:
    """The group's attributes as a plain (untyped JSON) dict."""
    return dict(group.attrs)


def layout(group: zarr.Group) -> dict[str, Any]:
    value = group.attrs["layout"]
    assert isinstance(value, dict)
    return value


def write_chunk(path: str | os.PathLike[str], chunk: int, arrays: Mapping[str, np.ndarray]) -> None:
    """Write one work unit's rows, then mark it done (so a crash mid-write is redone)."""
    # Zarr otherwise compares each chunk with the fill value before writing it, to skip empty
    # ones; work units are never empty, and the check cost most of the write.
    with zarr.config.set({"array.write_empty_chunks": True}):
        g = zarr.open_group(os.fspath(path), mode="r+")
        lo = chunk * int(layout(g)["chunk_tiles"])
        n = 0
        for name, value in arrays.items():
            array(g, name)[lo : lo + len(value)] = value
            n = len(value)
        if "writes" in g and n:  # stores from before the counter have none
            w = array(g, "writes")
            w[lo : lo + n] = np.asarray(w[lo : lo + n]) + 1
        array(g, "done")[chunk] = True


def exists(path: str | os.PathLike[str]) -> bool:
    """Whether a store is at `path`: a local folder, or a group at a URI (s3://, file://...)."""
    text = os.fspath(path)
    if "://" not in text:
        return os.path.exists(text)
    import fsspec

    fs, root = fsspec.core.url_to_fs(text)
    return bool(fs.exists(f"{root.rstrip('/')}/zarr.json"))


def done_tiles(done: np.ndarray, n_tiles: int, chunk_tiles: int) -> int:
    """Tiles in the chunks marked done (the last chunk may be partial)."""
    return int(sum(min(chunk_tiles, n_tiles - int(i) * chunk_tiles) for i in np.flatnonzero(done)))


def done_chunks(path: str | os.PathLike[str]) -> np.ndarray:
    g = zarr.open_group(os.fspath(path), mode="r")
    return np.asarray(array(g, "done")[:])


def open_store(path: str | os.PathLike[str], mode: str = "r") -> zarr.Group:
    return zarr.open_group(os.fspath(path), mode=mode)  # type: ignore[arg-type]
