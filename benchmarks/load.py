"""Load on the lab service: K clients submit small slides and poll them for M minutes.

Every accepted job must end done or failed with a reason (none lost, none twice); the figures
are the latencies of status and result calls (p50/p99), how the bounded queue answered (202 or
429 with Retry-After), and the resident memory of every Ray process over the run: the second
half's peak against the first half's (flat: <= 1.2x). JSON and a plot in bench_results/.

    python -m benchmarks.load [--clients 6] [--minutes 3]
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
                t0 = time.perf_counter()
                st = await c.get(f"/jobs/{job}")
                log["status_s"].append(time.perf_counter() - t0)
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
    for name in ("status_s", "result_s"):
        if log[name]:
            b.hist(np.array(log[name]) * 1000, bins=40, alpha=0.6, label=name.removesuffix("_s"))
    b.set(xlabel="ms", ylabel="calls", title="Latency of status and result calls")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--grid", type=int, default=6, help="fields per side of the small slides")
    args = ap.parse_args()
    s = load_settings()
    work = Path(tempfile.mkdtemp(prefix="wbc_bench_load_"))
    items = read_manifest(s.data_dir / "all_taleqani" / "split.csv", "test")
    slide = work / "small.tiff"
    compose_slide(items, slide, grid=(args.grid, args.grid), malignant_fraction=0.3, seed=5)
    settings = work / "settings.yaml"
    settings.write_text("service:\n  max_running: 1\n  max_queued: 8\n")
    from ray import serve

    from wbc_ray.pipeline import init_ray
    from wbc_ray.serve import ServiceDB, start

    init_ray()
    start(settings=str(settings), results_dir=str(work / "results"), slide_roots=[str(work)], port=PORT)
    base = f"http://127.0.0.1:{PORT}"
    log: dict = {"accepted": [], "refused": 0, "errors": [], "status_s": [], "result_s": []}
    until = time.time() + args.minutes * 60
    with MemoryTimeline() as mem:

        async def run() -> None:
            await asyncio.gather(*(client(base, str(slide), until, log) for _ in range(args.clients)))

        asyncio.run(run())
    db = ServiceDB(work / "results" / "service.db")
    records = {j["job_id"]: j for j in db.jobs()}
    accepted = log["accepted"]
    lost = [j for j in accepted if j not in records or records[j]["status"] not in {"done", "failed"}]
    unexplained = [
        j for j in accepted if j in records and records[j]["status"] == "failed" and not records[j]["error"]
    ]
    halves = mem.halves()
    pct = lambda xs, q: round(float(np.percentile(xs, q)) * 1000, 1) if xs else None  # noqa: E731
    result = {
        "clients": args.clients,
        "minutes": args.minutes,
        "accepted": len(accepted),
        "distinct_accepted": len(set(accepted)),
        "done": sum(records[j]["status"] == "done" for j in accepted if j in records),
        "failed": sum(records[j]["status"] == "failed" for j in accepted if j in records),
        "refused_429": log["refused"],
        "errors": log["errors"][:10],
        "status_ms": {
            "p50": pct(log["status_s"], 50),
            "p99": pct(log["status_s"], 99),
            "n": len(log["status_s"]),
        },
        "result_ms": {
            "p50": pct(log["result_s"], 50),
            "p99": pct(log["result_s"], 99),
            "n": len(log["result_s"]),
        },
        "memory": halves,
    }
    result["targets"] = {
        "jobs_lost_or_unexplained": target(len(lost) + len(unexplained), "<=", 0, 0),
        "jobs_accepted_twice": target(len(accepted) - len(set(accepted)), "<=", 0, 0),
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
