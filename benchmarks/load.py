"""Load on the lab service: downloads of a large finished slide beside submissions and polls.

First the service analyses one large slide (at least 20,000 tissue tiles: a real bone-marrow
scan's size). Then, measured in the same run: `/health` and job-status latency on the idle
service; and the same under load, where `--pullers` clients download that slide's heatmap,
GeoJSON, CSV and Grad-CAMs over and over while `--clients` clients submit small slides and poll
them. Targets: `/health` and status p99 under load within 2x of idle (nothing heavy runs on the
Ingress' event loop); every accepted job ends done or failed with a reason (none lost, none
twice); the resident memory of every Ray process flat (second half's peak <= 1.2x the first's).
JSON and a plot in bench_results/.

    python -m benchmarks.load [--pullers 8] [--clients 4] [--minutes 3] [--large-grid 142]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil

from benchmarks._common import OUT_DIR, _is_ray, finish, target
from wbc_ray.config import load_settings
from wbc_ray.manifest import read_manifest
from wbc_ray.slides import compose_slide

PORT = 8231


class MemoryTimeline:
    """Total and per-process RSS of the Ray processes every `interval` s."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.samples: list[tuple[float, float, dict[int, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        t0 = time.time()
        while not self._stop.is_set():
            per: dict[int, float] = {}
            for p in psutil.process_iter():
                try:
                    if _is_ray(p):
                        per[p.pid] = p.memory_info().rss / 2**20
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            self.samples.append((time.time() - t0, sum(per.values()), per))
            self._stop.wait(self.interval)

    def __enter__(self) -> MemoryTimeline:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def halves(self) -> dict[str, float]:
        """Peak RSS of each process in the run's first and second half; the worst ratio."""
        mid = self.samples[-1][0] / 2 if self.samples else 0
        first: dict[int, float] = {}
        second: dict[int, float] = {}
        for t, _, per in self.samples:
            side = first if t < mid else second
            for pid, mb in per.items():
                side[pid] = max(side.get(pid, 0.0), mb)
        both = [pid for pid in second if pid in first and first[pid] > 50]
        ratios = [second[p] / first[p] for p in both]
        return {
            "worst_process_ratio": round(max(ratios), 3) if ratios else 1.0,
            "processes_compared": len(both),
            "total_peak_first_mb": round(max((s for t, s, _ in self.samples if t < mid), default=0), 1),
            "total_peak_second_mb": round(max((s for t, s, _ in self.samples if t >= mid), default=0), 1),
        }


async def probe(base: str, job: str, until: float, log: dict, prefix: str) -> None:  # type: ignore[type-arg]
    """/health and one job's status, one after the other, every 0.2 s: their latencies."""
    async with httpx.AsyncClient(base_url=base, timeout=120) as c:
        while time.time() < until:
            for route, key in (("/health", "health_s"), (f"/jobs/{job}", "status_s")):
                t0 = time.perf_counter()
                r = await c.get(route)
                log[f"{prefix}{key}"].append(time.perf_counter() - t0)
                if r.status_code != 200:
                    log["errors"].append(f"{route} {r.status_code}")
            await asyncio.sleep(0.2)


async def puller(
    base: str, job: str, n_tiles: int, models: list[str], until: float, log: dict, seed: int
) -> None:  # type: ignore[type-arg]
    """Downloads of the large slide's exports and Grad-CAMs, round and round."""
    rng = np.random.default_rng(seed)
    routes = ["heatmap.png", "geojson", "tiles.csv", "gradcam"]
    async with httpx.AsyncClient(base_url=base, timeout=600) as c:
        i = seed
        while time.time() < until:
            what = routes[i % len(routes)]
            i += 1
            if what == "gradcam":
                tile, model = int(rng.integers(n_tiles)), models[int(rng.integers(len(models)))]
                path = f"/jobs/{job}/tiles/{tile}/gradcam.png?model={model}"
            else:
                path = f"/jobs/{job}/{what}"
            t0 = time.perf_counter()
            r = await c.get(path)
            log["downloads"].setdefault(what, []).append(time.perf_counter() - t0)
            if r.status_code != 200:
                log["errors"].append(f"{what} {r.status_code}: {r.text[:120]}")


