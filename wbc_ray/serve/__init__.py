"""Ray Serve deployments (CNN x3, Ensemble, FastAPI Ingress) and the app builder."""

from ._db import Principal, ServiceDB
from ._ingress import Ingress, api
from ._jobs import JobPaths, job_paths
from ._models import CNN, Ensemble
from ._reviews import export_reviewed
from .app import APP_NAME, AppArgs, app_from_config, build_app, ensemble_handle, start

__all__ = [
    "APP_NAME",
    "CNN",
    "AppArgs",
    "Ensemble",
    "Ingress",
    "JobPaths",
    "Principal",
    "ServiceDB",
    "api",
    "app_from_config",
    "build_app",
    "ensemble_handle",
    "export_reviewed",
    "job_paths",
    "start",
]
