from __future__ import annotations

import math

import numpy as np
import pytest

from wbc_ray.ensemble import fuse, fuzzy_rank_scores, fuzzy_ranks, slide_verdict, wilson_interval


def test_rank_function_values_from_the_formulas() -> None:
    # At confidence 0: R1 = 1 - exp(-1/2) = 0.3935, R2 = 1 - tanh(1/2) = 0.5379.
    r1, r2 = 1 - math.exp(-0.5), 1 - math.tanh(0.5)
    assert round(r1, 4) == 0.3935 and round(r2, 4) == 0.5379
    assert fuzzy_ranks(np.array([0.0]))[0] == pytest.approx(r1 * r2)
    assert fuzzy_ranks(np.array([1.0]))[0] == 0.0
    c = 0.7
    d = (c - 1) ** 2 / 2
    assert fuzzy_ranks(np.array([c]))[0] == pytest.approx((1 - math.exp(-d)) * (1 - math.tanh(d)))
    # Monotone: more confident, lower rank.
    assert np.all(np.diff(fuzzy_ranks(np.linspace(0, 1, 11))) < 0)


def test_fused_score_is_rs_times_cfs() -> None:
    p = np.array([[[0.9, 0.1]], [[0.6, 0.4]], [[0.2, 0.8]]])
    rs = fuzzy_ranks(p).sum(axis=0)
    cfs = 1 - p.mean(axis=0)
    assert np.allclose(fuzzy_rank_scores(p), rs * cfs)


def test_decision_uses_fs_not_rs() -> None:
    # Malignant confidences 0.12, 0.67, 0.65: RS alone picks malignant, FS picks benign.
    p = np.array([[[0.88, 0.12]], [[0.33, 0.67]], [[0.35, 0.65]]])
    rs = fuzzy_ranks(p).sum(axis=0)[0]
    fs = fuzzy_rank_scores(p)[0]
    assert rs.argmin() != fs.argmin(), (rs, fs)
    pred, score = fuse(p, "fuzzy_rank")
    assert rs.argmin() == 1 and pred[0] == fs.argmin() == 0
    assert score[0] == pytest.approx(fs[0] / (fs[0] + fs[1])) and score[0] < 0.5


def test_mean_and_vote() -> None:
    p = np.array([[[0.9, 0.1], [0.4, 0.6]], [[0.4, 0.6], [0.3, 0.7]], [[0.45, 0.55], [0.6, 0.4]]])
    pred, score = fuse(p, "mean")  # means: malignant 0.417 and 0.633
    assert np.allclose(score, p.mean(0)[:, 1]) and list(pred) == [0, 1]
    pred, share = fuse(p, "vote")
    assert list(pred) == [1, 1] and np.allclose(share, [2 / 3, 2 / 3])
    with pytest.raises(ValueError, match="unknown fusion"):
        fuse(p, "max")  # type: ignore[arg-type]


def test_wilson_interval_known_values() -> None:
    lo, hi = wilson_interval(20, 100, 0.95)  # textbook: 0.1333 .. 0.2888
    assert lo == pytest.approx(0.1333, abs=1e-4) and hi == pytest.approx(0.2888, abs=1e-4)
    assert wilson_interval(0, 50)[0] == 0.0 and wilson_interval(50, 50)[1] == 1.0


def test_verdict_rules() -> None:
    calls = np.array([1] * 60 + [0] * 140)  # 30 % of 200 tiles: lower bound 0.24 >= 0.2
    v = slide_verdict(calls, tau=0.2)
    assert v.verdict == "malignant" and v.malignant_fraction == pytest.approx(0.3) and v.n_tiles == 200
    assert slide_verdict(np.array([1] * 10 + [0] * 190), tau=0.2).verdict == "benign"
    assert slide_verdict(np.array([1] * 40 + [0] * 160), tau=0.2).verdict == "indeterminate"
    tissue = np.array([0.9] * 100 + [0.1] * 100)
    v = slide_verdict(np.array([0] * 100 + [1] * 100), tissue, min_tissue=0.5)
    assert v.n_tiles == 100 and v.n_excluded == 100 and v.verdict == "benign"
    assert slide_verdict(np.array([], bool)).verdict == "indeterminate"


