"""Binary classification metrics with malignant (class 1) as positive."""

from __future__ import annotations

from typing import Any

import numpy as np


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve via the rank-sum statistic (ties count half)."""
    y = np.asarray(y).astype(bool)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    from scipy.stats import rankdata

    ranks = rankdata(np.asarray(score, np.float64))
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def roc_curve(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) over all thresholds, from (0,0) to (1,1)."""
    y = np.asarray(y).astype(bool)
    order = np.argsort(-np.asarray(score, np.float64), kind="stable")
    tp = np.concatenate([[0], np.cumsum(y[order])])
    fp = np.concatenate([[0], np.cumsum(~y[order])])
    return fp / max(fp[-1], 1), tp / max(tp[-1], 1)


def binary_metrics(y: np.ndarray, pred: np.ndarray, score: np.ndarray | None = None) -> dict[str, Any]:
    y = np.asarray(y).astype(int)
    pred = np.asarray(pred).astype(int)
    tp = int(((y == 1) & (pred == 1)).sum())
    tn = int(((y == 0) & (pred == 0)).sum())
    fp = int(((y == 0) & (pred == 1)).sum())
    fn = int(((y == 1) & (pred == 0)).sum())

    def div(a: float, b: float) -> float:
        return a / b if b else float("nan")

    sens, spec, prec = div(tp, tp + fn), div(tn, tn + fp), div(tp, tp + fp)
    return {
        "n": int(len(y)),
        "accuracy": div(tp + tn, len(y)),
        "balanced_accuracy": (sens + spec) / 2,
        "sensitivity": sens,
        "specificity": spec,
        "precision": prec,
        "f1": div(2 * prec * sens, prec + sens),
        "roc_auc": roc_auc(y, score) if score is not None else float("nan"),
        "confusion": [[tn, fp], [fn, tp]],
    }


def best_threshold(y: np.ndarray, score: np.ndarray) -> float:
    """The score threshold maximising balanced accuracy (midpoint between neighbouring scores)."""
    y = np.asarray(y).astype(bool)
    s = np.asarray(score, np.float64)
    cand = np.unique(s)
    if len(cand) < 2:
        return 0.5
    mids = (cand[:-1] + cand[1:]) / 2
    pos, neg = max(y.sum(), 1), max((~y).sum(), 1)
    sens = np.array([(s[y] >= t).sum() / pos for t in mids])
    spec = np.array([(s[~y] < t).sum() / neg for t in mids])
    ba = (sens + spec) / 2
    best = np.flatnonzero(ba >= ba.max() - 1e-12)
    return float(mids[best[len(best) // 2]])  # middle of the best plateau: robust to noise
