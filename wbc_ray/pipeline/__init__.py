"""One slide streamed through Ray Data (or, on one machine, threads): plan, read, (score), write,
resume, progress; its analysis.
"""

from ._analyze import (
    APP_NAME,
    AnalysisSettings,
    Scorer,
    ServeScorer,
    analyze_slide,
    score_chunks,
    screen_settings,
    work_unit,
)
from ._screening import ScreenSettings, build_screen, stain_method
from ._stream import (
    Plan,
    ReadTiles,
    StreamResult,
    WriteChunks,
    file_sha256,
    init_ray,
    plan_slide,
    stream_slide,
)
from ._threads import stream_in_threads
from ._tile import tile_slide

__all__ = [
    "APP_NAME",
    "AnalysisSettings",
    "StreamResult",
    "Plan",
    "ReadTiles",
    "ScreenSettings",
    "Scorer",
    "ServeScorer",
    "WriteChunks",
    "analyze_slide",
    "build_screen",
    "file_sha256",
    "init_ray",
    "plan_slide",
    "stream_slide",
    "stream_in_threads",
    "score_chunks",
    "screen_settings",
    "stain_method",
    "tile_slide",
    "work_unit",
]
