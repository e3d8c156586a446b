"""`wbc-ray serve`: local Ray and the Serve app (REST API) until Ctrl-C or SIGTERM (`serve.start`)."""

from __future__ import annotations

import argparse
import signal
import time
from types import FrameType

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
    url = f"http://{args.host}:{args.port}"
    # One-off `wbc-ray analyze` commands on this machine find the service by this record and send
    # their slides to it (its models are up) instead of loading the models beside it.
    record_service(url, args.models, args.config, args.serve_config)
    print(f"wbc-ray serving on {url} (OpenAPI at /docs); Ctrl-C to stop", flush=True)
    from ..service_record import remove_record

    # A service manager (systemd, Docker, Kubernetes) stops a service with SIGTERM: the same
    # orderly stop as Ctrl-C, or Ray's processes outlive it and its record stays behind.
    signal.signal(signal.SIGTERM, _stop)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        from ray import serve

        remove_record()  # first: a command started while Serve stops must not send it slides
        serve.shutdown()
    finally:
        remove_record()
    return 0


def _stop(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def record_service(url: str, models: str | None, config: str | None, serve_config: str | None) -> None:
    """Leave the record `service_record.running_service` reads: the Ray address, URL and models."""
    import ray

    from ..config import load_settings
    from ..serve_config import config_args
    from ..service_record import write_record

    s = load_settings(config)
    a = config_args(serve_config)
    models_dir = models or a.models_dir or str(s.models_dir)
    write_record(ray.get_runtime_context().gcs_address, url, models_dir, a.app_name, a.models)
