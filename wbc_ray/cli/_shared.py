"""Flags and helpers several verbs share: one spelling, one help text, one default each."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TextIO

from ..config import Settings, load_settings
from ..errors import UserError

MANIFEST_HELP = "labelled images, CSV (default: <data_dir>/all_taleqani/split.csv)"
# Which Serve config the commands use when none is named (serve.app.default_serve_config).
CHOSEN = "(default: configs/serve.gpu.yaml where there are GPUs, else configs/serve.yaml)"


def add_models(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", help="weights folder (default: settings models_dir, i.e. the release)")


def add_manifest(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", help=MANIFEST_HELP)


def add_serve_config(p: argparse.ArgumentParser, what: str = "Ray Serve config") -> None:
    p.add_argument("--serve-config", help=f"{what} {CHOSEN}")


def add_slide_mpp(p: argparse.ArgumentParser) -> None:
    p.add_argument("--slide-mpp", type=float, help="override the slide's microns/pixel")


def add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_bind(p: argparse.ArgumentParser, port: int) -> None:
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)"
    )
    p.add_argument("--port", type=int, default=port, help=f"default: {port}")


def settings(args: argparse.Namespace) -> Settings:
    """The settings of this run: `--config` (exported by main as $WBC_RAY_CONFIG), else defaults."""
    return load_settings(getattr(args, "config", None))


def models_dir(args: argparse.Namespace) -> Path:
    return Path(args.models) if getattr(args, "models", None) else settings(args).models_dir


def manifest(args: argparse.Namespace) -> Path:
    """`--manifest`, else the labelled images' split file under the settings' data folder."""
    if args.manifest:
        return Path(args.manifest)
    path = settings(args).data_dir / "all_taleqani" / "split.csv"
    if not path.is_file():
        raise UserError(f"no labelled images at {path}: pass --manifest CSV or set WBC_RAY_DATA")
    return path


def given(args: argparse.Namespace, *names: str) -> dict[str, object]:
    """The named flags the user set (not None): library defaults apply to the rest."""
    return {n: getattr(args, n) for n in names if getattr(args, n) is not None}


def claim_stdout() -> TextIO:
    """A private handle on the real stdout; fd 1 (and sys.stdout) then point at stderr."""
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    return out
