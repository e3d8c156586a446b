"""The Gradio UI (`wbc-ray ui --api URL`): a separate process over the REST API."""

from ._app import build_ui, launch
from ._client import ApiClient, ApiError

__all__ = ["ApiClient", "ApiError", "build_ui", "launch"]
