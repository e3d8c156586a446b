"""`wbc-ray deploy render|check`: KubeRay resources from the Serve configs, validated offline."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import REPO_ROOT

NAME = "deploy"
HELP = "render the KubeRay resources (deploy/*.yaml) from configs/serve*.yaml, or check them"
DEFAULT_CRDS = REPO_ROOT.parent / "shared" / "kuberay"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "action", choices=["render", "check"], help="render: write the resource files; check: validate them"
    )
    p.add_argument("--out", default=str(REPO_ROOT / "deploy"), help="resource folder (default: deploy/)")
    p.add_argument(
        "--crds",
        default=str(DEFAULT_CRDS),
        help="folder of KubeRay's CRD YAML files (default: ../shared/kuberay)",
    )


def run(args: argparse.Namespace) -> int:
    import yaml

    from ..deploy import RESOURCES, render_all, validate_resource

    out = Path(args.out)
    if args.action == "render":
        out.mkdir(parents=True, exist_ok=True)
        for name, text in render_all().items():
            validate_resource(yaml.safe_load(text), args.crds)
            (out / name).write_text(text)
            kind, source, _ = RESOURCES[name]
            print(f"wrote {out / name} ({kind} from {source}; valid against {args.crds})")
        return 0
    for name in RESOURCES:
        validate_resource(yaml.safe_load((out / name).read_text()), args.crds)
        print(f"{out / name}: valid {RESOURCES[name][0]}")
    return 0
