"""Run WSInfer's own CLI (`wsinfer run --config --model-path`) offline, in WSInfer's venv.

WSInfer reads its model zoo's registry from the Hub when its CLI is imported, even for a local
model; with no Hub reachable that import fails, so a one-entry registry stands in for it here.
Everything after that is WSInfer's command as a user types it. The seconds its run took go to
the JSON file named by WSINFER_TIMING (the tiles and scores are WSInfer's own CSV).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

T0 = time.perf_counter()

import wsinfer_zoo.client as zoo  # noqa: E402

_REGISTRY = zoo.ModelRegistry.from_dict(
    {"models": {"local": {"description": "offline", "hf_repo_id": "none/none", "hf_revision": "main"}}}
)
zoo.load_registry = lambda registry_file=None: _REGISTRY  # type: ignore[assignment]

from wsinfer.cli.cli import cli  # noqa: E402

if __name__ == "__main__":
    started = time.perf_counter()
    code = 0
    try:
        cli.main(args=sys.argv[1:], standalone_mode=False)
    except SystemExit as exc:
        code = int(exc.code or 0)
    with open(os.environ["WSINFER_TIMING"], "w") as fh:
        json.dump(
            {
                "startup_s": started - T0,
                "run_s": time.perf_counter() - started,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            },
            fh,
        )
    sys.exit(code)
