"""What serving a set of models needs on this machine, built once: int8 models and their tile rates."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from .._cache import cache_root
from ..models import available
from ..release import derived_dir
from ._int8 import quantize_models
from ._tile_rates import ensure_tile_rates, has_int8


@contextlib.contextmanager
def _building(folder: Path) -> Iterator[None]:
    """Hold this machine's build lock for `folder` (a file in the user cache, so a models folder
    gets nothing that is not a model; where the cache cannot be written, no lock).
    """
    locks = cache_root() / "locks"
    key = hashlib.sha256(os.fsencode(folder.resolve())).hexdigest()[:16]
    try:
        locks.mkdir(parents=True, exist_ok=True)
        lock = open(locks / f"build-{key}.lock", "a")  # noqa: SIM115 (held across the yield)
    except OSError:
        yield
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure_served(
    models_dir: str | os.PathLike[str],
    manifest: str | os.PathLike[str],
    precision: Mapping[str, str] | None = None,
    images: int = 256,
    grid: int = 16,
) -> Path:
    """The int8 models where `precision` (a Serve config's) asks for int8 and none is built yet
    (for a release, into its folder in the user cache), then the tile rates measured on the calls
    the app makes (a release ships them for fp32 and bf16; int8 ones are measured here). About a
    minute for the release on a 2-core CPU; nothing once built.
    """
    out = Path(models_dir)
    # One builder at a time per machine: two processes starting at once on a fresh machine (a
    # service and a one-off command, or two test streams) would each quantize, and one could
    # measure tile rates on an int8 model the other then replaced.
    with _building(derived_dir(out)):
        wanted = [n for n in available(out) if (precision or {}).get(n) == "int8" and not has_int8(out, n)]
        if wanted:
            quantize_models(out, manifest, wanted, images=images)
        ensure_tile_rates(out, manifest, precision, grid=grid)
    return out
