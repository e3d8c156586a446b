"""The Gradio UI (`wbc-ray ui --api URL`): a separate process over the REST API."""

import os

# Gradio reports usage to its makers unless told not to; a page clinicians use must not call out
# on its own. Read when gradio is imported, so before `_app`; an explicit setting is kept.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from ._app import build_ui, launch  # noqa: E402
from ._client import ApiClient, ApiError

__all__ = ["ApiClient", "ApiError", "build_ui", "launch"]
