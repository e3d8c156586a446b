"""`wbc-ray release`: cut a model release, verify one, or put its metrics in a README."""

from __future__ import annotations

import argparse

from ..errors import UserError
from ._shared import add_manifest, manifest, settings

NAME = "release"
HELP = "cut a model release from trained checkpoints, or --verify one against its manifest"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="source", help="folder of trained checkpoints (e.g. weights_train)")
    p.add_argument("--out", help="release folder (default: settings models_dir, i.e. weights)")
    add_manifest(p)
    p.add_argument("--version", help="release version (default: the previous one + 1)")
    p.add_argument("--changes", help="one line on what the new release changes (its README says it)")
    p.add_argument(
        "--force", action="store_true", help="replace the release even where the candidate is not better"
    )
    p.add_argument(
        "--verify",
        nargs="?",
        const="",
        metavar="DIR",
        help="check every file of a release (DIR, else --out, else weights) against its manifest",
    )
    p.add_argument(
        "--readme",
        nargs="+",
        metavar="FILE",
        help="fill the generated blocks (release-metrics, domain-sets) of these Markdown files",
    )


def run(args: argparse.Namespace) -> int:
    out = args.out or settings(args).models_dir
    if args.verify is not None:
        from ..release import verify_release

        rel = verify_release(args.verify or out)
        sizes = sum(int(e["size"]) for e in rel.files.values())
        print(
            f"release {rel.version} in {rel.path}: {len(rel.files)} files ({sizes / 1e6:.1f} MB) match "
            f"{rel.path / 'release.json'}; models {', '.join(rel.models)}"
        )
        return 0
    from ..training import cut_release, update_readme

    if args.readme:
        for readme in args.readme:
            changed = update_readme(readme, out)
            print(f"{readme}: generated tables {'updated' if changed else 'already current'}")
        return 0
    if not args.source:
        raise UserError("name the trained checkpoints to release: --from FOLDER (or --verify)")
    cut = cut_release(
        args.source, out, manifest(args), version=args.version, force=args.force, changes=args.changes
    )
    print(f"release {cut['version']} written to {out} ({len(cut['files'])} files, manifest release.json)")
    return 0
