"""`wbc-ray release`: cut a model release from trained checkpoints.

A release holds each network as fp16 safetensors (half the bytes; kept only where its decisions
on the test split match the fp32 checkpoint's on at least FP16_MIN_AGREEMENT of the images, else
fp32), its model card (JSON for code, Markdown for people), evaluation reports of the released
weights computed in fp32 (metrics JSON and Markdown, ROC and confusion plots, each image's
probabilities), the slide-level tile rates in the precisions a machine without an int8 build
serves (fp32, and bf16 where this CPU has it natively), and a manifest with every file's sha256
and size. It replaces the release already in the output folder only when its fused score is better
on validation and not worse on test (`force` overrides, and says so in the manifest).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from .._digest import file_sha256
from ..domain import DOMAIN_FILE
from ..ensemble import DEFAULT_FUSION
from ..errors import InvalidInput, MissingInput, WbcRayError
from ..lifecycle import load_images, measure_tile_rates, shipped_precisions
from ..manifest import read_manifest
from ..models import (
    TRAINING_PX,
    Classifier,
    ModelCard,
    available,
    build_model,
    list_models,
    load_checkpoint,
)
from ..release import is_release, verify_release, write_release_record
from ._evaluate import evaluate
from ._sets import sets_table

FP16_MIN_AGREEMENT = 0.995
# The fusion a release is judged by (the app's default).
JUDGED_BY = DEFAULT_FUSION
EVALUATIONS = {  # folder under eval/: (split, perturbation)
    "val": ("val", "none"),
    "test": ("test", "none"),
    "test_grayscale": ("test", "grayscale"),
}


class ReleaseRefused(WbcRayError, ValueError):
    """The candidate is not better than the release it would replace."""


def cut_release(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    manifest: str | os.PathLike[str],
    version: str | None = None,
    force: bool = False,
    changes: str | None = None,
    rates_grid: int = 16,
    log: Any = print,
) -> dict[str, Any]:
    """Build a release from the checkpoints in `src` into `out` (staged beside it, moved into
    place only when complete); return its manifest. Raises ReleaseRefused when `out` holds a
    release that the candidate does not beat (validation better, test not worse).
    """
    src, out = Path(src), Path(out)
    names = available(src)
    if sorted(names) != list_models():
        raise MissingInput(f"{src} must hold all of {list_models()} (has {names})")
    previous = verify_release(out) if is_release(out) else None
    stage = out.parent / f".{out.name}.staging"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    test = read_manifest(manifest, "test")
    stored = {}
    for name in names:
        stored[name] = _store_model(src, stage, name, test, log)
    fp32 = {n: "fp32" for n in names}
    results = {
        key: evaluate(stage, manifest, stage / "eval" / key, split=split, perturb=perturb, precision=fp32)
        for key, (split, perturb) in EVALUATIONS.items()
    }
    judged = {k: results[k]["ensembles"][JUDGED_BY]["balanced_accuracy"] for k in ("val", "test")}
    if previous is not None:
        before = previous.info.get("judged", {})
        better = judged["val"] > before.get("val", -1) and judged["test"] >= before.get("test", -1)
        log(
            f"candidate {JUDGED_BY} balanced accuracy val {judged['val']:.4f} test {judged['test']:.4f}; "
            f"release {previous.version}: val {before.get('val', float('nan')):.4f} "
            f"test {before.get('test', float('nan')):.4f}"
        )
        if not better and not force:
            shutil.rmtree(stage)
            raise ReleaseRefused(
                f"not released: the candidate must be better on validation and not worse on test than "
                f"release {previous.version} (--force replaces it anyway)"
            )
    for name in names:
        _write_model_card(stage, name, stored[name], results)
    if previous is not None and (previous.path / DOMAIN_FILE).is_file():
        # The domain check describes the training lab's images, not the networks: a new model set
        # keeps it (refit with `wbc-ray domain` when the training images change) rather than
        # shipping without one, which would switch the check off for every analysis.
        shutil.copyfile(previous.path / DOMAIN_FILE, stage / DOMAIN_FILE)
        log(f"domain check and stain references carried over from release {previous.version}")
    for precision in shipped_precisions(names):
        log(f"measuring tile rates in {sorted(set(precision.values()))} ...")
        measure_tile_rates(stage, manifest, grid=rates_grid, precision=precision)
    version = version or _next_version(previous)
    info = {
        "version": version,
        "created": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "replaces": previous.version if previous else None,
        "forced": bool(force and previous is not None),
        **({"changes": changes} if changes else {}),
        "judged": {"fusion": JUDGED_BY, **judged},
        "models": {n: stored[n]["summary"] for n in names},
        "manifest_sha256": file_sha256(Path(manifest)),
    }
    (stage / "README.md").write_text(release_readme(info, results))
    release = write_release_record(stage, info)
    verify_release(stage)
    old = out.parent / f".{out.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        os.replace(out, old)
    os.replace(stage, out)
    shutil.rmtree(old, ignore_errors=True)
    log(f"release {version} -> {out} ({_size_mb(out):.1f} MB)")
    return release


def _store_model(src: Path, stage: Path, name: str, test: list[Any], log: Any) -> dict[str, Any]:
    """Write one network in fp16 (or fp32 where fp16 moves its test decisions) with its card."""
    from safetensors.torch import load_file, save_file

    model, card = load_checkpoint(src, name)
    x = load_images(test, card.input_size)[0].numpy()
    p32 = Classifier(model, card, device="cpu", precision="fp32").predict(x)[:, 1]
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    path = stage / f"{name}.safetensors"
    save_file(half, str(path), metadata={"architecture": card.architecture, "dtype": "float16"})
    m16 = build_model(name, num_classes=len(card.classes))
    m16.load_state_dict(load_file(str(path)))
    p16 = Classifier(m16.eval(), card, device="cpu", precision="fp32").predict(x)[:, 1]
    # A value beyond fp16's range (an untrained network's running variances can be) turns into
    # inf and then NaN answers: such a model is stored in fp32.
    finite = bool(np.isfinite(p16).all()) and all(bool(v.isfinite().all()) for v in half.values())
    agree = float(np.mean((p16 >= 0.5) == (p32 >= 0.5))) if finite else 0.0
    dtype = "float16"
    if agree < FP16_MIN_AGREEMENT:
        save_file(state, str(path), metadata={"architecture": card.architecture, "dtype": "float32"})
        dtype = "float32"
    shift = float(np.abs(p16 - p32).max()) if finite else None
    log(
        f"{name}: fp16 decides as fp32 on {agree:.2%} of {len(x)} test images "
        f"(max probability shift {'non-finite' if shift is None else f'{shift:.4f}'}) -> stored as {dtype}"
    )
    trained_version = card.version
    card.version = file_sha256(path)[:12]
    card.training = {**card.training, "checkpoint_version": trained_version}
    # The card as trained for now (evaluation needs it); `_write_model_card` adds the release's figures.
    (stage / f"{name}.json").write_text(card.to_json())
    return {
        "card": card,
        "summary": {
            "version": card.version,
            "architecture": card.architecture,
            "input_size": card.input_size,
            "dtype": dtype,
            "fp16_test_agreement": agree,
            "fp16_max_probability_shift": shift,
        },
    }


def _write_model_card(stage: Path, name: str, stored: dict[str, Any], results: dict[str, Any]) -> None:
    card: ModelCard = stored["card"]
    # The card's metrics are those of the released weights, as the evaluation reports give them.
    card.metrics = {
        **{k: results[k]["models"][name] for k in EVALUATIONS},
        "val_threshold_uncalibrated": card.metrics.get("val_threshold_uncalibrated"),
    }
    card.release = stored["summary"]
    data = asdict(card)
    (stage / f"{name}.json").write_text(json.dumps(data, indent=2))
    (stage / f"{name}.md").write_text(model_card_markdown(data))


def model_card_markdown(card: dict[str, Any]) -> str:
    t = card.get("training", {})
    hw = t.get("hardware", {})
    keys = ["balanced_accuracy", "sensitivity", "specificity", "roc_auc"]
    rows = [
        f"| {split} | " + " | ".join(f"{card['metrics'][split][k]:.4f}" for k in keys) + " |"
        for split in EVALUATIONS
        if split in card["metrics"]
    ]
    init = t.get("initialised_from")
    return "\n".join(
        [
            f"# {card['name']} ({card['architecture']}), version {card['version']}",
            "",
            "Binary classifier of smear fields and slide tiles: benign vs malignant (B-ALL) white cells.",
            "A screening aid for acute lymphoblastic leukemia, not a diagnosis: verdicts go to a",
            "pathologist. Trained on the Taleqani ALL images (CC BY 4.0; Ghaderzadeh et al. 2022),",
            "peripheral blood smears of one laboratory and one scanner: other stains, scanners and",
            "bone-marrow aspirates are outside what it was validated on.",
            "",
            "## Input",
            f"- {card['input_size']} px RGB at {card['mpp'] * TRAINING_PX / card['input_size']:.3f} um/px "
            f"(training images taken as {card['mpp']} um/px at {TRAINING_PX} px), mean {list(card['mean'])}, "
            f"std {list(card['std'])}",
            f"- stored as {card.get('release', {}).get('dtype', 'float32')} safetensors; calibrated with "
            f"temperature {card['temperature']:.4f} and malignant bias {card['bias']:.4f} (validation split)",
            "",
            "## Metrics of the released weights (fp32 compute, threshold 0.5 after calibration)",
            "",
            "| split | " + " | ".join(k.replace("_", " ") for k in keys) + " |",
            "|" + " --- |" * (len(keys) + 1),
            *rows,
            "",
            "## Provenance",
            f"- commit {t.get('commit')}; torch {t.get('torch')}",
            f"- hardware: {hw.get('cpu')} ({hw.get('cores')} cores, {hw.get('threads')} threads)"
            + (f", GPU {hw['gpu']}" if hw.get("gpu") else ""),
            f"- {t.get('epochs_run')} epochs of {t.get('epochs_planned')} planned (best on validation: "
            f"{t.get('best_epoch')}), {t.get('train_seconds', 0) / 60:.1f} minutes, precision "
            f"{t.get('precision_used')}",
            f"- initialised from: {json.dumps(init) if init else 'scratch (random init)'}",
            "- recipe: "
            + ", ".join(
                f"{k}={t[k]}"
                for k in (
                    "input_size",
                    "batch_size",
                    "lr",
                    "weight_decay",
                    "label_smoothing",
                    "ema_decay",
                    "mosaic",
                    "subtype_weight",
                    "seed",
                    "minutes",
                )
                if k in t
            ),
            "",
        ]
    )


def readme_heading(info: dict[str, Any]) -> list[str]:
    """The first three lines of a release's README: its version, when, what it replaces and why."""
    return [
        f"# wbc-ray model release {info['version']}",
        "",
        f"Created {info['created']}; replaces {info['replaces'] or 'nothing (first release)'}"
        + (f": {info['changes']}." if info.get("changes") else "."),
    ]