async def client(base: str, slide: str, until: float, log: dict) -> None:  # type: ignore[type-arg]
    async with httpx.AsyncClient(base_url=base, timeout=120) as c:
        while time.time() < until:
            r = await c.post("/jobs", json={"path": slide})
            if r.status_code == 429:
                log["refused"] += 1
                await asyncio.sleep(
                    min(float(r.headers.get("Retry-After", 5)), max(0.0, until - time.time()))
                )
                continue
            if r.status_code != 202:
                log["errors"].append(f"submit {r.status_code}: {r.text[:200]}")
                await asyncio.sleep(1)
                continue
            job = r.json()["job_id"]
            log["accepted"].append(job)
            while True:
                st = await c.get(f"/jobs/{job}")
                status = st.json()["status"]
                if status in {"done", "failed", "cancelled"}:
                    break
                await asyncio.sleep(0.5)
            if status == "done":
                t0 = time.perf_counter()
                res = await c.get(f"/jobs/{job}/result")
                log["result_s"].append(time.perf_counter() - t0)
                assert res.status_code == 200


def plot(mem: MemoryTimeline, log: dict, path: Path) -> None:  # type: ignore[type-arg]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    t = [s[0] for s in mem.samples]
    a.plot(t, [s[1] for s in mem.samples])
    a.set(xlabel="s", ylabel="MB", title="Resident memory of all Ray processes")
    for name in ("idle_health_s", "load_health_s", "downloads_only_health_s", "load_status_s"):
        if log[name]:
            b.hist(np.log10(np.array(log[name]) * 1000), bins=40, alpha=0.5, label=name.removesuffix("_s"))
    b.set(xlabel="log10 ms", ylabel="calls", title="/health and job status: idle and under load")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _pct(xs: list[float], q: float) -> float | None:
    return round(float(np.percentile(xs, q)) * 1000, 1) if xs else None


