"""uint8 NHWC tiles -> normalised float NCHW at an architecture's input size."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def to_tensor(tiles: np.ndarray | torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(tiles)) if not isinstance(tiles, torch.Tensor) else tiles
    if t.ndim == 3:
        t = t.unsqueeze(0)
    if t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(f"expected uint8 tiles (N, H, W, 3), got shape {tuple(t.shape)}")
    return t.permute(0, 3, 1, 2)


def preprocess(
    tiles: np.ndarray | torch.Tensor,
    size: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Resize with antialiasing (tiles come at any scale) and normalise, on `device`."""
    x = to_tensor(tiles).to(device, non_blocking=True).float()
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    # (x / 255 - mean) / std as one scale and one shift, in place: two passes over the batch
    # instead of four (a few percent of an int8 replica's time went here).
    std_t = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    scale = 1.0 / (255.0 * std_t)
    shift = -torch.tensor(mean, device=x.device).view(1, 3, 1, 1) / std_t
    return x.mul_(scale).add_(shift).contiguous(memory_format=torch.channels_last)