def release_readme(info: dict[str, Any], results: dict[str, Any]) -> str:
    from ._evaluate import markdown_table

    parts = [
        *readme_heading(info),
        "Every file is listed with its sha256 and size in `release.json`; wbc-ray checks them before",
        "it loads a model from here (`wbc-ray release --verify weights`).",
        "",
    ]
    for key in EVALUATIONS:
        parts += [f"## {key}", "", markdown_table(results[key]), f"![ROC](eval/{key}/roc.png)", ""]
    return "\n".join(parts)


def _next_version(previous: Any) -> str:
    if previous is None:
        return "1"
    try:
        return str(int(previous.version) + 1)
    except ValueError:
        return previous.version + ".1"


def _size_mb(d: Path) -> float:
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file()) / 1e6


# Generated blocks a Markdown file may hold, each between its begin and end markers:
# `wbc-ray release --readme FILE` fills every one it finds.
BLOCKS = ("release-metrics", "domain-sets")
SETS_REPORT = Path("eval") / "sets" / "sets.json"
SETS_COMMAND = (
    "wbc-ray evaluate --sets configs/eval_sets.yaml --stain none,macenko,reinhard --out weights/eval/sets"
)


def _markers(block: str) -> tuple[str, str]:
    return f"<!-- {block}:begin (generated by `wbc-ray release --readme FILE`) -->", f"<!-- {block}:end -->"


