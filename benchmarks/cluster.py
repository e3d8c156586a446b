"""Throughput with nodes: the same slide analysed on 1, 2 and 3 Ray nodes of this one machine.

Every node is a separate raylet (its own object store, workers and scheduler) on the same CPU,
so this measures what distributing costs, not what it gains: the cores do not grow with the
nodes. Each layout gets 2 logical CPUs per node (scheduling tokens; the physical cores stay the
same), Serve spreads its replicas over the nodes as on a real cluster, and Ray Data's read tasks
spread likewise.

Targets: with 3 nodes, tiling and analysis keep >= 0.75x the 1-node throughput (the cost of
distribution on one machine stays within a quarter); the work really lands on several nodes.
docs/operators.md has the model of what a real cluster gives.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import finish, target
from wbc_ray.config import load_settings
from wbc_ray.manifest import read_manifest
from wbc_ray.slides import GridSpec, compose_slide

SPEC = GridSpec(tile_px=128, mpp=0.875, min_tissue=0.25)


def one_layout(nodes: int, slide: Path, work: Path, models_dir: str) -> dict:  # type: ignore[type-arg]
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from wbc_ray.analyze import analyze_slides
    from wbc_ray.pipeline import init_ray, plan_slide, stream_slide
    from wbc_ray.serve import start

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    for _ in range(nodes - 1):
        c.add_node(num_cpus=2)
    c.wait_for_nodes()
    init_ray(address=c.address)
    try:
        plan = plan_slide(slide, SPEC)
        stream_slide(plan, work / "warm.zarr", chunk_tiles=64, progress=False)  # workers started
        t0 = time.perf_counter()
        tiled = stream_slide(plan, work / f"tiles{nodes}.zarr", chunk_tiles=64, progress=False)
        tiling_s = time.perf_counter() - t0
        t_start = time.perf_counter()
        start(models_dir=models_dir, results_dir=str(work / "results"))
        serve_start_s = time.perf_counter() - t_start
        analyze_slides([str(slide)], models_dir=models_dir, out_dir=str(work / "warm"), progress=False)
        t0 = time.perf_counter()
        (r,) = analyze_slides(
            [str(slide)], models_dir=models_dir, out_dir=str(work / f"a{nodes}"), progress=False
        )
        analysis_s = time.perf_counter() - t0
        assert r.ok, r.error
        n = r.result["n_tiles"]
        return {
            "nodes": nodes,
            "tiling_tiles_per_s": round(tiled.n_tiles / tiling_s, 1),
            "tiling_read_nodes": len(tiled.nodes["read"]),
            "analysis_tiles_per_s": round(n / analysis_s, 1),
            "analysis_read_nodes": len(r.result["timings"]["nodes"]["read"]),
            "replica_nodes": len(
                {nd for per in r.result["timings"]["nodes"]["score"].values() for nd in per}
            ),
            "serve_start_s": round(serve_start_s, 1),
            "tiles": n,
        }
    finally:
        serve.shutdown()
        ray.shutdown()
        c.shutdown()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--grid", type=int, default=40, help="fields per side of the slide")
    ap.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 3])
    args = ap.parse_args()
    s = load_settings()
    items = read_manifest(s.data_dir / "all_taleqani" / "split.csv", "test")
    work = Path(tempfile.mkdtemp(prefix="wbc_bench_cluster_"))
    slide = work / "cluster.tiff"
    compose_slide(items, slide, grid=(args.grid, args.grid), malignant_fraction=0.3, seed=3)
    from wbc_ray.lifecycle import ensure_served

    models_dir = str(ensure_served(s.models_dir, s.data_dir / "all_taleqani" / "split.csv"))
    runs = []
    for n in args.nodes:
        runs.append(one_layout(n, slide, work, models_dir))
        print(runs[-1], flush=True)
    one = runs[0]
    result: dict = {"runs": runs, "targets": {}}
    for r in runs[1:]:
        k = r["nodes"]
        result["targets"][f"tiling_{k}_nodes_vs_1"] = target(
            r["tiling_tiles_per_s"] / one["tiling_tiles_per_s"], ">=", 0.75
        )
        result["targets"][f"analysis_{k}_nodes_vs_1"] = target(
            r["analysis_tiles_per_s"] / one["analysis_tiles_per_s"], ">=", 0.75
        )
        result["targets"][f"analysis_{k}_nodes_read_on"] = target(r["analysis_read_nodes"], ">=", 2, 0)
    return finish("cluster", result, work)


if __name__ == "__main__":
    sys.exit(main())
