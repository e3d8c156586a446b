"""The Ray Data job for one slide: plan, read, (score), write, resume, progress."""

from ._analyze import APP_NAME, AnalysisSettings, analyze_slide, score_chunks, screen_settings, work_unit
from ._job import JobResult, Plan, ReadTiles, WriteChunks, file_sha256, init_ray, plan_slide, run_job
from ._screening import ScreenSettings, build_screen, stain_method
from ._tile import tile_slide

__all__ = [
    "APP_NAME",
    "AnalysisSettings",
    "JobResult",
    "Plan",
    "ReadTiles",
    "ScreenSettings",
    "WriteChunks",
    "analyze_slide",
    "build_screen",
    "file_sha256",
    "init_ray",
    "plan_slide",
    "run_job",
    "score_chunks",
    "screen_settings",
    "stain_method",
    "tile_slide",
    "work_unit",
]
