"""Learning curves of `wbc-ray adapt`: held-out balanced accuracy against labelled images per class.

For each "other lab" (the Taleqani images under each shift, and PBC's normal cells at their scale
beside Taleqani blasts), the release is adapted with 0 (the release as it is), 10, 20, 50 and 100
labelled images per class, with the same math as `wbc-ray adapt` (`training.Refit` on each model's
pooled features, the parent's replayed training images beside the lab's), and judged on that lab's
held-out images and on the original Taleqani test split (what adapting costs the first lab).

The labelled pool of a shifted lab is the validation split under the shift, then (for benign
cells, of which the validation split has 64) training images the replay does not use, under the
shift; held out: the test split under the shift. For the PBC lab: PBC cells (0.1 um/px) and
Taleqani validation blasts; held out: other PBC cells and the test split's blasts. The PBC cells are
only those the evaluation sets hold out (400), since the release trains on others.

Writes bench_results/adapt_curve.json and .png; with --docs, the table into docs/adapt.md.

    python -m benchmarks.adapt_curve [--ns 0 10 20 50 100] [--docs docs/adapt.md]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks._common import OUT_DIR, finish, target
from wbc_ray.config import load_settings
from wbc_ray.domain import read_fields
from wbc_ray.manifest import Item, read_manifest
from wbc_ray.models import Classifier, available
from wbc_ray.scale import FIELD_PX
from wbc_ray.training import (
    TUNINGS,
    AdaptConfig,
    Refit,
    binary_metrics,
    choose_tuning,
    fused_score,
    held_out_images,
    model_features,
    model_head,
    replay_sample,
    source_weights,
)

SHIFTS = ("stain", "scale_0.5", "scale_2", "blur", "jpeg", "grayscale")
PBC = "PBC cells + Taleqani blasts"
PULL = AdaptConfig.pull  # as `wbc-ray adapt` fits
BEGIN, END = "<!-- adapt-curve:begin -->", "<!-- adapt-curve:end -->"


def _ba(y: np.ndarray, p: np.ndarray) -> float:
    return float(binary_metrics(y, (p >= 0.5).astype(int), p)["balanced_accuracy"])


_fused = fused_score


class Features:
    """Each model's pooled features and calibrated parent probabilities of a set of fields."""

    def __init__(self, clfs: dict[str, Classifier], x: np.ndarray, seconds: dict[str, float]) -> None:
        self.feats: dict[str, np.ndarray] = {}
        self.parent: dict[str, np.ndarray] = {}
        for name, clf in clfs.items():
            t0 = time.perf_counter()
            f, z = model_features(clf, x)
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t0
            self.feats[name] = f
            self.parent[name] = torch.softmax(clf.calibrate(torch.from_numpy(z)), 1)[:, 1].numpy()


def _lab_sets(
    manifest: Path, pbc: Path, replayed: set[Path], unseen: set[Path], seed: int
) -> dict[str, dict[str, Any]]:
    """Name -> {pool: [(Item, mpp, shift)], held: [...]} per lab."""
    val, test, train = (read_manifest(manifest, s) for s in ("val", "test", "train"))
    spare_benign = [it for it in train if it.label == 0 and it.path not in replayed]
    out: dict[str, dict[str, Any]] = {}
    for shift in SHIFTS:
        out[f"test: {shift}"] = {
            "pool": [(it, None, shift) for it in val + spare_benign],
            "held": [(it, None, shift) for it in test],
        }
    rng = np.random.default_rng(seed)
    # Only the PBC cells the evaluation sets hold out: the release may have trained on the others
    # (`wbc-ray train --mix` never takes these).
    cells = [it for it in read_manifest(pbc) if it.path.resolve() in unseen]
    order = rng.permutation(len(cells))
    out[PBC] = {
        "pool": [(cells[j], 0.1, "none") for j in order[:150]]
        + [(it, None, "none") for it in val if it.label],
        "held": [(cells[j], 0.1, "none") for j in order[150:]]
        + [(it, None, "none") for it in test if it.label],
    }
    return out


def _fields(rows: list[tuple[Item, float | None, str]]) -> np.ndarray:
    by_shift: dict[str, list[int]] = {}
    for i, (_, _, shift) in enumerate(rows):
        by_shift.setdefault(shift, []).append(i)
    x = np.zeros((len(rows), FIELD_PX, FIELD_PX, 3), np.uint8)
    for shift, idx in by_shift.items():
        x[idx] = read_fields([rows[i][0].path for i in idx], [rows[i][1] for i in idx], FIELD_PX, shift)
    return x


