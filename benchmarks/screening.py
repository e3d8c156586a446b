"""What screening costs: tile QC, the domain check and stain normalisation against the plain
scoring path, in tiles/s on real tiles (test-split fields at the models' tile size).

The plain path is the three models scoring the tiles one after another in the precisions the
Serve config serves (int8 where `wbc-ray quantize` built it), as the replicas do; each
screening variant adds its own time per tile (it runs in the Ray Data task before the request).
Both measured in the same run, best of three passes. Target: the default screening (QC and the
domain check, no normalisation) keeps >= 0.9 of the plain path's rate; the normalisations are
reported. Writes bench_results/screening.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np

from benchmarks._common import cpu_description, finish, target
from wbc_ray.config import QcSettings, load_settings
from wbc_ray.domain import FEATURE_PX, QcThresholds, StainNormalizer, TileScreen, load_domain, read_fields
from wbc_ray.manifest import read_manifest
from wbc_ray.models import Classifier, available


def best_seconds(fn: Any, repeats: int = 3) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tiles", type=int, default=512)
    args = p.parse_args(argv)
    from wbc_ray.serve.app import configured_precisions

    s = load_settings()
    models = s.models_dir
    domain = load_domain(models)
    if domain is None:
        print(f"{models} has no domain.json (`wbc-ray domain`)", file=sys.stderr)
        return 2
    items = read_manifest(s.data_dir / "all_taleqani" / "split.csv", "test")
    x = read_fields([it.path for it in items], None, FEATURE_PX)
    x = np.concatenate([x] * (-(-args.tiles // len(x))))[: args.tiles]
    precisions = configured_precisions(None, available(models))
    clfs = [Classifier.load_served(models, n, precisions.get(n))[0] for n in available(models)]
    plain = sum(best_seconds(lambda c=c: c.predict(x, batch_size=32)) for c in clfs)
    qc = QcThresholds.from_settings(QcSettings())
    variants = {
        "qc": TileScreen(qc),
        "qc + domain check (default)": TileScreen(qc, None, domain.check),
        "qc + check + macenko": TileScreen(
            qc, StainNormalizer("macenko", domain.stain_references), domain.check
        ),
        "qc + check + reinhard": TileScreen(
            qc, StainNormalizer("reinhard", domain.stain_references), domain.check
        ),
    }
    rows: dict[str, Any] = {"plain (three models)": {"tiles_per_s": round(len(x) / plain, 1), "ratio": 1.0}}
    for name, screen in variants.items():
        extra = best_seconds(lambda sc=screen: sc(x))
        rows[name] = {
            "screen_tiles_per_s": round(len(x) / extra, 1),
            "tiles_per_s": round(len(x) / (plain + extra), 1),
            "ratio": round(plain / (plain + extra), 3),
        }
    for name, r in rows.items():
        print(f"{name:>30}: {r['tiles_per_s']:>8} tiles/s  ({r['ratio']:.3f} of plain)")
    result = {
        "cpu": cpu_description(),
        "tiles": len(x),
        "precisions": {c.name: c.precision for c in clfs},
        "rows": rows,
        "targets": {
            "default screening / plain": target(rows["qc + domain check (default)"]["ratio"], ">=", 0.9)
        },
    }
    return finish("screening", result)


if __name__ == "__main__":
    sys.exit(main())
