"""Helpers for `make bench`: peak memory of Ray processes, results as JSON beside a baseline."""

from __future__ import annotations

import json
import os
import platform
import threading
import time
from pathlib import Path
from typing import Any

import psutil

OUT_DIR = Path(os.environ.get("WBC_RAY_BENCH_OUT", Path(__file__).resolve().parent.parent / "bench_results"))


def _is_ray(p: psutil.Process) -> bool:
    try:
        name = p.name()
        cmd = " ".join(p.cmdline()[:3])
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return (
        name.startswith("ray::")
        or "raylet" in cmd
        or "gcs_server" in cmd
        or "ray/_private" in cmd
        or ("default_worker.py" in cmd)
    )


class RayMemory:
    """Samples the resident memory of every Ray process (and the driver) until stopped."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.peak: dict[int, tuple[str, int]] = {}
        self.peak_total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            total = 0
            for p in psutil.process_iter():
                if p.pid != me and not _is_ray(p):
                    continue
                try:
                    rss = p.memory_info().rss
                    name = "driver" if p.pid == me else p.name()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                total += rss
                if rss > self.peak.get(p.pid, ("", 0))[1]:
                    self.peak[p.pid] = (name, rss)
            self.peak_total = max(self.peak_total, total)
            self._stop.wait(self.interval)

    def __enter__(self) -> RayMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, Any]:
        by_proc = sorted(self.peak.values(), key=lambda t: -t[1])
        workers = [rss for name, rss in by_proc if name.startswith("ray::")]
        return {
            "peak_process_mb": round(by_proc[0][1] / 2**20, 1) if by_proc else 0.0,
            "peak_process": by_proc[0][0] if by_proc else "",
            "peak_worker_mb": round(max(workers) / 2**20, 1) if workers else 0.0,
            "peak_total_mb": round(self.peak_total / 2**20, 1),
            "n_processes": len(by_proc),
            "top": [{"process": n, "mb": round(r / 2**20, 1)} for n, r in by_proc[:8]],
        }


def _cpu_role(p: psutil.Process, me: int) -> str | None:
    """Which part of the system a process is, for CPU accounting (None: not ours)."""
    if p.pid == me:
        return "driver (Ray Data executor, plan, verdict)"
    if not _is_ray(p):
        return None
    try:
        # Ray retitles its workers ("ray::ServeReplica:<app>:<deployment>..."); name() is cut short.
        cmd = p.cmdline()
        name = cmd[0] if cmd else p.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    if name.startswith("ray::ServeReplica:"):
        deployment = name.removeprefix("ray::ServeReplica:").split(":")[1].split(".")[0]
        return f"CNN replicas: {deployment}" if deployment not in {"Ensemble", "Ingress"} else "Serve: other"
    if name.startswith(("ray::ServeController", "ray::ProxyActor")):
        return "Serve: other"
    if name.startswith(("ray::IDLE", "ray::MapBatches", "ray::ReadTiles", "ray::WriteChunks", "ray::_")):
        return "Ray Data tasks (read, score calls, write) and helpers"
    return "Ray core (GCS, raylet, agents)"


class CpuAccount:
    """CPU seconds each part of the system spends between enter and exit (processes by role)."""

    def __init__(self) -> None:
        self.start: dict[int, tuple[str, float]] = {}
        self.seconds: dict[str, float] = {}
        self.t0 = 0.0
        self.wall = 0.0

    def _snap(self) -> dict[int, tuple[str, float]]:
        me, out = os.getpid(), {}
        for p in psutil.process_iter():
            role = _cpu_role(p, me)
            try:
                if role is not None:
                    t = p.cpu_times()
                    out[p.pid] = (role, t.user + t.system)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return out

    def __enter__(self) -> CpuAccount:
        self.start, self.t0 = self._snap(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        # Processes that exited in between are missed; Ray keeps its workers, so few are.
        self.wall = time.perf_counter() - self.t0
        for pid, (role, cpu) in self._snap().items():
            used = cpu - self.start.get(pid, (role, 0.0))[1]
            self.seconds[role] = self.seconds.get(role, 0.0) + max(0.0, used)

    def summary(self) -> dict[str, Any]:
        total = sum(self.seconds.values())
        cores = os.cpu_count() or 1
        return {
            "cpu_s": {k: round(v, 1) for k, v in sorted(self.seconds.items(), key=lambda kv: -kv[1])},
            "total_cpu_s": round(total, 1),
            "busy_share_of_all_cores": round(total / (cores * self.wall), 3) if self.wall else 0.0,
            "cnn_share_of_cpu": round(
                sum(v for k, v in self.seconds.items() if k.startswith("CNN")) / total, 3
            )
            if total
            else 0.0,
        }


def write_result(name: str, result: dict[str, Any]) -> Path:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": name,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        **result,
    }
    path = OUT_DIR / f"{name}.json"
    path.write_text(json.dumps(result, indent=2))
    return path


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def target(value: float, op: str, bound: float, digits: int = 3) -> dict[str, Any]:
    """One target line of a benchmark JSON: value, the bound it is held to, PASS or MISS."""
    ok = value >= bound if op == ">=" else value <= bound
    return {"value": round(value, digits), "target": f"{op} {bound}", "status": verdict(ok)}


def print_targets(targets: dict[str, dict[str, Any]]) -> None:
    for k, v in targets.items():
        print(f"{k:>32}: {v['value']} (target {v['target']}) {v['status']}")
