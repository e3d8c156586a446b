"""The parser (one sub-command per verb module) and the entry point's error handling."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from ..errors import WbcRayError
from . import (
    adapt,
    analyze,
    calibrate,
    deploy,
    domain,
    evaluate,
    info,
    make_slide,
    quantize,
    release,
    review,
    serve,
    tile,
    token,
    train,
    ui,
)

# In the order `wbc-ray --help` lists them: inspect, analyse, serve, the model life cycle, deploy.
VERBS: tuple[ModuleType, ...] = (
    info,
    make_slide,
    tile,
    analyze,
    serve,
    token,
    ui,
    review,
    train,
    evaluate,
    calibrate,
    quantize,
    domain,
    adapt,
    release,
    deploy,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="wbc-ray", description="Screen whole-slide scans for acute lymphoblastic leukemia on Ray."
    )
    p.add_argument("--config", help="settings YAML (default configs/default.yaml)")
    sub = p.add_subparsers(dest="command", required=True)
    for verb in VERBS:
        sp = sub.add_parser(verb.NAME, help=verb.HELP, description=verb.HELP)
        verb.add_arguments(sp)
        sp.set_defaults(run=verb.run)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run one verb; wbc-ray's own errors become `wbc-ray: error: ...` and exit code 2."""
    args = build_parser().parse_args(argv)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if args.config:
        # Every load_settings() of this run reads it, in this process and in the Ray workers and
        # Serve replicas it starts (they inherit the environment).
        os.environ["WBC_RAY_CONFIG"] = str(Path(args.config).resolve())
    try:
        code: int = args.run(args)
        return code
    except WbcRayError as exc:
        print(f"wbc-ray: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("wbc-ray: interrupted", file=sys.stderr)
        return 130
