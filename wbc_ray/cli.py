"""`wbc-ray` command line: thin argument parsing over the library packages."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from .ensemble import FUSIONS
from .errors import UserError, WbcRayError

Handler = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, Handler] = {}


def command(name: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        COMMANDS[name] = fn
        return fn

    return register


MANIFEST_HELP = "labelled images, CSV (default: <data_dir>/all_taleqani/split.csv)"


def _manifest(args: argparse.Namespace) -> Path:
    if args.manifest:
        return Path(args.manifest)
    path = _settings(args).data_dir / "all_taleqani" / "split.csv"
    if not path.is_file():
        raise UserError(f"no labelled images at {path}: pass --manifest CSV or set WBC_RAY_DATA")
    return path


def _settings(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from .config import load_settings

    return load_settings(getattr(args, "config", None))  # main() also exports it: $WBC_RAY_CONFIG


@command("info")
def _info(args: argparse.Namespace) -> int:
    from .slides import open_slide

    with open_slide(args.slide, mpp=args.slide_mpp) as slide:
        d = slide.info.to_dict()
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    for key, value in d.items():
        print(f"{key:>18}: {value}")
    return 0


@command("make-slide")
def _make_slide(args: argparse.Namespace) -> int:
    from .manifest import read_manifest
    from .slides import compose_slide

    items = read_manifest(_manifest(args), args.split)
    truth = compose_slide(
        items,
        args.out,
        grid=(args.grid[0], args.grid[1]),
        malignant_fraction=args.malignant_fraction,
        seed=args.seed,
        mpp=args.mpp,
        progress=not args.quiet,
    )
    print(
        f"wrote {args.out} ({truth['width']}x{truth['height']} px, {truth['n_fields']} fields, "
        f"malignant fraction {truth['malignant_fraction']:.3f}, slide {truth['slide_label']}) "
        f"and {Path(args.out).with_suffix('.json')}"
    )
    return 0


@command("tile")
def _tile(args: argparse.Namespace) -> int:
    from .pipeline import plan_slide, run_job
    from .slides import GridSpec

    s = _settings(args)
    t = s.tiling
    spec = GridSpec(
        tile_px=args.tile_px or t.tile_px,
        mpp=args.mpp or t.mpp,
        stride_px=args.stride_px or t.stride_px,
        min_tissue=t.min_tissue if args.min_tissue is None else args.min_tissue,
    )
    plan = plan_slide(
        args.slide,
        spec,
        slide_mpp=args.slide_mpp,
        default_mpp=s.slides.default_mpp,
        thumbnail_px=s.slides.thumbnail_px,
    )
    if args.preview:
        _write_preview(args.slide, args.slide_mpp, s.slides.default_mpp, spec, args.preview)
    res = run_job(
        plan,
        args.out,
        chunk_tiles=t.chunk_tiles,
        store_pixels=t.store_pixels,
        read_cpus=t.read_cpus,
        progress=not args.quiet,
    )
    print(
        f"{res.n_tiles} tiles from {args.slide} -> {res.store} in {res.seconds:.1f} s "
        f"({res.tiles_per_s:.0f} tiles/s; {res.n_chunks - res.chunks_run} chunks already done)"
    )
    return 0


def _write_preview(path: str, mpp: float | None, default_mpp: float | None, spec, out: str) -> None:  # type: ignore[no-untyped-def]
    from .slides import grid_preview, open_slide, tile_grid, tissue_mask

    with open_slide(path, mpp=mpp, default_mpp=default_mpp) as slide:
        mask = tissue_mask(slide)
        grid_preview(slide, mask, tile_grid(slide, mask, spec)).save(out)


@command("train")
def _train(args: argparse.Namespace) -> int:
    from .models import list_models
    from .training import TrainConfig, train_many

    names = list_models() if args.model == "all" else [args.model]
    base = TrainConfig(
        model=names[0],
        manifest=str(_manifest(args)),
        out=args.out,
        input_size=args.input_size or 0,
        epochs=args.epochs,
        minutes=args.minutes,
        batch_size=args.batch_size,
        seed=args.seed,
        weights=None if args.weights in (None, "none") else args.weights,
        init=args.init,
        limit=args.limit,
        mosaic=args.mosaic,
        subtype_weight=args.subtype_weight,
        precision=args.precision,
        **({"lr": args.lr} if args.lr else {}),
    )
    cards = train_many(names, base, parallel=not args.sequential)
    for name, card in cards.items():
        m = card.metrics["test"]
        print(
            f"{name:>13}: test BA {m['balanced_accuracy']:.4f} sens {m['sensitivity']:.4f} "
            f"spec {m['specificity']:.4f} AUC {m['roc_auc']:.4f}"
        )
    return 0


@command("evaluate")
def _evaluate(args: argparse.Namespace) -> int:
    from .training import evaluate, markdown_table

    s = _settings(args)
    models = args.models or s.models_dir
    from .models import available

    precision = None
    if args.served:
        from .serve.app import configured_precisions

        precision = configured_precisions(args.serve_config, available(models))
    elif args.precision:
        precision = {n: args.precision for n in available(models)}
    res = evaluate(
        models, _manifest(args), args.out, split=args.split, perturb=args.perturb, precision=precision
    )
    for name, note in res.get("notes", {}).items():
        print(f"note: {name}: {note}", file=sys.stderr)
    print(markdown_table(res))
    print(f"wrote {Path(args.out) / 'metrics.json'}, metrics.md, roc.png, confusion.png")
    return 0


@command("calibrate")
def _calibrate(args: argparse.Namespace) -> int:
    from .lifecycle import measure_tile_rates, rates_path
    from .models import available
    from .serve.app import configured_precisions

    s = _settings(args)
    models = args.models or s.models_dir
    # Calls as the Serve app makes them: the per-model precisions of its config.
    precision = configured_precisions(args.serve_config, available(models))
    rec = measure_tile_rates(
        models,
        _manifest(args),
        split=args.split,
        grid=args.grid,
        seed=args.seed,
        min_tissue=s.tiling.min_tissue,
        precision=precision,
    )
    print(f"tile call rates on composed {args.split or 'all-rows'} slides ({args.grid}x{args.grid} fields):")
    for fusion, r in rec["fusions"].items():
        curve = "  ".join(f"{f:.2f}->{share:.3f}" for f, share in r["curve"])
        print(f"  {fusion:<11} fraction->share of malignant tiles: {curve}")
    print(f"wrote {rates_path(models)}")
    return 0


@command("quantize")
def _quantize(args: argparse.Namespace) -> int:
    from .lifecycle import quantize_models
    from .models._release import derived_dir, is_release

    s = _settings(args)
    models = args.models or s.models_dir
    reports = quantize_models(models, _manifest(args), args.model or None, images=args.images)
    for r in reports:
        if not r.kept:
            print(
                f"{r.name:>13}: int8 NOT kept: on held-out validation images it moves the malignant"
                f" probability by {r.held_shift:.3f} on average and decides as fp32 on"
                f" {r.held_agreement:.2%} of those fp32 is sure of; the app serves this model in its"
                " default precision",
                file=sys.stderr,
            )
            continue
        print(
            f"{r.name:>13}: int8 model from {r.calibration_images} validation images"
            f" -> {r.path}; decisions agree with fp32 on {r.agreement:.2%} of {r.test_images} test"
            f" images ({r.held_agreement:.2%} of the held-out validation images fp32 is sure of)"
        )
    if is_release(models):
        # A release ships tile rates for the float precisions; the int8 ones are measured here,
        # once, so that `wbc-ray serve` starts ready.
        from .lifecycle import ensure_tile_rates
        from .serve.app import configured_precisions

        rec = ensure_tile_rates(models, _manifest(args), configured_precisions(args.serve_config))
        print(f"tile rates for {rec['precision']} ready in {derived_dir(models)}")
    return 0


@command("release")
def _release(args: argparse.Namespace) -> int:
    from .models._release import verify_release

    s = _settings(args)
    if args.verify is not None:
        rel = verify_release(args.verify or args.out or s.models_dir)
        sizes = sum(int(e["size"]) for e in rel.files.values())
        print(
            f"release {rel.version} in {rel.path}: {len(rel.files)} files ({sizes / 1e6:.1f} MB) match "
            f"{rel.path / 'release.json'}; models {', '.join(rel.models)}"
        )
        return 0
    from .training._release import cut_release, update_readme

    if args.readme:
        changed = update_readme(args.readme, args.out or s.models_dir)
        print(f"{args.readme}: release metrics table {'updated' if changed else 'already current'}")
        return 0
    if not args.source:
        raise UserError("name the trained checkpoints to release: --from FOLDER (or --verify)")
    out = args.out or s.models_dir
    cut = cut_release(args.source, out, _manifest(args), version=args.version, force=args.force)
    print(f"release {cut['version']} written to {out} ({len(cut['files'])} files, manifest release.json)")
    return 0


@command("serve")
def _serve(args: argparse.Namespace) -> int:
    import time

    from .serve import start

    given = {"models_dir": args.models, "results_dir": args.results, "settings": args.config}
    overrides = {k: v for k, v in given.items() if v}
    start(args.serve_config, host=args.host, port=args.port, **overrides)
    print(f"wbc-ray serving on http://{args.host}:{args.port} (OpenAPI at /docs); Ctrl-C to stop", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        from ray import serve

        serve.shutdown()
    return 0


@command("ui")
def _ui(args: argparse.Namespace) -> int:
    from .ui import ApiClient, ApiError, launch

    client = ApiClient(args.api, timeout=10)
    try:
        client.health()  # a UI over no API would only show errors later
    except ApiError as exc:
        raise UserError(f"{exc} (start it with `wbc-ray serve`, or pass --api URL)") from None
    finally:
        client.close()
    print(f"wbc-ray UI on http://{args.host}:{args.port} (API: {args.api}); Ctrl-C to stop", flush=True)
    launch(args.api, host=args.host, port=args.port)
    return 0


def _claim_stdout() -> TextIO:
    """A private handle on the real stdout; fd 1 (and sys.stdout) then point at stderr."""
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    return out


@command("analyze")
def _analyze(args: argparse.Namespace) -> int:
    from .analyze import analyze_many, print_summary

    s = _settings(args)
    # --json owns stdout: everything else written there (Ray's raylet warnings, C libraries)
    # goes to stderr, so the output always parses.
    json_out = _claim_stdout() if args.json else None
    results = analyze_many(
        args.slides,
        models_dir=args.models or str(s.models_dir),
        out_dir=args.out,
        settings=s,
        fusion=args.fusion,
        slide_mpp=args.slide_mpp,
        progress=not args.json,
        serve_config=args.serve_config,
    )
    if json_out is not None:
        json_out.write(json.dumps([r.summary() for r in results], indent=2) + "\n")
        json_out.flush()
    else:
        print_summary(results)
    return 0 if all(r.ok for r in results) else 1


# Which Serve config the commands use when none is named (serve.app.default_serve_config).
CHOSEN = "(default: configs/serve.gpu.yaml where there are GPUs, else configs/serve.yaml)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wbc-ray", description=__doc__)
    p.add_argument("--config", help="settings YAML (default configs/default.yaml)")
    sub = p.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="print a slide's metadata")
    info.add_argument("slide")
    info.add_argument("--json", action="store_true")
    info.add_argument("--slide-mpp", type=float, help="override the slide's microns/pixel")

    ms = sub.add_parser("make-slide", help="compose a labelled test slide (pyramidal TIFF + truth JSON)")
    ms.add_argument("--manifest", help=MANIFEST_HELP)
    ms.add_argument("--split")
    ms.add_argument("--out", required=True)
    ms.add_argument("--grid", nargs=2, type=int, metavar=("ROWS", "COLS"), default=(10, 10))
    ms.add_argument("--malignant-fraction", type=float, default=0.3)
    ms.add_argument("--seed", type=int, default=0)
    ms.add_argument("--mpp", type=float, default=0.5)
    ms.add_argument("--quiet", action="store_true")

    tile = sub.add_parser("tile", help="tile a slide with Ray Data into a Zarr store")
    tile.add_argument("slide")
    tile.add_argument("--out", required=True)
    tile.add_argument("--tile-px", type=int)
    tile.add_argument("--mpp", type=float, help="target microns/pixel of the tiles")
    tile.add_argument("--stride-px", type=int)
    tile.add_argument("--min-tissue", type=float)
    tile.add_argument("--slide-mpp", type=float, help="override the slide's microns/pixel")
    tile.add_argument("--preview", help="also write a PNG of mask and grid over the thumbnail")
    tile.add_argument("--quiet", action="store_true")

    tr = sub.add_parser("train", help="train one or all architectures on a manifest")
    tr.add_argument("--model", required=True, help="mobilenet | xception | inception_v3 | all")
    tr.add_argument("--manifest", help=MANIFEST_HELP)
    tr.add_argument("--out", default="weights_train", help="checkpoint folder (default: weights_train)")
    tr.add_argument(
        "--input-size", type=int, help="model input side in px (default: --init's, else 128)"
    )
    tr.add_argument("--epochs", type=int, help="default: the recipe's per-model epochs (see --minutes)")
    tr.add_argument(
        "--minutes",
        type=float,
        help="without --epochs: fewer epochs where a probe of this machine says the recipe's would not fit",
    )
    tr.add_argument("--batch-size", type=int, default=64)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument(
        "--weights", help="none (default) | imagenet | a weight file | a folder of <model>.safetensors"
    )
    tr.add_argument(
        "--init",
        help="continue from a release or checkpoint folder (e.g. weights): its trained networks, verified",
    )
    tr.add_argument("--lr", type=float, help="peak learning rate (default 2e-3)")
    tr.add_argument(
        "--mosaic",
        type=float,
        default=0.0,
        help="share of each batch shown as slide-like windows across fields on glass (0..1)",
    )
    tr.add_argument(
        "--subtype-weight",
        type=float,
        default=0.0,
        help="weight of an auxiliary subtype loss (training-only head over the manifest's subtype column)",
    )
    tr.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16", "amp"],
        default="auto",
        help="autocast mode; auto: AMP on GPUs, bf16 on CPUs with AMX, else fp32 (faster there)",
    )
    tr.add_argument("--limit", type=int, help="images per split (smoke runs)")
    tr.add_argument("--sequential", action="store_true", help="one model after another, not Ray tasks")

    ca = sub.add_parser(
        "calibrate", help="measure tile call rates on composed slides (the slide-level adjusted count)"
    )
    ca.add_argument("--models", help="weights folder (default: settings models_dir)")
    ca.add_argument("--manifest", help=MANIFEST_HELP)
    ca.add_argument("--split", default="val", help="images to compose the slides from (default: val)")
    ca.add_argument("--grid", type=int, default=16, help="fields per side of each slide")
    ca.add_argument("--seed", type=int, default=0)
    ca.add_argument("--serve-config", help=f"Serve config whose per-model precisions to use {CHOSEN}")

    qu = sub.add_parser(
        "quantize", help="quantize the models to int8 for CPU serving (OpenVINO) and check decisions"
    )
    qu.add_argument("--models", help="weights folder (default: settings models_dir)")
    qu.add_argument("--manifest", help=MANIFEST_HELP)
    qu.add_argument("--model", action="append", help="one architecture (repeatable; default: all)")
    qu.add_argument("--images", type=int, default=256, help="validation images to quantize on")
    qu.add_argument("--serve-config", help=f"Serve config whose per-model precisions to use {CHOSEN}")

    re_ = sub.add_parser(
        "release", help="cut a model release from trained checkpoints, or --verify one against its manifest"
    )
    re_.add_argument("--from", dest="source", help="folder of trained checkpoints (e.g. weights_train)")
    re_.add_argument("--out", help="release folder (default: settings models_dir, i.e. weights)")
    re_.add_argument("--manifest", help=MANIFEST_HELP)
    re_.add_argument("--version", help="release version (default: the previous one + 1)")
    re_.add_argument(
        "--force", action="store_true", help="replace the release even where the candidate is not better"
    )
    re_.add_argument(
        "--verify",
        nargs="?",
        const="",
        metavar="DIR",
        help="check every file of a release (DIR, else --out, else weights) against its manifest",
    )
    re_.add_argument("--readme", help="put the release's metrics table in this Markdown file")

    ev = sub.add_parser("evaluate", help="metrics, table and plots of the models and their fusions")
    ev.add_argument("--models", help="weights folder (default: settings models_dir)")
    ev.add_argument("--manifest", help=MANIFEST_HELP)
    ev.add_argument("--split", default=None, help="rows of this split only (default: all rows)")
    ev.add_argument("--perturb", choices=["none", "grayscale", "stain"], default="none")
    ev.add_argument("--out", required=True)
    ev.add_argument(
        "--served",
        action="store_true",
        help="score each model in the precision the Serve config serves it in (e.g. int8), not fp32",
    )
    ev.add_argument("--serve-config", default=None, help=f"Ray Serve config for --served {CHOSEN}")
    ev.add_argument(
        "--precision",
        choices=["fp32", "bf16", "amp", "int8"],
        help="one precision for every model (default: the device's; a release's figures are fp32)",
    )

    sv = sub.add_parser("serve", help="start local Ray and the Serve app from a Serve config")
    sv.add_argument("--serve-config", default=None, help=f"Ray Serve config {CHOSEN}")
    sv.add_argument("--models", help="weights folder")
    sv.add_argument("--results", help="results folder")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)

    ui = sub.add_parser("ui", help="the Gradio page (its own process) over a running REST API")
    ui.add_argument("--api", default="http://127.0.0.1:8000", help="the wbc-ray REST API's base URL")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=7860)

    an = sub.add_parser("analyze", help="analyse slides: tile, score with the three CNNs, verdict")
    an.add_argument("slides", nargs="+")
    an.add_argument("--models", help="weights folder (default: settings models_dir)")
    an.add_argument("--out", required=True, help="results folder (one <slide>.zarr each)")
    an.add_argument("--fusion", choices=FUSIONS)
    an.add_argument("--slide-mpp", type=float, help="override the slides' microns/pixel")
    an.add_argument("--serve-config", help=f"Ray Serve config, when the app must be started {CHOSEN}")
    an.add_argument("--json", action="store_true", help="print a JSON list instead of the table")

    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if args.config:
        # Every load_settings() of this run reads it, in this process and in the Ray workers and
        # Serve replicas it starts (they inherit the environment).
        os.environ["WBC_RAY_CONFIG"] = str(Path(args.config).resolve())
    try:
        return COMMANDS[args.command](args)
    # wbc-ray's own errors; the built-in ones stay until every user-facing raise in the library
    # is one of ours (many still raise ValueError or FileNotFoundError for bad input).
    except (WbcRayError, ValueError, FileExistsError, FileNotFoundError) as exc:
        print(f"wbc-ray: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("wbc-ray: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