def _latency(xs: list[float]) -> dict[str, float | int | None]:
    return {"p50": _pct(xs, 50), "p99": _pct(xs, 99), "n": len(xs)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pullers", type=int, default=8, help="clients downloading the large slide's results")
    ap.add_argument("--clients", type=int, default=4, help="clients submitting small slides and polling")
    ap.add_argument("--minutes", type=float, default=3.0, help="of load")
    ap.add_argument("--idle-seconds", type=float, default=30.0)
    ap.add_argument(
        "--downloads-seconds", type=float, default=60.0, help="of downloads alone, after the load"
    )
    ap.add_argument("--grid", type=int, default=6, help="fields per side of the small slides")
    ap.add_argument("--large-grid", type=int, default=142, help="fields per side of the large slide")
    args = ap.parse_args()
    s = load_settings()
    work = Path(tempfile.mkdtemp(prefix="wbc_bench_load_"))
    items = read_manifest(s.data_dir / "all_taleqani" / "split.csv", "test")
    slide = work / "small.tiff"
    compose_slide(items, slide, grid=(args.grid, args.grid), malignant_fraction=0.3, seed=5)
    large = work / "large.tiff"
    t0 = time.perf_counter()
    compose_slide(items, large, grid=(args.large_grid, args.large_grid), malignant_fraction=0.2, seed=6)
    print(f"large slide composed in {time.perf_counter() - t0:.0f} s", flush=True)
    settings = work / "settings.yaml"
    settings.write_text("service:\n  max_running: 1\n  max_queued: 8\n")
    from ray import serve

    from wbc_ray.pipeline import init_ray
    from wbc_ray.serve import ServiceDB, start

    init_ray()
    start(settings=str(settings), results_dir=str(work / "results"), slide_roots=[str(work)], port=PORT)
    base = f"http://127.0.0.1:{PORT}"
    api = httpx.Client(base_url=base, timeout=120)
    t0 = time.perf_counter()
    big = api.post("/jobs", json={"path": str(large)}).json()["job_id"]
    while (st := api.get(f"/jobs/{big}").json())["status"] not in {"done", "failed"}:
        done, total = (st["progress"].get(k) or 0 for k in ("done", "total"))
        print(f"\rlarge slide: {st['status']} {done:,}/{total:,} tiles", end="", flush=True)
        time.sleep(5)
    analysed_s = time.perf_counter() - t0
    assert st["status"] == "done", st
    big_result = api.get(f"/jobs/{big}/result").json()
    n_tiles = int(big_result["n_tiles"])
    models = [m["name"] for m in big_result["models"]]
    print(f"\nlarge slide: {n_tiles:,} tiles analysed in {analysed_s:.0f} s", flush=True)

    phases = ("idle", "load", "downloads_only")
    keys = [f"{ph}_{what}_s" for ph in phases for what in ("health", "status")] + ["result_s"]
    log: dict = {"accepted": [], "refused": 0, "errors": [], "downloads": {}, **{k: [] for k in keys}}
    busy: dict[str, float] = {}  # the machine's CPU use in each phase (all cores = 1)
    psutil.cpu_percent()
    asyncio.run(probe(base, big, time.time() + args.idle_seconds, log, "idle_"))
    busy["idle"] = psutil.cpu_percent() / 100
    until = time.time() + args.minutes * 60
    with MemoryTimeline() as mem:

        async def run() -> None:
            await asyncio.gather(
                probe(base, big, until, log, "load_"),
                *(puller(base, big, n_tiles, models, until, log, k) for k in range(args.pullers)),
                *(client(base, str(slide), until, log) for _ in range(args.clients)),
            )

        asyncio.run(run())
    busy["load"] = psutil.cpu_percent() / 100
    # For the record: the downloads alone (no analysis running), to tell the event loop's share
    # of the latency under load from the CPU's.
    while api.get("/health").json()["jobs_running"]:
        time.sleep(1)
    psutil.cpu_percent()
    until = time.time() + args.downloads_seconds

    async def downloads_only() -> None:
        await asyncio.gather(
            probe(base, big, until, log, "downloads_only_"),
            *(puller(base, big, n_tiles, models, until, log, k) for k in range(args.pullers)),
        )

    asyncio.run(downloads_only())
    busy["downloads_only"] = psutil.cpu_percent() / 100
    db = ServiceDB(work / "results" / "service.db")
    records = {j["job_id"]: j for j in db.jobs()}
    accepted = log["accepted"]
    lost = [j for j in accepted if j not in records or records[j]["status"] not in {"done", "failed"}]
    unexplained = [
        j for j in accepted if j in records and records[j]["status"] == "failed" and not records[j]["error"]
    ]
    halves = mem.halves()
    health = {k: _latency(log[f"{k}_health_s"]) for k in phases}
    status = {k: _latency(log[f"{k}_status_s"]) for k in phases}
    result = {
        "pullers": args.pullers,
        "clients": args.clients,
        "minutes": args.minutes,
        "large_slide": {"tiles": n_tiles, "analysed_s": round(analysed_s, 1)},
        "cpu_busy": {k: round(v, 3) for k, v in busy.items()},
        "health_ms": health,
        "status_ms": status,
        "downloads_ms": {k: _latency(v) for k, v in log["downloads"].items()},
        "accepted": len(accepted),
        "distinct_accepted": len(set(accepted)),
        "done": sum(records[j]["status"] == "done" for j in accepted if j in records),
        "failed": sum(records[j]["status"] == "failed" for j in accepted if j in records),
        "refused_429": log["refused"],
        "errors": log["errors"][:10],
        "n_errors": len(log["errors"]),
        "result_ms": _latency(log["result_s"]),
        "memory": halves,
    }

    def ratio(d: dict, phase: str = "load") -> float:  # type: ignore[type-arg]
        return round(d[phase]["p99"] / d["idle"]["p99"], 2) if d["idle"]["p99"] else float("inf")

    result["p99_downloads_only_vs_idle"] = {
        "health": ratio(health, "downloads_only"),
        "status": ratio(status, "downloads_only"),
    }
    result["targets"] = {
        "large_slide_tiles": target(n_tiles, ">=", 20000, 0),
        "health_p99_load_vs_idle": target(ratio(health), "<=", 2.0),
        "status_p99_load_vs_idle": target(ratio(status), "<=", 2.0),
        "jobs_lost_or_unexplained": target(len(lost) + len(unexplained), "<=", 0, 0),
        "jobs_accepted_twice": target(len(accepted) - len(set(accepted)), "<=", 0, 0),
        "request_errors": target(len(log["errors"]), "<=", 0, 0),
        "memory_second_half_vs_first": target(halves["worst_process_ratio"], "<=", 1.2),
    }
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    plot(mem, log, OUT_DIR / "load.png")
    print(json.dumps({k: v for k, v in result.items() if k != "targets"}, indent=1))
    serve.shutdown()
    shutil.rmtree(work, ignore_errors=True)
    return finish("load", result)


if __name__ == "__main__":
    sys.exit(main())
