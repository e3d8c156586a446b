"""`wbc-ray serve`: local Ray and the Serve app (REST API) until Ctrl-C (`serve.start`)."""

from __future__ import annotations

import argparse
import time

from ._shared import add_bind, add_serve_config

NAME = "serve"
HELP = "start local Ray and the Serve app from a Serve config"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_serve_config(p)
    p.add_argument("--models", help="weights folder (default: settings models_dir)")
    p.add_argument("--results", help="results folder (default: settings results_dir)")
    add_bind(p, 8000)


def run(args: argparse.Namespace) -> int:
    from ..serve import start
    from ..serve.app import preflight

    given = {"models_dir": args.models, "results_dir": args.results, "settings": args.config}
    overrides = {k: v for k, v in given.items() if v}
    preflight(args.serve_config, args.host, args.port, **overrides)
    start(args.serve_config, host=args.host, port=args.port, **overrides)
    print(f"wbc-ray serving on http://{args.host}:{args.port} (OpenAPI at /docs); Ctrl-C to stop", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        from ray import serve

        serve.shutdown()
    return 0
