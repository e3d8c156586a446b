"""The release's networks in one process, each scored on all of this machine's cores in turn.

What the Serve app's Ensemble does across replicas (each network a `models.TileScorer`, answers
fused by `ensemble.fused_scores`), for `wbc-ray analyze` when nothing is running: no Ray to start,
no process per replica importing torch, no HTTP layer.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..ensemble import fused_scores
from ..serve_config import AppArgs

NODE = "local"


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class LocalEnsemble:
    """The networks of `models_dir` (`args.models`, default all), each loaded in the precision the
    Serve config `args` gives its replicas, scored one after another in steps, each on all of this
    machine's cores.

    All cores per network, one network at a time: an OpenVINO model compiled for one stream runs
    concurrent calls one after another, so replicas' one thread each side by side left a core idle
    here (Xception, 256 tiles: 1.35 s on one thread, 1.30 s on two threads calling it, 0.74 s
    compiled for two). Int8 answers do not depend on the thread count
    (tests/serve/test_analysis.py); float ones may move in the last bits.
    """

    def __init__(self, models_dir: str | os.PathLike[str], args: AppArgs, fusion: str) -> None:
        import torch

        from ..models import TileScorer, available

        self.models_dir, self.fusion = os.fspath(models_dir), fusion
        torch.set_num_threads(_cores())  # an int8 network takes torch's thread count when compiled
        self.scorers = {
            name: TileScorer(self.models_dir, name, args.precision_of(name), args.max_batch_tiles)
            for name in sorted(args.models or available(self.models_dir))
        }
        self.notes = [f"{name}: {s.note}" for name, s in self.scorers.items() if s.note]

    def __call__(self, tiles: np.ndarray, fusion: str | None = None) -> dict[str, Any]:
        """Probs (N, M, K) in model-name order, fused malignant score (N,), call (N,), and where
        each network ran (`nodes`): the Serve Ensemble's `score` answer.
        """
        per_model = [s.predict(tiles) for s in self.scorers.values()]
        res: dict[str, Any] = dict(fused_scores(per_model, fusion or self.fusion))  # type: ignore[arg-type]
        res["nodes"] = {name: NODE for name in self.scorers}
        return res

    def models(self) -> list[dict[str, Any]]:
        """The networks' cards with the precision each is served in (the Ensemble's `models`)."""
        return [s.card() for s in self.scorers.values()]

    def tile_rates(self) -> dict[str, Any] | None:
        """The slide-level tile rates measured for exactly these model versions, if any."""
        from ..lifecycle import load_tile_rates

        return load_tile_rates(self.models_dir, self.models())

    def domain(self) -> dict[str, Any] | None:
        """The release's domain file as JSON, if it has one."""
        from ..domain import load_domain

        found = load_domain(self.models_dir)
        return None if found is None else found.to_dict()