def test_adjusted_count_undoes_known_tile_rates() -> None:
    from wbc_ray.ensemble import TileRates

    rates = TileRates(tpr=0.95, fpr=0.15)
    # A slide with true fraction f shows f * tpr + (1 - f) * fpr malignant calls.
    for f in (0.0, 0.1, 0.35, 1.0):
        observed = f * 0.95 + (1 - f) * 0.15
        assert rates.adjust(observed) == pytest.approx(f)
    assert rates.adjust(0.05) == 0.0 and rates.adjust(0.99) == 1.0  # clipped to [0, 1]
    # 18 % calls on a benign-looking slide: raw says indeterminate, adjusted says benign.
    calls = np.zeros(500, bool)
    calls[:90] = True
    raw = slide_verdict(calls, tau=0.2)
    adj = slide_verdict(calls, tau=0.2, rates=rates)
    assert raw.verdict == "indeterminate" and adj.verdict == "benign"
    assert adj.raw_fraction == pytest.approx(0.18)
    assert adj.malignant_fraction == pytest.approx((0.18 - 0.15) / 0.8)
    lo, hi = wilson_interval(90, 500)
    assert adj.interval == pytest.approx((max(0.0, (lo - 0.15) / 0.8), (hi - 0.15) / 0.8))
    assert adj.adjusted_by == {
        "tpr": 0.95,
        "fpr": 0.15,
        "n_pos": 0,
        "n_neg": 0,
        "curve": (),
        "pos_cells": 0,
        "neg_cells": 0,
    }


def test_interval_widens_for_the_error_in_the_rates() -> None:
    """Rates measured on 60 benign cells: a benign-only slide whose cells draw 8% false calls
    (the calibration's drew 5%) must not get an interval that excludes 0."""
    from wbc_ray.ensemble import TileRates

    calls = np.zeros(300, bool)
    calls[:24] = True
    exact = TileRates(tpr=0.95, fpr=0.05)  # rates taken as known exactly: the old interval
    rates = TileRates(tpr=0.95, fpr=0.05, n_pos=400, n_neg=400, pos_cells=200, neg_cells=60)
    narrow = slide_verdict(calls, tau=0.2, rates=exact)
    wide = slide_verdict(calls, tau=0.2, rates=rates)
    assert narrow.malignant_fraction == wide.malignant_fraction == pytest.approx(0.03 / 0.9)
    assert narrow.interval[0] > 0 and wide.interval[0] == 0.0  # the truth, 0, is inside only now
    # By hand: Wilson's half-widths and the rates' error (Agresti-Coull, at the bound's fraction)
    # added in quadrature in share units, then mapped through (p - fpr) / (tpr - fpr).
    lo, hi = wilson_interval(24, 300)
    f_hi = (hi - 0.05) / 0.9
    p0, p1 = (0.05 * 60 + 2) / 64, (0.95 * 200 + 2) / 204
    var_hi = f_hi**2 * p1 * (1 - p1) / 204 + (1 - f_hi) ** 2 * p0 * (1 - p0) / 64
    share_hi = 0.08 + np.hypot(hi - 0.08, 1.959964 * np.sqrt(var_hi))
    assert wide.interval[1] == pytest.approx((share_hi - 0.05) / 0.9, rel=1e-5)
    assert wide.verdict == "benign"  # still: the upper bound stays below tau
    # Cells not recorded (older rates files): the tile counts stand in, a smaller widening.
    tiles_only = TileRates(tpr=0.95, fpr=0.05, n_pos=400, n_neg=400)
    mid = slide_verdict(calls, tau=0.2, rates=tiles_only).interval
    assert wide.interval[0] <= mid[0] <= narrow.interval[0] and narrow.interval[1] < mid[1] < wide.interval[1]


def test_measured_curve_is_inverted_piecewise_linearly() -> None:
    from wbc_ray.ensemble import TileRates

    # Mixed tiles lean malignant: the share bulges above the line between the ends.
    curve = ((0.0, 0.10), (0.25, 0.45), (0.5, 0.70), (1.0, 0.98))
    rates = TileRates(tpr=0.98, fpr=0.10, curve=curve)
    for truth, share in curve:
        assert rates.adjust(share) == pytest.approx(truth)
    assert rates.adjust(0.575) == pytest.approx(0.375)  # halfway between two points
    assert rates.adjust(0.05) == 0.0 and rates.adjust(0.99) == 1.0
    # The linear count would say 0.40 for a share of 0.45; the curve knows it is 0.25.
    assert TileRates(tpr=0.98, fpr=0.10).adjust(0.45) == pytest.approx(0.35 / 0.88)
    # A measured dip (noise) cannot make the inverse jump backwards.
    bumpy = TileRates(tpr=0.98, fpr=0.10, curve=((0.0, 0.1), (0.2, 0.4), (0.3, 0.38), (1.0, 0.98)))
    assert bumpy.adjust(0.39) <= bumpy.adjust(0.41)
