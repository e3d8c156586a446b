"""One error hierarchy: every error wbc-ray raises for bad input derives from WbcRayError."""

from __future__ import annotations

import subprocess
import sys

from wbc_ray.errors import ReleaseError, UserError, WbcRayError, WeightsUnavailable
from wbc_ray.models import Int8Unavailable
from wbc_ray.slides import SlideError
from wbc_ray.training._release import ReleaseRefused
from wbc_ray.ui import ApiError


def test_the_project_errors_share_one_base() -> None:
    ours = [SlideError, ReleaseError, WeightsUnavailable, Int8Unavailable, ReleaseRefused, ApiError]
    ours.append(UserError)
    for cls in ours:
        assert issubclass(cls, WbcRayError), cls
    # Callers that caught the built-in bases before still do.
    assert issubclass(ReleaseRefused, ValueError) and issubclass(Int8Unavailable, RuntimeError)


def test_the_cli_turns_them_into_exit_code_2_without_a_traceback(tmp_path) -> None:
    bad = tmp_path / "bad.svs"
    bad.write_text("not a slide")
    r = subprocess.run(
        [sys.executable, "-m", "wbc_ray.cli", "info", str(bad)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 2 and r.stderr.startswith("wbc-ray: error: ") and "Traceback" not in r.stderr
    assert "bad.svs" in r.stderr
