"""Ray Serve deployments (CNN x3, Ensemble, FastAPI Ingress) and the app builder."""

from ._ingress import Ingress, api
from ._jobs import JobStore
from ._models import CNN, Ensemble
from .app import APP_NAME, AppArgs, app_from_config, build_app, ensemble_handle, start

__all__ = [
    "APP_NAME",
    "CNN",
    "AppArgs",
    "Ensemble",
    "Ingress",
    "JobStore",
    "api",
    "app_from_config",
    "build_app",
    "ensemble_handle",
    "start",
]
