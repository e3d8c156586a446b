"""`wbc-ray train --model NAME`: train candidates into weights_train/ (`training.train_many`)."""

from __future__ import annotations

import argparse

from ._shared import add_manifest, given, manifest

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
        help="without --epochs: fewer epochs where a probe of this machine says the recipe's would not fit",
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
    p.add_argument("--limit", type=int, help="images per split (smoke runs)")
    p.add_argument("--sequential", action="store_true", help="one model after another, not Ray tasks")


def run(args: argparse.Namespace) -> int:
    from ..models import list_models
    from ..training import TrainConfig, train_many

    names = list_models() if args.model == "all" else [args.model]
    base = TrainConfig(
        model=names[0],
        manifest=str(manifest(args)),
        out=args.out,
        input_size=args.input_size or 0,
        weights=None if args.weights in (None, "none") else args.weights,
        **given(args, *FIELDS),  # type: ignore[arg-type]
    )
    cards = train_many(names, base, parallel=not args.sequential)
    for name, card in cards.items():
        m = card.metrics["test"]
        print(
            f"{name:>13}: test BA {m['balanced_accuracy']:.4f} sens {m['sensitivity']:.4f} "
            f"spec {m['specificity']:.4f} AUC {m['roc_auc']:.4f}"
        )
    return 0
