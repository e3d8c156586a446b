"""Tiling throughput and memory: Ray Data pipeline vs a plain read_region loop, same grid, same run.

Targets (2-core machine): pipeline >= 1.5x the plain loop; peak memory of every Ray process on
a slide 4x larger within 1.2x of the smaller slide's.

The plain loop reads through OpenSlide's read_region, as a hand-written script would. The
pipeline decodes TIFF tiles directly where that gives identical pixels (`open_slide(direct=)`),
so the same loop is also timed with that reader: the ratio to it is Ray Data's parallel gain
alone, reported beside the target so neither gain hides in the other.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import RayMemory, finish, target
from wbc_ray.config import load_settings
from wbc_ray.manifest import read_manifest
from wbc_ray.pipeline import init_ray, plan_slide, stream_slide
from wbc_ray.slides import GridSpec, compose_slide, open_slide, read_tile

# Tiles at the models' scale: 128 px at 0.875 um/px (224 px of the 0.5 um/px slide, resized).
SPEC = GridSpec(tile_px=128, mpp=0.875, min_tissue=0.25)


def plain_loop(slide_path: Path, plan, direct: bool = False) -> tuple[int, float]:  # type: ignore[no-untyped-def]
    g = plan.grid
    coords = g.coords
    t0 = time.perf_counter()
    with open_slide(slide_path, direct=direct) as s:
        for x, y in coords:
            read_tile(s, int(x), int(y), g.level, g.read_px, g.spec.tile_px)
    return len(coords), time.perf_counter() - t0


def pipeline(slide_path: Path, plan, work: Path) -> tuple[float, dict]:  # type: ignore[no-untyped-def]
    out = work / f"{slide_path.stem}.zarr"
    shutil.rmtree(out, ignore_errors=True)
    with RayMemory() as mem:
        res = stream_slide(plan, out, chunk_tiles=64, progress=True)
    shutil.rmtree(out, ignore_errors=True)
    return res.tiles_per_s, mem.summary()


def compose_elsewhere(manifest: Path, path: Path, n: int) -> dict:  # type: ignore[type-arg]
    """Compose in a child process: its image cache must not count as the driver's memory."""
    cmd = [sys.executable, "-m", "wbc_ray.cli", "make-slide", "--manifest", str(manifest), "--split", "test"]
    cmd += ["--out", str(path), "--grid", str(n), str(n), "--malignant-fraction", "0.3", "--seed", "1"]
    subprocess.run(cmd, check=True)
    return json.loads(path.with_suffix(".json").read_text())  # type: ignore[no-any-return]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--grid", type=int, default=130, help="fields per side of the base slide")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temp dir)")
    args = ap.parse_args()
    s = load_settings()
    manifest = s.data_dir / "all_taleqani" / "split.csv"
    items = read_manifest(manifest, "test")
    work = Path(args.work or tempfile.mkdtemp(prefix="wbc_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    init_ray()
    # Warm the workers so start-up cost is not billed to the first slide.
    small = work / "warm.tiff"
    compose_slide(items, small, grid=(6, 6), malignant_fraction=0.3, seed=0)
    stream_slide(plan_slide(small, SPEC), work / "warm.zarr", progress=False)

    sizes = {"base": args.grid, "4x": args.grid * 2}
    result: dict = {"spec": {"tile_px": SPEC.tile_px, "mpp": SPEC.mpp}, "slides": {}}
    for label, n in sizes.items():
        path = work / f"bench_{label}.tiff"
        t0 = time.perf_counter()
        truth = compose_elsewhere(manifest, path, n)
        compose_s = time.perf_counter() - t0
        plan = plan_slide(path, SPEC)
        rate, mem = pipeline(path, plan, work)
        entry = {
            "pixels": [truth["width"], truth["height"]],
            "tissue_tiles": len(plan.grid),
            "compose_s": round(compose_s, 1),
            "pipeline_tiles_per_s": round(rate, 1),
            "memory": mem,
        }
        if label == "base":
            n_loop, t_loop = plain_loop(path, plan)
            entry["plain_loop_tiles_per_s"] = round(n_loop / t_loop, 1)
            entry["speedup_vs_plain_loop"] = round(rate / (n_loop / t_loop), 3)
            n_fast, t_fast = plain_loop(path, plan, direct=True)
            entry["plain_loop_direct_reader_tiles_per_s"] = round(n_fast / t_fast, 1)
            entry["speedup_vs_plain_loop_direct_reader"] = round(rate / (n_fast / t_fast), 3)
            entry["reader"] = plan.info["reader"]
        result["slides"][label] = entry
        path.unlink()
        print(f"{label}: {entry}", flush=True)

    base, big = result["slides"]["base"], result["slides"]["4x"]
    mem_ratio = big["memory"]["peak_process_mb"] / base["memory"]["peak_process_mb"]
    worker_ratio = big["memory"]["peak_worker_mb"] / max(base["memory"]["peak_worker_mb"], 1e-9)
    result["targets"] = {
        "speedup_vs_plain_loop": target(base["speedup_vs_plain_loop"], ">=", 1.5),
        "peak_process_memory_ratio_4x": target(mem_ratio, "<=", 1.2),
        "peak_worker_memory_ratio_4x": target(worker_ratio, "<=", 1.2),
    }
    return finish("tiling", result, work)


if __name__ == "__main__":
    sys.exit(main())
