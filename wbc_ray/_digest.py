"""File digests shared by the slide records and the model release (a leaf: imports nothing)."""

from __future__ import annotations

import hashlib
import os


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The file's sha256, hex, read in 1 MiB pieces (slides and weights do not fit in memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
