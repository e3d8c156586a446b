"""The release's networks in one process, scored side by side on this machine's cores.

What the Serve app's Ensemble does across replicas (each network a `models.TileScorer`, answers
fused by `ensemble.fused_scores`), for `wbc-ray analyze` when nothing is running: no Ray to start,
no process per replica importing torch, no HTTP layer.
"""

from __future__ import annotations

import os
import threading
import time
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

    Loading starts at construction, in a thread, so it overlaps the first slide's tissue mask;
    the first call waits for it.
    """

    def __init__(self, models_dir: str | os.PathLike[str], args: AppArgs, fusion: str) -> None:
        self.models_dir, self.args, self.fusion = os.fspath(models_dir), args, fusion
        self._scorers: dict[str, Any] = {}
        self._error: BaseException | None = None
        self.load_s = 0.0
        self.notes: list[str] = []
        self.threads = _cores()
        self._loader = threading.Thread(target=self._load, name="wbc-load", daemon=True)
        self._loader.start()

    def _load(self) -> None:
        t0 = time.perf_counter()
        try:
            import torch

            from ..models import TileScorer, available

            names = self.args.models or available(self.models_dir)
            for name in sorted(names):
                # All cores per network, one network at a time: an OpenVINO model compiled for
                # one stream runs concurrent calls one after another, so replicas' one thread each
                # side by side left a core idle here (Xception, 256 tiles: 1.35 s on one thread,
                # 1.30 s on two threads calling it, 0.74 s compiled for two). Int8 answers do not
                # depend on the thread count (tests/serve/test_analysis.py); float ones may move
                # in the last bits.
                torch.set_num_threads(self.threads)
                scorer = TileScorer(
                    self.models_dir, name, self.args.precision_of(name), self.args.max_batch_tiles
                )
                self._scorers[name] = scorer
                if scorer.note:
                    self.notes.append(f"{name}: {scorer.note}")
        except BaseException as exc:  # re-raised in the caller's thread
            self._error = exc
        self.load_s = time.perf_counter() - t0

    @property
    def scorers(self) -> dict[str, Any]:
        """{name: TileScorer} in name order, once loaded (raises what loading raised)."""
        self._loader.join()
        if self._error is not None:
            raise self._error
        return self._scorers

    @property
    def names(self) -> list[str]:
        """The networks, in name order (the order of `probs`' model axis)."""
        return list(self.scorers)

    def __call__(self, tiles: np.ndarray, fusion: str | None = None) -> dict[str, Any]:
        """Probs (N, M, K) in model-name order, fused malignant score (N,), call (N,), and where
        each network ran (`nodes`): the Serve Ensemble's `score` answer.
        """
        scorers = self.scorers
        per_model = [s.predict(tiles) for s in scorers.values()]
        res: dict[str, Any] = dict(fused_scores(per_model, fusion or self.fusion))  # type: ignore[arg-type]
        res["nodes"] = {name: NODE for name in scorers}
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

    def close(self) -> None:
        """Wait for loading to end (the process may exit next; a loader mid-compile would crash it)."""
        self._loader.join()
