"""The tile scale implied by model cards (a torch-free leaf: slide readers import it too)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .errors import InvalidInput

# The training images carry no scale; they are taken as 0.5 um/px at 224 px (a white cell of
# 12-18 um spans 25-35 px there): one field is FIELD_PX x TRAINING_MPP = 112 um.
FIELD_PX = 224
TRAINING_MPP = 0.5


def tile_scale(cards: Sequence[Mapping[str, Any]]) -> tuple[float, int]:
    """Tile scale (um/px) and side from model cards.

    Every model must see the same field of view (its card's mpp x 224 px, the training image);
    input sizes may differ (a slow CPU can afford Xception only at a smaller input). Tiles are
    read at the largest input size, so no model is fed an upsampled tile, and each model
    resizes down to its own input as it does for a training image.
    """
    fields = {round(c["mpp"] * FIELD_PX, 6) for c in cards}
    if len(fields) != 1:
        raise InvalidInput(f"models disagree on the field of view of a tile (um): {sorted(fields)}")
    side = max(int(c["input_size"]) for c in cards)
    return round(fields.pop() / side, 6), side
