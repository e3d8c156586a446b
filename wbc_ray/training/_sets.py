"""Evaluation on several data sets at once: one report, a row per set and stain normalisation.

A set is a manifest (optionally one split, a shift, a scale and a sample), the tissue tiles of
a slide, or blank glass. Every image becomes one field at the models' tile size exactly as a
slide tile is read (`domain.to_field`), is screened as an analysis screens it (tile QC, stain
normalisation, domain check) and scored by each model; the report gives per set the models'
and the fusion's accuracy, the share of tiles QC rejects, the share the domain check flags,
how well the check's distance separates the set from the reference set (ROC AUC), and the
fusion's accuracy inside and outside the check's range.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..config import CONFIG_DIR, QcSettings
from ..domain import (
    FEATURE_PX,
    SHIFT_MEANING,
    STAIN_METHODS,
    DomainCheck,
    DomainFile,
    QcThresholds,
    StainNormalizer,
    TileScreen,
    load_domain,
    read_fields,
    reason_counts,
)
from ..ensemble import DEFAULT_FUSION, fuse
from ..errors import InvalidInput, MissingInput
from ..manifest import read_manifest
from ..models import Classifier, available
from ._metrics import roc_auc

REPORT = "sets.json"
# The sets a release is judged on (`wbc-ray evaluate --sets`; `configs/eval_sets.yaml` in a checkout).
EVAL_SETS = CONFIG_DIR / "eval_sets.yaml"


class EvalSet(BaseModel):
    """One data set of an evaluation (paths relative to the sets file's `root`)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    manifest: str | None = None
    split: str | None = None
    shift: str = "none"
    mpp: float | None = Field(None, gt=0)  # for rows without an mpp column; None: image = field
    limit: int | None = Field(None, ge=2)  # an even sample of this many rows, per label
    slide: str | None = None  # tissue tiles of a slide (label benign: the set is not a smear)
    blank: int | None = Field(None, ge=1)  # this many tiles of empty glass
    about: str = ""

    @model_validator(mode="after")
    def _one_source(self) -> EvalSet:
        if sum(x is not None for x in (self.manifest, self.slide, self.blank)) != 1:
            raise ValueError(f"set {self.name!r}: give exactly one of manifest, slide, blank")
        if self.shift != "none" and self.shift not in SHIFT_MEANING:
            raise ValueError(f"set {self.name!r}: unknown shift {self.shift!r}; known: {list(SHIFT_MEANING)}")
        return self


class EvalSets(BaseModel):
    """A sets file: the first set is the reference the domain check's AUCs are taken against."""

    model_config = ConfigDict(extra="forbid")

    root: str | None = None  # default: the settings' data folder
    sets: list[EvalSet] = Field(min_length=1)


def load_sets(path: str | os.PathLike[str], data_dir: str | os.PathLike[str]) -> tuple[EvalSets, Path]:
    """A sets file (YAML), validated, and the folder its paths are under (its `root`, relative to
    the file, else `data_dir`); InvalidInput naming what is wrong.
    """
    try:
        spec = EvalSets.model_validate(yaml.safe_load(Path(path).read_text()))
        root = Path(path).resolve().parent / spec.root if spec.root else Path(data_dir)
        return spec, root
    except OSError as exc:
        raise MissingInput(f"{path}: cannot read the sets file ({exc.strerror})") from None
    except (yaml.YAMLError, ValidationError) as exc:
        raise InvalidInput(f"{path}: not a valid sets file: {exc}") from None


def _sample(labels: np.ndarray, limit: int | None) -> np.ndarray:
    """Indices of an even sample of at most `limit` rows per label (all rows without a limit)."""
    if limit is None:
        return np.arange(len(labels))
    keep = [np.flatnonzero(labels == c)[:: max(1, int(np.sum(labels == c)) // limit)][:limit] for c in (0, 1)]
    return np.sort(np.concatenate(keep))


def held_out_images(
    data_dir: str | os.PathLike[str], sets_file: str | os.PathLike[str] = EVAL_SETS
) -> set[Path]:
    """Every image file the evaluation sets read (resolved): what training must never take."""
    spec, root = load_sets(sets_file, data_dir)
    out: set[Path] = set()
    for s in spec.sets:
        if s.manifest is None:
            continue
        items = read_manifest(root / s.manifest, s.split)
        pick = _sample(np.array([it.label for it in items]), s.limit)
        out |= {items[i].path.resolve() for i in pick}
    return out


def _slide_tiles(path: Path, tile_px: int, tile_mpp: float) -> np.ndarray:
    from ..slides import GridSpec, open_slide, read_tile, tile_grid, tissue_mask

    with open_slide(path) as slide:
        grid = tile_grid(slide, tissue_mask(slide), GridSpec(tile_px=tile_px, mpp=tile_mpp))
        tiles = [read_tile(slide, int(x), int(y), grid.level, grid.read_px, tile_px) for x, y in grid.coords]
    return np.stack(tiles) if tiles else np.zeros((0, tile_px, tile_px, 3), np.uint8)


def _blank(n: int, px: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    glass = np.array([238, 235, 240], np.float32)
    return np.clip(glass + rng.normal(0, 2.5, (n, px, px, 3)), 0, 255).astype(np.uint8)


def load_set(s: EvalSet, root: Path, tile_mpp: float) -> tuple[np.ndarray, np.ndarray, str]:
    """A set's fields (N, FEATURE_PX, FEATURE_PX, 3), labels (N,) and how its scale was taken."""
    if s.blank is not None:
        return _blank(s.blank, FEATURE_PX), np.zeros(s.blank, int), "blank glass"
    if s.slide is not None:
        x = _slide_tiles(root / s.slide, FEATURE_PX, tile_mpp)
        return x, np.zeros(len(x), int), "slide tiles at the models' scale"
    assert s.manifest is not None
    items = read_manifest(root / s.manifest, s.split)
    labels = np.array([it.label for it in items])
    pick = _sample(labels, s.limit)
    items = [items[i] for i in pick]
    mpp = [it.mpp if it.mpp is not None else s.mpp for it in items]
    n_unscaled = sum(m is None for m in mpp)
    scale = (
        f"{n_unscaled} of {len(items)} images without a scale: each taken as one whole field"
        if n_unscaled
        else "rescaled from their mpp"
    )
    return read_fields([it.path for it in items], mpp, FEATURE_PX, s.shift), labels[pick], scale


def _class_metrics(y: np.ndarray, score: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Balanced accuracy, sensitivity, specificity and ROC AUC where the set has both classes;
    otherwise the one rate it has.
    """
    pred = score >= threshold
    out: dict[str, float] = {}
    if (y == 1).any():
        out["sensitivity"] = float(pred[y == 1].mean())
    if (y == 0).any():
        out["specificity"] = float((~pred[y == 0]).mean())
    if len(out) == 2:
        out["balanced_accuracy"] = (out["sensitivity"] + out["specificity"]) / 2
        out["roc_auc"] = float(roc_auc(y, score))
    return out


def _screen(domain: DomainFile, stain: str, qc: QcSettings) -> TileScreen:
    normalizer = None if stain == "none" else StainNormalizer(stain, domain.stain_references)
    return TileScreen(QcThresholds.from_settings(qc), normalizer, domain.check)


def evaluate_sets(
    models_dir: str | os.PathLike[str],
    spec: EvalSets,
    out: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str],
    stains: tuple[str, ...] = ("none",),
    precision: str | None = "fp32",
    qc: QcSettings | None = None,
    log: Any = print,
) -> dict[str, Any]:
    """Score every set of `spec` (paths under `root`) with each stain normalisation; write
    `sets.json`, `sets.md` and `sets.png` into `out` and return the report.
    """
    from ..scale import tile_scale

    models_dir, root = Path(models_dir), Path(root)
    for m in stains:
        if m not in STAIN_METHODS:
            raise InvalidInput(f"stain normalisation {m!r} is not one of {STAIN_METHODS}")
    domain = load_domain(models_dir)
    if domain is None:
        raise MissingInput(f"{models_dir} holds no domain.json: fit one with `wbc-ray domain`")
    screens = {stain: _screen(domain, stain, qc or QcSettings()) for stain in stains}
    names = available(models_dir)
    clfs = [Classifier.load_served(models_dir, n, precision)[0] for n in names]  # type: ignore[arg-type]
    tile_mpp, _ = tile_scale([{"mpp": c.card.mpp, "input_size": c.card.input_size} for c in clfs])
    rows: list[dict[str, Any]] = []
    reference: dict[str, np.ndarray] = {}
    for s in spec.sets:
        x, y, scale = load_set(s, root, tile_mpp)
        log(f"{s.name}: {len(x)} fields ({scale})")
        for stain in stains:
            screened = screens[stain](x)
            p = np.stack([c.predict(screened.tiles) for c in clfs])  # (M, N, 2)
            _, fused = fuse(p, DEFAULT_FUSION)
            reference.setdefault(stain, screened.domain[screened.usable])
            rows.append(_row(s, stain, scale, y, p, fused, screened, reference[stain], names, domain.check))
    report = {
        "models_dir": str(models_dir),
        "release": _release_version(models_dir),
        "precision": precision,
        "fusion": DEFAULT_FUSION,
        "reference": spec.sets[0].name,
        "rows": rows,
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / REPORT).write_text(json.dumps(report, indent=1) + "\n")
    (out / "sets.md").write_text(sets_table(report, full=True))
    _plot(report, out / "sets.png")
    return report


def _release_version(models_dir: Path) -> str | None:
    try:
        return str(json.loads((models_dir / "release.json").read_text())["version"])
    except (OSError, KeyError, ValueError):
        return None


def _row(
    s: EvalSet,
    stain: str,
    scale: str,
    y: np.ndarray,
    p: np.ndarray,
    fused: np.ndarray,
    screened: Any,
    ref: np.ndarray,
    names: list[str],
    check: DomainCheck,
) -> dict[str, Any]:
    usable = screened.usable
    dist = screened.domain
    out_range = check.out_of_range(dist) & usable
    auc = float("nan")
    if usable.any() and len(ref):
        auc = float(roc_auc(np.r_[np.zeros(len(ref)), np.ones(usable.sum())], np.r_[ref, dist[usable]]))
    correct = (fused >= 0.5) == (y == 1)
    in_range = usable & ~out_range
    return {
        "set": s.name,
        "about": s.about or SHIFT_MEANING.get(s.shift, ""),
        "stain": stain,
        "scale": scale,
        "n": len(y),
        "benign": int((y == 0).sum()),
        "malignant": int((y == 1).sum()),
        "qc_rejected": float(1 - usable.mean()) if len(y) else 0.0,
        "qc_reasons": reason_counts(screened.qc),
        "flagged": float(out_range.sum() / max(1, usable.sum())),
        "domain_auc": auc,
        "fused": _class_metrics(y, fused),
        "models": {n: _class_metrics(y, p[i, :, 1]) for i, n in enumerate(names)},
        "accuracy_in_range": float(correct[in_range].mean()) if in_range.any() else None,
        "accuracy_out_of_range": float(correct[out_range].mean()) if out_range.any() else None,
    }


def _headline(m: dict[str, float]) -> str:
    if "balanced_accuracy" in m:
        return f"BA {m['balanced_accuracy']:.3f}"
    if "specificity" in m:
        return f"spec. {m['specificity']:.3f}"
    return f"sens. {m['sensitivity']:.3f}" if "sensitivity" in m else "-"


def _pct(v: float | None) -> str:
    return "-" if v is None or v != v else f"{100 * v:.1f} %"


def sets_table(report: dict[str, Any], full: bool = False, stain: str | None = None) -> str:
    """The report as a Markdown table: a row per set (and normalisation, unless `stain` picks
    one); `full` adds each model and the accuracies inside and outside the check's range.
    """
    rows = [r for r in report["rows"] if stain is None or r["stain"] == stain]
    names = list(rows[0]["models"]) if rows else []
    head = [
        "set",
        "n (benign/malig.)",
        "stain",
        "fused",
        "fused ROC AUC",
        "QC rejected",
        "out of range",
        f"domain AUC vs {report['reference']}",
    ]
    if full:
        head += names + ["fused acc. in range", "out of range"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        auc = r["fused"].get("roc_auc")
        cells = [
            r["set"],
            f"{r['n']} ({r['benign']}/{r['malignant']})",
            r["stain"],
            _headline(r["fused"]),
            "-" if auc is None else f"{auc:.3f}",
            _pct(r["qc_rejected"]),
            _pct(r["flagged"]),
            "-" if r["domain_auc"] != r["domain_auc"] else f"{r['domain_auc']:.3f}",
        ]
        if full:
            cells += [_headline(r["models"][n]) for n in names]
            cells += [_pct(r["accuracy_in_range"]), _pct(r["accuracy_out_of_range"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stains = list(dict.fromkeys(r["stain"] for r in report["rows"]))
    sets = list(dict.fromkeys(r["set"] for r in report["rows"]))
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.4 * len(sets) + 1.8), sharey=True)
    ypos = np.arange(len(sets))
    h = 0.8 / len(stains)
    for k, stain in enumerate(stains):
        by = {r["set"]: r for r in report["rows"] if r["stain"] == stain}
        acc = [_headline_value(by[s]["fused"]) for s in sets]
        flag = [by[s]["flagged"] for s in sets]
        axes[0].barh(ypos + k * h, acc, h, label=stain)
        axes[1].barh(ypos + k * h, flag, h, label=stain)
    axes[0].set(
        yticks=ypos + 0.4 - h / 2,
        yticklabels=sets,
        xlim=(0, 1),
        xlabel="fused: balanced accuracy (specificity where all benign)",
    )
    axes[1].set(xlim=(0, 1), xlabel="share of usable tiles the domain check flags")
    axes[0].invert_yaxis()
    axes[1].legend(title="stain normalisation", fontsize=8)
    fig.suptitle(f"release {report.get('release')}: sets of images as slide tiles ({report['precision']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _headline_value(m: dict[str, float]) -> float:
    for k in ("balanced_accuracy", "specificity", "sensitivity"):
        if k in m:
            return m[k]
    return float("nan")
