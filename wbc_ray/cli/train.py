"""`wbc-ray train --model NAME`: train candidates into weights_train/ (`training.train_many`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._shared import add_manifest, given, manifest, settings

NAME = "train"
HELP = "train one or all architectures on a manifest"
# TrainConfig fields the flags of the same name set; unset flags keep TrainConfig's defaults.
FIELDS = (
    "epochs",
    "minutes",
    "batch_size",
    "seed",
    "init",
    "lr",
    "limit",
    "mosaic",
    "subtype_weight",
    "precision",
    "patience",
    "blur",
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="mobilenet | xception | inception_v3 | all")
    add_manifest(p)
    p.add_argument("--out", default="weights_train", help="checkpoint folder (default: weights_train)")
    p.add_argument("--input-size", type=int, help="model input side in px (default: --init's, else 128)")
    p.add_argument("--epochs", type=int, help="default: the recipe's per-model epochs (see --minutes)")
    p.add_argument(
        "--minutes",
        type=float,
        help="fewer epochs than planned (--epochs, else the recipe's) where a probe of this machine says "
        "they would not fit in this many minutes",
    )
    p.add_argument("--batch-size", type=int, help="default: TrainConfig's (64)")
    p.add_argument("--seed", type=int, help="default: 0")
    p.add_argument(
        "--weights", help="none (default) | imagenet | a weight file | a folder of <model>.safetensors"
    )
    p.add_argument(
        "--init",
        help="continue from a release or checkpoint folder (e.g. weights): its trained networks, verified",
    )
    p.add_argument("--lr", type=float, help="peak learning rate (default: TrainConfig's, 2e-3)")
    p.add_argument(
        "--mosaic",
        type=float,
        help="share of each batch shown as slide-like windows across fields (0..1; default 0)",
    )
    p.add_argument(
        "--subtype-weight",
        type=float,
        help="weight of an auxiliary subtype loss over the manifest's subtype column (default 0: off)",
    )
    p.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16", "amp"],
        help="autocast mode; auto (default): AMP on GPUs, bf16 on CPUs with AMX, else fp32",
    )
    p.add_argument("--patience", type=int, help="epochs without a validation gain before stopping (8)")
    p.add_argument(
        "--zoom",
        type=float,
        nargs=2,
        metavar=("LO", "HI"),
        help="zoom range of the augmentation, log-uniform (default 0.85 1.2; 0.5 2: cells at half and "
        "twice their size)",
    )
    p.add_argument("--blur", type=float, help="share of training images blurred 0.2-1.2 um (default 0)")
    p.add_argument(
        "--mix",
        metavar="MANIFEST",
        help="another lab's labelled cells to add to the train split (e.g. pbc/labels.csv); the images "
        "the evaluation sets read are left out",
    )
    p.add_argument("--mix-mpp", type=float, help="microns per pixel of --mix's rows that give none")
    p.add_argument("--mix-limit", type=int, help="at most this many --mix rows per label (default: all)")
    p.add_argument("--limit", type=int, help="images per split (smoke runs)")
    p.add_argument("--sequential", action="store_true", help="one model after another, not Ray tasks")


def run(args: argparse.Namespace) -> int:
    from ..models import list_models
    from ..training import TrainConfig, train_many

    names = list_models() if args.model == "all" else [args.model]
    base = TrainConfig(
        model=names[0],
        manifest=str(_mixed(args) if args.mix else manifest(args)),
        out=args.out,
        input_size=args.input_size or 0,
        weights=None if args.weights in (None, "none") else args.weights,
        **given(args, *FIELDS),  # type: ignore[arg-type]
    )
    if args.zoom:
        base.zoom = (float(args.zoom[0]), float(args.zoom[1]))
    cards = train_many(names, base, parallel=not args.sequential)
    for name, card in cards.items():
        m = card.metrics["test"]
        print(
            f"{name:>13}: test BA {m['balanced_accuracy']:.4f} sens {m['sensitivity']:.4f} "
            f"spec {m['specificity']:.4f} AUC {m['roc_auc']:.4f}"
        )
    return 0


def _mixed(args: argparse.Namespace) -> Path:
    """The manifest with --mix's rows added (written into --out, beside the checkpoints)."""
    from ..training import held_out_images, mix_manifest

    s = settings(args)
    out, added = mix_manifest(
        manifest(args),
        _data_path(args.mix, s.data_dir),
        Path(args.out) / "train_manifest.csv",
        mpp=args.mix_mpp,
        limit=args.mix_limit,
        exclude=held_out_images(s.data_dir),
    )
    print(f"{added} rows of {args.mix} added to the train split -> {out}")
    return out


def _data_path(path: str, data_dir: Path) -> Path:
    """A path as given, else under the settings' data folder."""
    p = Path(path)
    return p if p.exists() or p.is_absolute() else Path(data_dir) / p
