"""Another lab's labelled cells mixed into a training manifest, at their own scale, never the
images an evaluation reads.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from ..errors import InvalidInput
from ..manifest import CLASSES, Item, read_manifest


def mix_manifest(
    base: str | os.PathLike[str],
    extra: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    mpp: float | None,
    limit: int | None,
    exclude: set[Path],
    seed: int = 0,
) -> tuple[Path, int]:
    """Write `out`: every row of `base` as it is, plus up to `limit` rows of `extra` (an even
    sample per label, none of `exclude`) added to the train split with `mpp` where the row has
    none. Paths are written absolute, so the file works from any folder. Returns the file and the
    number of rows added.
    """
    rows = read_manifest(base)
    pool = [it for it in read_manifest(extra) if it.path.resolve() not in exclude]
    if not pool:
        raise InvalidInput(f"{extra}: every row is held out for evaluation; nothing left to train on")
    rng = np.random.default_rng(seed)
    added: list[Item] = []
    for label in (0, 1):
        of = [it for it in pool if it.label == label]
        take = len(of) if limit is None else min(len(of), limit)
        added += [of[i] for i in sorted(rng.choice(len(of), take, replace=False))]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "split", "subtype", "mpp"])
        for it in rows:
            w.writerow([it.path.resolve(), CLASSES[it.label], it.split or "", it.subtype or "", it.mpp or ""])
        for it in added:
            m = it.mpp if it.mpp is not None else mpp
            w.writerow([it.path.resolve(), CLASSES[it.label], "train", it.subtype or "", m or ""])
    return out, len(added)