README_BEGIN, README_END = _markers("release-metrics")


def metrics_table(release_dir: str | os.PathLike[str]) -> str:
    """The README's table of a release's test figures, from its evaluation reports, and where
    the release has one, its report on other data sets (for the stain normalisation it uses).
    """
    d = Path(release_dir)
    rel = verify_release(d)
    res = {k: json.loads((d / "eval" / k / "metrics.json").read_text()) for k in EVALUATIONS}
    rows = [(n, "models", n) for n in res["test"]["models"]] + [
        (f"**fused: {f.replace('_', ' ')}**" if f == JUDGED_BY else f"fused: {f}", "ensembles", f)
        for f in res["test"]["ensembles"]
    ]
    lines = [
        f"Release {rel.version}, test split (n = {res['test']['n']}; fp32; threshold from validation):",
        "",
        "| model | balanced accuracy | sensitivity | specificity | ROC AUC | grayscale BA | val BA |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, group, key in rows:
        t, g, v = (res[k][group][key] for k in ("test", "test_grayscale", "val"))
        lines.append(
            f"| {label} | {t['balanced_accuracy']:.3f} | {t['sensitivity']:.3f} | {t['specificity']:.3f} "
            f"| {t['roc_auc']:.3f} | {g['balanced_accuracy']:.3f} | {v['balanced_accuracy']:.3f} |"
        )
    sets = _sets_report(d)
    if sets is not None:
        stain = _release_stain(d)
        lines += [
            "",
            f"Release {rel.version} on other data sets, each image scored as a slide tile (fp32, stain "
            f"normalisation `{stain}`, the release's default; `{SETS_COMMAND}`). *Out of range*: share "
            "of usable images the domain check flags; *domain AUC*: how well its distance tells the "
            "set from the test split:",
            "",
            sets_table(sets, stain=stain).rstrip("\n"),
        ]
    return "\n".join(lines) + "\n"


def _sets_report(d: Path) -> dict[str, Any] | None:
    path = d / SETS_REPORT
    return json.loads(path.read_text()) if path.is_file() else None


def _release_stain(d: Path) -> str:
    from ..domain import load_domain

    domain = load_domain(d)
    return domain.stain_default if domain is not None else "none"


def domain_sets_table(release_dir: str | os.PathLike[str]) -> str:
    """docs/domain.md's table: every set with every stain normalisation, each model, and the
    fusion's accuracy inside and outside the domain check's range.
    """
    d = Path(release_dir)
    sets = _sets_report(d)
    if sets is None:
        raise MissingInput(f"{d / SETS_REPORT} not found: run `{SETS_COMMAND}` first")
    return f"Release {sets['release']}, `{SETS_COMMAND}`:\n\n" + sets_table(sets, full=True)


def update_readme(readme: str | os.PathLike[str], release_dir: str | os.PathLike[str]) -> bool:
    """Replace every generated block of `readme` with the release's figures; whether it changed."""
    path = Path(readme)
    text = original = path.read_text()
    makers = {"release-metrics": metrics_table, "domain-sets": domain_sets_table}
    found = False
    for block in BLOCKS:
        begin, end = _markers(block)
        if begin not in text or end not in text:
            continue
        found = True
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{begin}\n{makers[block](release_dir)}{end}{tail}"
    if not found:
        first = _markers(BLOCKS[0])
        raise InvalidInput(f"{path} has no generated block ({first[0]} ... {first[1]}, or {BLOCKS[1]})")
    path.write_text(text)
    return text != original
