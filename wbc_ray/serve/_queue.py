"""The job queue's runner: at most `max_running` slides at once, the rest in submission order.

A thread in each Ingress replica: it claims queued jobs from the database (atomically, so
several replicas never run one job twice), starts each as a Ray task, vouches for the jobs it
runs (a heartbeat), records how they end, stops the ones cancelled meanwhile, and queues again
running jobs that nobody has vouched for lately: after a restart of the service (Ray and Serve
killed) they resume from their Zarr stores, where finished work units are skipped, and end with
the results an uninterrupted run gives.
"""

from __future__ import annotations

import heapq
import logging
import statistics
import threading
from collections.abc import Callable, Sequence
from typing import Any

from ._db import ServiceDB

STALE_S = 15.0  # a running job no replica vouched for this long is queued again
TICK_S = 0.5

log = logging.getLogger("ray.serve")
DEFAULT_JOB_S = 30.0  # the guess for a job's length before any job has finished


def finish_times(
    running_started: Sequence[float], queued: int, slots: int, durations: Sequence[float], now: float
) -> list[float]:
    """When each active job is likely to end, in seconds from `now`: running jobs first (in the
    order given), then the queued ones in queue order.

    A job is assumed to take the median of recent jobs' durations; `slots` run side by side, and a
    queued job starts when the earliest slot frees (the runner's own order), so a client told to
    come back is told when a place will really be free, not one job's length whatever the queue.
    """
    typical = statistics.median(durations) if durations else DEFAULT_JOB_S
    ends = [max(1.0, started + typical - now) for started in running_started]
    # With more running than slots (the setting was lowered), a slot frees only as the last of the
    # surplus ends.
    ordered = sorted(ends)
    free = ordered[len(ends) - slots :] if len(ends) >= slots else ordered + [0.0] * (slots - len(ends))
    heapq.heapify(free)
    for _ in range(queued):
        start = heapq.heappop(free)
        ends.append(start + typical)
        heapq.heappush(free, start + typical)
    return ends


class Runner:
    """Starts, watches and ends jobs; `launch(job) -> ObjectRef` starts one."""

    def __init__(self, db: ServiceDB, launch: Callable[[dict[str, Any]], Any], max_running: int) -> None:
        self.db = db
        self.launch = launch
        self.max_running = max_running
        self.refs: dict[str, Any] = {}  # job_id -> ObjectRef of the task running it here
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="wbc-ray-jobs", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # the runner must outlive any one bad tick
                log.exception("job runner tick failed")
            self._stop.wait(TICK_S)

    def tick(self) -> None:
        self.db.heartbeat(list(self.refs))
        for job_id in self.db.requeue_stale(STALE_S):
            log.warning("job %s: its runner is gone; queued again to resume", job_id)
        self._reap()
        self._stop_cancelled()
        while (job := self.db.claim_next(self.max_running)) is not None:
            try:
                self.refs[job["job_id"]] = self.launch(job)
            except Exception as exc:
                self.db.finish(job["job_id"], "failed", error=f"could not start: {type(exc).__name__}: {exc}")

    def halt(self, job_id: str, timeout_s: float = 60.0) -> None:
        """Stop a cancelled job's task here and wait until it has ended (its reads and writes
        with it), so that its files can go without anything of it writing them again.
        """
        import ray

        ref = self.refs.get(job_id)
        if ref is None:
            return
        ray.cancel(ref, force=True, recursive=True)
        ray.wait([ref], timeout=timeout_s)

    def _reap(self) -> None:
        import ray

        if not self.refs:
            return
        ready, _ = ray.wait(list(self.refs.values()), num_returns=len(self.refs), timeout=0)
        for ref in ready:
            job_id = next(j for j, r in self.refs.items() if r == ref)
            del self.refs[job_id]
            try:
                result = ray.get(ref)
            except ray.exceptions.TaskCancelledError:
                continue
            except ray.exceptions.RayTaskError as exc:
                cause = exc.cause if exc.cause is not None else exc
                self.db.finish(job_id, "failed", error=f"{type(cause).__name__}: {cause}")
                continue
            except Exception as exc:  # the worker died and retries ran out
                self.db.finish(job_id, "failed", error=f"job worker died: {type(exc).__name__}")
                continue
            self.db.finish(job_id, "done", result=result)

    def _stop_cancelled(self) -> None:
        import ray

        for job_id, ref in list(self.refs.items()):
            try:
                status = self.db.job(job_id)["status"]
            except KeyError:
                status = "cancelled"
            if status == "cancelled":
                ray.cancel(ref, force=True, recursive=True)
                del self.refs[job_id]
