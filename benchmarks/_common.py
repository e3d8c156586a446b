"""Helpers for `make bench`: peak memory of Ray processes, results as JSON beside a baseline."""

from __future__ import annotations

import json
import os
import platform
import threading
import time
from collections.abc import Callable
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


class _Processes:
    """The processes a label function names (the others skipped), each labelled once: reading
    every process's name and command line at each sample cost the driver ~6 CPU-s in a 60 s run
    at 5 samples a second, taken from the system being measured.
    """

    def __init__(self, label: Callable[[psutil.Process], str | None]) -> None:
        self.label = label
        self.known: dict[int, tuple[str, psutil.Process] | None] = {}

    def scan(self) -> list[tuple[int, str, psutil.Process]]:
        out = []
        for p in psutil.process_iter():
            if p.pid not in self.known:
                try:
                    name = self.label(p)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    name = None
                self.known[p.pid] = (name, p) if name is not None else None
            entry = self.known[p.pid]
            if entry is not None:
                out.append((p.pid, *entry))
        return out


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

        def label(p: psutil.Process) -> str | None:
            return "driver" if p.pid == me else p.name() if _is_ray(p) else None

        procs = _Processes(label)
        while not self._stop.is_set():
            total = 0
            for pid, name, p in procs.scan():
                try:
                    rss = p.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                total += rss
                if rss > self.peak.get(pid, ("", 0))[1]:
                    self.peak[pid] = (name, rss)
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
    """CPU seconds each part of the system spends between enter and exit (processes by role),
    and, every `interval` seconds, how many cores each role was using: the timeline shows where
    the cores idle (a slide's last seconds, when one model's replica still works through the
    tiles queued for it while the others wait) as well as how much each part takes.
    """

    def __init__(self, interval: float = 0.5) -> None:
        self.start: dict[int, tuple[str, float]] = {}
        self.seconds: dict[str, float] = {}
        self.t0 = 0.0
        self.wall = 0.0
        self.interval = interval
        self.samples: list[dict[str, float]] = []  # cores used per role, one dict per interval
        me = os.getpid()
        self._procs = _Processes(lambda p: _cpu_role(p, me))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _snap(self) -> dict[int, tuple[str, float]]:
        out = {}
        for pid, role, p in self._procs.scan():
            try:
                t = p.cpu_times()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            out[pid] = (role, t.user + t.system)
        return out

    def _run(self) -> None:
        last, t_last = self.start, self.t0
        while not self._stop.wait(self.interval):
            now, t_now = self._snap(), time.perf_counter()
            per_role: dict[str, float] = {}
            for pid, (role, cpu) in now.items():
                used = max(0.0, cpu - last.get(pid, (role, cpu))[1])
                per_role[role] = per_role.get(role, 0.0) + used / (t_now - t_last)
            self.samples.append(per_role)
            last, t_last = now, t_now

    def __enter__(self) -> CpuAccount:
        self.start, self.t0 = self._snap(), time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        # Processes that exited in between are missed; Ray keeps its workers, so few are.
        self._stop.set()
        self._thread.join()
        self.wall = time.perf_counter() - self.t0
        for pid, (role, cpu) in self._snap().items():
            used = cpu - self.start.get(pid, (role, 0.0))[1]
            self.seconds[role] = self.seconds.get(role, 0.0) + max(0.0, used)

    def tail(self, busy_below: float = 0.75) -> dict[str, Any]:
        """The run's last stretch with fewer than `busy_below` of all cores busy: its length and
        the role that used the most CPU in it (the work the rest of the system waited for).
        """
        cores = os.cpu_count() or 1
        k = len(self.samples)
        while k and sum(self.samples[k - 1].values()) < busy_below * cores:
            k -= 1
        end = self.samples[k:]
        used: dict[str, float] = {}
        for row in end:
            for role, c in row.items():
                used[role] = used.get(role, 0.0) + c
        top = max(used, key=lambda r: used[r]) if used else ""
        idle = sum(cores - sum(row.values()) for row in end) * self.interval
        return {
            "seconds": round(len(end) * self.interval, 1),
            "idle_core_s": round(idle, 1),
            "busiest": top,
        }

    def summary(self) -> dict[str, Any]:
        total = sum(self.seconds.values())
        cores = os.cpu_count() or 1
        roles = sorted(self.seconds, key=lambda r: -self.seconds[r])
        return {
            "cpu_s": {k: round(self.seconds[k], 1) for k in roles},
            "total_cpu_s": round(total, 1),
            "busy_share_of_all_cores": round(total / (cores * self.wall), 3) if self.wall else 0.0,
            "cnn_share_of_cpu": round(
                sum(v for k, v in self.seconds.items() if k.startswith("CNN")) / total, 3
            )
            if total
            else 0.0,
            "tail_below_75pct_busy": self.tail(),
            "timeline": {
                "interval_s": self.interval,
                "cores_by_role": {r: [round(row.get(r, 0.0), 2) for row in self.samples] for r in roles},
            },
        }


def plot_cpu_timeline(summary: dict[str, Any], path: Path, title: str) -> Path:
    """A stacked area of cores used by role over a run (from `CpuAccount.summary()`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tl = summary["timeline"]
    series = tl["cores_by_role"]
    n = max((len(v) for v in series.values()), default=0)
    t = [tl["interval_s"] * (i + 1) for i in range(n)]
    fig, ax = plt.subplots(figsize=(9, 4.4))
    ax.stackplot(t, *series.values(), labels=list(series), step="pre")
    ax.axhline(os.cpu_count() or 1, color="k", lw=0.8, ls="--")
    ax.set_xlabel("seconds into the run")
    ax.set_ylabel("cores busy")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def cpu_description() -> str:
    """The CPU's model, its core count and the vector extensions that decide CPU inference speed
    (read from /proc/cpuinfo: these machines change under the project).
    """
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and ":" in line:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    ext = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile") if f in flags]
    return f"{model}, {os.cpu_count()} cores, {'+'.join(ext) or 'no AVX2'}"


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


def finish(name: str, result: dict[str, Any], work: Path | None = None) -> int:
    """Write the result JSON, print its targets, remove the scratch folder; the exit code."""
    import shutil

    path = write_result(name, result)
    print_targets(result["targets"])
    print(f"wrote {path}")
    if work is not None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def print_targets(targets: dict[str, dict[str, Any]]) -> None:
    for k, v in targets.items():
        print(f"{k:>32}: {v['value']} (target {v['target']}) {v['status']}")
