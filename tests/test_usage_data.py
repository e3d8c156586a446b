"""wbc-ray processes send no usage data of their own accord: OpenVINO's converter, NNCF and Gradio
report to their makers by default (opt-out; `ray.init` turns Ray's off for release wheels). Each
check runs in a fresh process without Gradio's opt-out variable (a developer's shell may set it),
importing wbc-ray first, as a replica, `wbc-ray quantize` or `wbc-ray ui` does."""

from __future__ import annotations

import os
import subprocess
import sys


def _run(code: str) -> list[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("GRADIO_ANALYTICS_ENABLED", "RAY_USAGE_STATS_ENABLED")
    }
    env["RAY_AUTH_MODE"] = "disabled"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()


def test_openvino_and_nncf_get_their_stubs() -> None:
    out = _run(
        "import wbc_ray.models, openvino, nncf.telemetry.wrapper as w;"
        "import openvino.tools.ovc.telemetry_utils as t;"
        "print(t.tm.__name__, type(w.telemetry).__name__)"
    )
    assert out == ["openvino.tools.ovc.telemetry_stub", "MagicMock"]  # MagicMock is NNCF's stub


def test_gradio_analytics_are_off() -> None:
    assert _run("import wbc_ray.ui; from gradio import analytics; print(analytics.analytics_enabled())") == [
        "False"
    ]
