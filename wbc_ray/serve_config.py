"""The Serve config file's wbc-ray application: its arguments (`AppArgs`) and which file applies.

Apart from the `serve` package (which imports Ray), so that the one-off path, which scores in
its own process, reads the same precisions and threads the service's replicas run with.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

from .config import APP_NAME, CONFIG_DIR
from .errors import InvalidInput

SERVE_CONFIG = CONFIG_DIR / "serve.yaml"
SERVE_GPU_CONFIG = CONFIG_DIR / "serve.gpu.yaml"


class AppArgs(BaseModel):
    """The Serve app's arguments (`args:` of a Serve config); unset ones come from the settings."""

    model_config = ConfigDict(extra="forbid")

    settings: str | None = None  # settings YAML (`wbc-ray --config`; default $WBC_RAY_CONFIG, default.yaml)
    models_dir: str | None = None  # default: settings (WBC_RAY_MODELS)
    results_dir: str | None = None  # default: settings (WBC_RAY_RESULTS)
    models: list[str] | None = None  # default: every checkpoint in models_dir
    fusion: str | None = None  # default: the settings' ensemble.fusion
    # One for all, or per model: None is the device default (AMP on GPUs; on CPUs bf16 where it
    # is native, else fp32). What pays on a CPU depends on the chip and the architecture:
    # measure with benchmarks/inference.py.
    precision: str | dict[str, str] | None = None
    torch_threads: int | dict[str, int] = 1  # per CNN replica (or per model); replicas run side by side
    # Threads a CNN replica may take for a step while its node's cores idle (the other models are
    # done, or slack mid-slide); 0 never. Off by default: a wide step sums in another order, so a
    # tile's score may move in the last bits and a rerun or resumed job is no longer identical
    # to the first, bit for bit. About 20 % faster end to end on 2 cores in int8 (docs/performance.md).
    tail_threads: int = 0
    max_batch_tiles: int = 256  # Serve batch cap per CNN replica, counted in tiles
    slide_roots: list[str] | None = None  # folders path submissions may read (plus uploads)
    max_upload_mb: float = 2048
    app_name: str = APP_NAME
    # Per-deployment options when the app is built from Python (serve run applies them itself).
    deployment_options: dict[str, dict[str, Any]] = {}

    def precision_of(self, name: str) -> str | None:
        """The precision this config sets for `name`, or None (the device default)."""
        return self.precision.get(name) if isinstance(self.precision, dict) else self.precision

    def precisions(self, names: list[str]) -> dict[str, str]:
        """{model: precision} for the named models this config sets a precision for."""
        return {n: p for n in names if (p := self.precision_of(n))}

    def threads_of(self, name: str) -> int:
        """Torch threads of `name`'s replicas."""
        t = self.torch_threads
        return t.get(name, 1) if isinstance(t, dict) else t


def load_serve_config(path: str | os.PathLike[str] = SERVE_CONFIG) -> dict[str, Any]:
    """The wbc-ray application's entry of a Serve config file."""
    cfg = yaml.safe_load(Path(path).read_text())
    apps = [app for app in cfg.get("applications", []) if app.get("name") == APP_NAME]
    if not apps:
        raise InvalidInput(f"{path}: no application named {APP_NAME!r}")
    return {"config": cfg, "app": apps[0]}


def config_args(path: str | os.PathLike[str] | None = None) -> AppArgs:
    """The app's args as configured in a Serve config (default: `default_serve_config()`)."""
    return AppArgs(**load_serve_config(path or default_serve_config())["app"].get("args", {}))


def default_serve_config() -> Path:
    """configs/serve.gpu.yaml where there are GPUs (in the Ray cluster this process is connected
    to; without Ray, on this machine), else configs/serve.yaml. CPU replicas would leave the GPUs
    idle and GPU replicas could never start without them; and calibration and `evaluate --served`
    must measure the precisions the app will serve in (int8 on CPUs, AMP on GPUs).
    """
    ray = sys.modules.get("ray")  # not imported here: a process without Ray stays without it
    if ray is not None and ray.is_initialized():
        gpus = ray.cluster_resources().get("GPU", 0) > 0
    else:
        import torch

        gpus = torch.cuda.is_available()
    return SERVE_GPU_CONFIG if gpus else SERVE_CONFIG
