"""The tile scale implied by model cards (a torch-free leaf: slide readers import it too)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# The training images carry no scale; they are taken as 0.5 um/px at 224 px.
FIELD_PX = 224


def tile_scale(cards: Sequence[Mapping[str, Any]]) -> tuple[float, int]:
    """Tile scale (um/px) and side from model cards: every model must see the same field of view."""
    mpps = {round(c["mpp"] * FIELD_PX / c["input_size"], 6) for c in cards}
    if len(mpps) != 1:
        raise ValueError(f"models disagree on tile scale (um/px): {sorted(mpps)}")
    return mpps.pop(), max(int(c["input_size"]) for c in cards)
