"""Fusion of per-model class probabilities: fuzzy rank (Manna et al. 2021), mean, majority vote.

All functions take `probs` shaped (M models, N samples, K classes) and return per sample a
predicted class and a continuous malignant score in [0, 1] (class 1 is malignant).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from ..errors import InvalidInput

Fusion = Literal["fuzzy_rank", "mean", "vote"]
FUSIONS: tuple[Fusion, ...] = ("fuzzy_rank", "mean", "vote")
DEFAULT_FUSION: Fusion = "fuzzy_rank"


def fuzzy_ranks(conf: np.ndarray) -> np.ndarray:
    """R = R1 * R2 with R1 = 1 - exp(-(c-1)^2/2) and R2 = 1 - tanh((c-1)^2/2): 0 at c = 1."""
    d = (np.asarray(conf, np.float64) - 1.0) ** 2 / 2.0
    return (1.0 - np.exp(-d)) * (1.0 - np.tanh(d))


def fuzzy_rank_scores(probs: np.ndarray) -> np.ndarray:
    """FS_k = RS_k * CFS_k, with RS_k = sum_i r_ik and CFS_k = 1 - mean_i c_ik. Shape (N, K)."""
    p = _check(probs)
    rs = fuzzy_ranks(p).sum(axis=0)
    cfs = 1.0 - p.mean(axis=0)
    return rs * cfs


def fuse(probs: np.ndarray, method: Fusion = "fuzzy_rank") -> tuple[np.ndarray, np.ndarray]:
    """Fuse several models' class probabilities for each tile.

    Parameters
    ----------
    probs : ndarray, shape (M, N, 2)
        Calibrated (benign, malignant) probabilities of M models for N tiles.
    method : {"fuzzy_rank", "mean", "vote"}, default "fuzzy_rank"
        Fuzzy rank-based fusion (Manna et al. 2021, deciding by the fused score FS), the mean
        probability, or the majority vote.

    Returns
    -------
    pred : ndarray of int, shape (N,)
        The fused class: 0 benign, 1 malignant.
    score : ndarray of float, shape (N,)
        A continuous malignant score in [0, 1] (for fuzzy rank, FS_benign / (FS_benign +
        FS_malignant)), for heatmaps and thresholds.
    """
    p = _check(probs)
    if method == "fuzzy_rank":
        fs = fuzzy_rank_scores(p)
        # The lower FS, the stronger the class. The reference code takes argmin of RS; FS is right.
        pred = fs.argmin(axis=1)
        # Continuous score for heatmaps: share of benign "distance" in the total.
        den = fs[:, 0] + fs[:, 1]
        score = np.divide(fs[:, 0], den, out=np.full(len(den), 0.5), where=den > 0)
        return pred, score
    if method == "mean":
        m = p.mean(axis=0)
        return m.argmax(axis=1), m[:, 1]
    if method == "vote":
        votes = p.argmax(axis=2)  # (M, N)
        share = votes.mean(axis=0)  # fraction of models calling malignant
        # Ties (even M) go to the mean probability.
        tie = np.isclose(share, 0.5)
        pred = (share > 0.5).astype(np.int64)
        pred[tie] = p.mean(axis=0)[tie].argmax(axis=1)
        return pred, share
    raise InvalidInput(f"unknown fusion {method!r}; choose one of {FUSIONS}")


def _check(probs: np.ndarray) -> np.ndarray:
    p = np.asarray(probs, np.float64)
    if p.ndim != 3:
        raise ValueError(f"probs must be (models, samples, classes), got shape {p.shape}")
    return p


def fused_scores(per_model: list[np.ndarray], method: Fusion = "fuzzy_rank") -> dict[str, np.ndarray]:
    """The scoring answer for N tiles from M models' (N, K) probabilities, in model-name order:
    ``probs`` (N, M, K), the ``fused`` malignant score (N,) and the fused ``call`` (N,). One
    function for the service's Ensemble and the one-off path's, so both answer alike.
    """
    p = np.stack(per_model)  # (M, N, K)
    call, score = fuse(p, method)
    return {
        "probs": p.transpose(1, 0, 2).astype(np.float32),
        "fused": score.astype(np.float32),
        "call": call.astype(np.int8),
    }