def _pick(y: np.ndarray, n: int) -> np.ndarray:
    """The first n of each class in pool order (validation images first)."""
    return np.concatenate([np.flatnonzero(y == c)[:n] for c in (0, 1)])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ns", type=int, nargs="+", default=[0, 10, 20, 50, 100])
    ap.add_argument("--replay", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--docs", help="write the table into this Markdown file between its markers")
    args = ap.parse_args()
    s = load_settings()
    manifest = s.data_dir / "all_taleqani" / "split.csv"
    models = s.models_dir
    torch.set_num_threads(2)
    clfs = {n: Classifier.load(models, n, precision="fp32") for n in available(models)}
    heads = {n: model_head(c) for n, c in clfs.items()}
    seconds: dict[str, float] = {}
    replay = replay_sample(read_manifest(manifest, "train"), args.replay, args.seed)
    y_replay = np.array([it.label for it in replay])
    t0 = time.perf_counter()
    f_replay = Features(clfs, _fields([(it, None, "none") for it in replay]), seconds)
    original = read_manifest(manifest, "test")
    y_orig = np.array([it.label for it in original])
    f_orig = Features(clfs, _fields([(it, None, "none") for it in original]), seconds)
    n_images = len(replay) + len(original)
    rows: list[dict[str, Any]] = []
    unseen = held_out_images(s.data_dir)
    for name, lab in _lab_sets(
        manifest, s.data_dir / "pbc" / "labels.csv", {it.path for it in replay}, unseen, args.seed
    ).items():
        y_pool = np.array([it.label for it, _, _ in lab["pool"]])
        y_held = np.array([it.label for it, _, _ in lab["held"]])
        need = sorted(set(np.concatenate([_pick(y_pool, max(args.ns))])))
        f_pool = Features(clfs, _fields([lab["pool"][i] for i in need]), seconds)
        y_pool = y_pool[need]
        f_held = Features(clfs, _fields(lab["held"]), seconds)
        n_images += len(need) + len(lab["held"])
        for n in args.ns:
            t1 = time.perf_counter()
            row: dict[str, Any] = {"lab": name, "per_class": n}
            if n == 0:
                p_held = {"parent": [f_held.parent[m] for m in clfs]}
                p_orig = {"parent": [f_orig.parent[m] for m in clfs]}
                chosen = "parent"
            else:
                idx = _pick(y_pool, n)
                y = np.concatenate([y_pool[idx], y_replay])
                weight = source_weights(y_pool[idx], y_replay)
                # What `wbc-ray adapt` does: choose the tuning by cross-validation on the lab's
                # labelled images, then fit it on all of them (the other tuning for the record).
                chosen, _ = choose_tuning(
                    {m: f_pool.feats[m][idx] for m in clfs},
                    y_pool[idx],
                    f_replay.feats,
                    y_replay,
                    heads,
                    PULL,
                    0,
                )
                p_held, p_orig = {}, {}
                for tune in TUNINGS:
                    feats = {m: np.concatenate([f_pool.feats[m][idx], f_replay.feats[m]]) for m in clfs}
                    fits = {m: Refit.fit(feats[m], y, weight, heads[m], PULL, tune) for m in clfs}
                    p_held[tune] = [fits[m].predict(f_held.feats[m]) for m in clfs]
                    p_orig[tune] = [fits[m].predict(f_orig.feats[m]) for m in clfs]
                for tune in TUNINGS:
                    row[f"held_out_ba_{tune}"] = round(_ba(y_held, _fused(p_held[tune])), 4)
            fit_s = time.perf_counter() - t1
            per_image = sum(seconds.values()) / max(1, n_images)
            labelled = int(min(n, (y_pool == 0).sum()) + min(n, (y_pool == 1).sum())) if n else 0
            row |= {
                "labelled": labelled,
                "tuned": chosen,
                "held_out_ba": round(_ba(y_held, _fused(p_held[chosen])), 4),
                "original_test_ba": round(_ba(y_orig, _fused(p_orig[chosen])), 4),
                # One forward pass per image and model (measured rate), then the fits (both
                # tunings and the cross-validation: an upper bound on adapt's own).
                "minutes": round((fit_s + per_image * (labelled + len(replay) if n else 0)) / 60, 2),
            }
            rows.append(row)
            print(json.dumps(rows[-1]), flush=True)
    result: dict[str, Any] = {
        "models": list(clfs),
        "replay": len(replay),
        "rows": rows,
        "features_s_per_image": {m: round(v / n_images, 4) for m, v in seconds.items()},
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    base = {r["lab"]: r for r in rows if r["per_class"] == 0}
    at20 = [r for r in rows if r["per_class"] == 20]
    result["targets"] = {
        "labs_better_at_20_per_class": target(
            sum(r["held_out_ba"] >= base[r["lab"]]["held_out_ba"] for r in at20), ">=", len(at20), 0
        ),
        "worst_original_test_loss_at_20": target(
            max((base[r["lab"]]["original_test_ba"] - r["original_test_ba"] for r in at20), default=0.0),
            "<=",
            0.02,
        ),
    }
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    _plot(rows, OUT_DIR / "adapt_curve.png")
    if args.docs:
        _write_docs(Path(args.docs), rows, result)
    return finish("adapt_curve", result)


def table(rows: list[dict[str, Any]]) -> str:
    """The learning curves as a Markdown table: held-out BA (original test BA) per labelled count."""
    ns = sorted({r["per_class"] for r in rows})
    head = "| lab | " + " | ".join(f"{n} per class" for n in ns) + " |"
    lines = [head, "|" + " --- |" * (len(ns) + 1)]
    for lab in dict.fromkeys(r["lab"] for r in rows):
        cells = []
        for n in ns:
            r = next(r for r in rows if r["lab"] == lab and r["per_class"] == n)
            cells.append(f"{r['held_out_ba']:.3f} ({r['original_test_ba']:.3f}; {r['minutes']:.1f} min)")
        lines.append(f"| {lab} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def choice_table(rows: list[dict[str, Any]]) -> str:
    """Operating point alone against the head refit, per lab and labelled count (n > 0)."""
    ns = sorted({r["per_class"] for r in rows if r["per_class"]})
    lines = ["| lab | " + " | ".join(f"{n} per class" for n in ns) + " |", "|" + " --- |" * (len(ns) + 1)]
    for lab in dict.fromkeys(r["lab"] for r in rows):
        cells = []
        for n in ns:
            r = next(r for r in rows if r["lab"] == lab and r["per_class"] == n)
            mark = {t: "**" if r["tuned"] == t else "" for t in TUNINGS}
            op, head = (f"{mark[t]}{r[f'held_out_ba_{t}']:.3f}{mark[t]}" for t in TUNINGS)
            cells.append(f"{op} / {head}")
        lines.append(f"| {lab} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _write_docs(path: Path, rows: list[dict[str, Any]], result: dict[str, Any]) -> None:
    text = path.read_text()
    a, b = text.index(BEGIN), text.index(END)
    body = (
        f"{BEGIN}\n\nHeld-out balanced accuracy of the fused models on each lab's own images, and in "
        "brackets on the original Taleqani test split and the minutes adapting took on this machine "
        f"(replay {result['replay']} images; `python -m benchmarks.adapt_curve --docs {path}`):\n\n"
        f"{table(rows)}\n\n"
        "What to tune, measured (held-out balanced accuracy, fused): the operating point alone "
        "(temperature and threshold on the parent's heads) against the heads refitted too; in bold "
        "what adapt chose by cross-validation on the labelled images alone (the first table's "
        "figures):\n\n"
        f"{choice_table(rows)}\n\n"
    )
    path.write_text(text[:a] + body + text[b:])


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for lab in dict.fromkeys(r["lab"] for r in rows):
        rs = [r for r in rows if r["lab"] == lab]
        a.plot([r["per_class"] for r in rs], [r["held_out_ba"] for r in rs], marker="o", label=lab)
        b.plot([r["per_class"] for r in rs], [r["original_test_ba"] for r in rs], marker="o", label=lab)
    a.set(xlabel="labelled images per class", ylabel="balanced accuracy", title="The lab's held-out images")
    b.set(
        xlabel="labelled images per class", ylabel="balanced accuracy", title="Original Taleqani test split"
    )
    a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
