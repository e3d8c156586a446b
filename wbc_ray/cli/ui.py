"""`wbc-ray ui`: the Gradio page, in its own process, over a running REST API (`ui.launch`)."""

from __future__ import annotations

import argparse

from ..errors import UserError
from ._shared import add_bind

NAME = "ui"
HELP = "the Gradio page (its own process) over a running REST API"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--api", default="http://127.0.0.1:8000", help="the wbc-ray REST API's base URL")
    p.add_argument(
        "--viewer-url",
        help="where visitors' browsers reach the service, for the review workspace (default: --api)",
    )
    add_bind(p, 7860)


def run(args: argparse.Namespace) -> int:
    from ..ui import ApiClient, ApiError, launch

    client = ApiClient(args.api, timeout=10)
    try:
        client.health()  # a UI over no API would only show errors later
    except ApiError as exc:
        raise UserError(f"{exc} (start it with `wbc-ray serve`, or pass --api URL)") from None
    finally:
        client.close()
    print(f"wbc-ray UI on http://{args.host}:{args.port} (API: {args.api}); Ctrl-C to stop", flush=True)
    launch(args.api, host=args.host, port=args.port, viewer_url=args.viewer_url)
    return 0
