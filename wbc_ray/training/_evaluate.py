"""Evaluation of checkpoints and their fusions on a manifest: metrics.json, a table, plots."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..ensemble import FUSIONS, fuse
from ..errors import MissingInput
from ..lifecycle import PREDICTIONS, load_images, write_predictions
from ..manifest import read_manifest
from ..models import Classifier, available
from ._data import grayscale_u8, stain_jitter_u8
from ._metrics import binary_metrics, roc_curve

PERTURB = {"none": None, "grayscale": grayscale_u8, "stain": stain_jitter_u8}


def evaluate(
    models_dir: str | os.PathLike[str],
    manifest: str | os.PathLike[str],
    out: str | os.PathLike[str],
    split: str | None = "test",
    perturb: str = "none",
    names: list[str] | None = None,
    precision: dict[str, str] | None = None,
) -> dict[str, Any]:
    """`precision` maps a model to the precision to score it in (as a Serve config does: int8
    falls back to the default precision, with a note, when its ranges are missing); models
    not named score in their default precision.
    """
    names = names or available(models_dir)
    if not names:
        raise MissingInput(f"no checkpoints in {models_dir} (the release is in weights/)")
    items = read_manifest(manifest, split)
    notes: dict[str, str] = {}
    clfs = []
    for n in names:
        clf, note = Classifier.load_served(models_dir, n, (precision or {}).get(n))  # type: ignore[arg-type]
        clfs.append(clf)
        if note:
            notes[n] = note
    y = np.array([it.label for it in items])
    probs = []
    images: dict[int, np.ndarray] = {}
    for clf in clfs:
        # The same resize as in training and in slide tiling (Pillow, to the model's input size).
        size = clf.card.input_size
        if size not in images:
            x = load_images(items, size)[0].numpy()
            fn = PERTURB[perturb]
            images[size] = fn(x) if fn else x
        probs.append(clf.predict(images[size]))
    p = np.stack(probs)  # (M, N, 2)
    result: dict[str, Any] = {
        "split": split,
        "perturb": perturb,
        "n": int(len(y)),
        "models": {},
        "ensembles": {},
        "versions": {c.name: c.card.version for c in clfs},
        "precision": {c.name: c.precision for c in clfs},
        **({"notes": notes} if notes else {}),
    }
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for clf, pm in zip(clfs, p, strict=True):
        result["models"][clf.name] = binary_metrics(y, pm.argmax(1), pm[:, 1])
        curves[clf.name] = roc_curve(y, pm[:, 1])
    for method in FUSIONS:
        pred, score = fuse(p, method)
        result["ensembles"][method] = binary_metrics(y, pred, score)
        curves[f"ensemble:{method}"] = roc_curve(y, score)
    flagged = _domain_flagged(models_dir, items, perturb, images)
    if flagged is not None:
        result["domain"] = flagged
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    write_predictions(out / PREDICTIONS, manifest, items, [c.name for c in clfs], p)
    (out / "metrics.md").write_text(markdown_table(result))
    _plots(result, curves, out)
    return result


def _domain_flagged(
    models_dir: str | os.PathLike[str], items: list[Any], perturb: str, images: dict[int, np.ndarray]
) -> dict[str, Any] | None:
    """The share of the images the release's domain check puts out of range (None without one).
    The images the models were given at the check's size are used as they are (same resize, same
    perturbation); only where no model takes that size are they read again.
    """
    from ..domain import FEATURE_PX, load_domain, read_fields

    domain = load_domain(models_dir)
    if domain is None:
        return None
    x = images.get(FEATURE_PX)
    if x is None:
        x = read_fields([it.path for it in items], None, FEATURE_PX)
        fn = PERTURB[perturb]
        x = fn(x) if fn else x
    d = domain.check.distances(x)
    return {"flagged": float(domain.check.out_of_range(d).mean()), "threshold": domain.check.threshold}


def markdown_table(result: dict[str, Any]) -> str:
    keys = ["balanced_accuracy", "sensitivity", "specificity", "accuracy", "precision", "f1", "roc_auc"]
    head = (
        "| model | " + " | ".join(k.replace("_", " ") for k in keys) + " | confusion [[tn, fp], [fn, tp]] |"
    )
    lines = [
        f"Split `{result['split']}`, perturbation `{result['perturb']}`, n = {result['n']}, precision "
        + ", ".join(f"{k} {v}" for k, v in result.get("precision", {}).items()),
        "",
        head,
        "|" + " --- |" * (len(keys) + 2),
    ]
    rows = [(n, m) for n, m in result["models"].items()] + [
        (f"ensemble: {n}", m) for n, m in result["ensembles"].items()
    ]
    for name, m in rows:
        lines.append(f"| {name} | " + " | ".join(f"{m[k]:.4f}" for k in keys) + f" | {m['confusion']} |")
    if "domain" in result:
        lines += ["", f"Domain check: {100 * result['domain']['flagged']:.1f} % of the images out of range."]
    return "\n".join(lines) + "\n"


def _plots(result: dict[str, Any], curves: dict[str, tuple[np.ndarray, np.ndarray]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, (fpr, tpr) in curves.items():
        auc = (result["models"].get(name) or result["ensembles"].get(name.split(":")[-1], {})).get("roc_auc")
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc:.3f})", lw=1.4, ls="--" if ":" in name else "-")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
    ax.set(
        xlabel="false positive rate",
        ylabel="true positive rate (malignant)",
        title=f"ROC, {result['split']} split ({result['perturb']})",
    )
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "roc.png", dpi=120)
    plt.close(fig)

    rows = list(result["models"].items()) + [(f"fused: {k}", v) for k, v in result["ensembles"].items()]
    fig, axes = plt.subplots(1, len(rows), figsize=(2.4 * len(rows), 2.6))
    for ax, (name, m) in zip(np.atleast_1d(axes), rows, strict=True):
        cm = np.array(m["confusion"])
        ax.imshow(cm, cmap="Blues")
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(v), ha="center", va="center", color="black" if v < cm.max() / 2 else "white")
        ax.set_xticks([0, 1], ["benign", "malig."])
        ax.set_yticks([0, 1], ["benign", "malig."])
        ax.set_title(f"{name}\nBA {m['balanced_accuracy']:.3f}", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "confusion.png", dpi=120)
    plt.close(fig)
