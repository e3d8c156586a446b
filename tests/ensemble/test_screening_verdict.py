"""Slide verdicts with quality control and the domain check (pure numpy)."""

from __future__ import annotations

import numpy as np

from wbc_ray.ensemble import TileScreening, slide_verdict


def _calls(n: int, k: int) -> np.ndarray:
    c = np.zeros(n, bool)
    c[:k] = True
    return c


def test_rejected_tiles_are_left_out_and_counted() -> None:
    calls = _calls(100, 0)
    usable = np.ones(100, bool)
    usable[:30] = False
    calls[:30] = True  # rejected tiles' calls must not count
    v = slide_verdict(calls, np.ones(100), tau=0.2, screen=TileScreening(usable))
    assert v.n_tiles == 70 and v.n_rejected == 30 and v.n_malignant == 0 and v.verdict == "benign"


def test_out_of_scope_above_the_share_of_out_of_range_tiles() -> None:
    calls = _calls(100, 0)
    far = np.zeros(100, bool)
    far[:31] = True
    s = TileScreening(np.ones(100, bool), far, max_out_of_range=0.3)
    v = slide_verdict(calls, np.ones(100), tau=0.2, screen=s)
    assert v.verdict == "out_of_scope" and v.n_out_of_range == 31 and v.out_of_range_share == 0.31
    far[30] = False
    assert slide_verdict(calls, np.ones(100), tau=0.2, screen=s).verdict == "benign"
    # Without the check the same slide is judged on its calls.
    assert (
        slide_verdict(calls, np.ones(100), tau=0.2, screen=TileScreening(np.ones(100, bool))).verdict
        == "benign"
    )


def test_insufficient_below_the_usable_tiles_or_share() -> None:
    calls = _calls(100, 60)
    usable = np.zeros(100, bool)
    usable[:19] = True
    few = TileScreening(usable, min_usable_tiles=20)
    assert slide_verdict(calls, np.ones(100), tau=0.2, screen=few).verdict == "insufficient"
    usable[:40] = True
    share = TileScreening(usable, min_usable_tiles=20, min_usable_share=0.5)
    assert slide_verdict(calls, np.ones(100), tau=0.2, screen=share).verdict == "insufficient"
    enough = TileScreening(usable, min_usable_tiles=20, min_usable_share=0.25)
    assert slide_verdict(calls, np.ones(100), tau=0.2, screen=enough).verdict == "malignant"
