"""The Ray Data job for one slide: plan, read, (score), write, resume, progress."""

from ._analyze import APP_NAME, AnalysisSettings, analyze_slide, score_chunks, work_unit
from ._job import JobResult, Plan, ReadTiles, WriteChunks, file_sha256, init_ray, plan_slide, run_job
from ._tile import tile_slide

__all__ = [
    "APP_NAME",
    "AnalysisSettings",
    "JobResult",
    "Plan",
    "ReadTiles",
    "WriteChunks",
    "analyze_slide",
    "file_sha256",
    "init_ray",
    "plan_slide",
    "run_job",
    "score_chunks",
    "tile_slide",
    "work_unit",
]
