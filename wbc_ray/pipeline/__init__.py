"""The Ray Data job for one slide: plan, read, (score), write, resume, progress."""

from ._job import JobResult, Plan, ReadTiles, WriteChunks, init_ray, plan_slide, run_job

__all__ = ["JobResult", "Plan", "ReadTiles", "WriteChunks", "init_ray", "plan_slide", "run_job"]
