"""Grad-CAM on the layer each architecture names in the registry."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ._classifier import Classifier
from ._registry import get_spec, submodule


def gradcam(clf: Classifier, tile: np.ndarray, target: int = 1) -> np.ndarray:
    """Heat map (H, W) in [0, 1] at the tile's size: where the evidence for `target` lies."""
    layer = submodule(clf.model, get_spec(clf.name).cam_layer)
    acts: list[torch.Tensor] = []
    grads: list[torch.Tensor] = []
    h1 = layer.register_forward_hook(lambda _m, _i, o: acts.append(o))
    h2 = layer.register_full_backward_hook(lambda _m, _gi, go: grads.append(go[0]))  # type: ignore[index]
    try:
        x = clf.inputs(tile[None] if tile.ndim == 3 else tile).float().requires_grad_(True)
        with torch.enable_grad():
            logits = clf.model(x)
            clf.model.zero_grad(set_to_none=True)
            logits[:, target].sum().backward()
    finally:
        h1.remove()
        h2.remove()
    a, g = acts[-1].detach().float(), grads[-1].detach().float()
    weights = g.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * a).sum(dim=1, keepdim=True))
    size = tile.shape[-3:-1]
    cam = F.interpolate(cam, size=size, mode="bilinear", align_corners=False)[0, 0]
    cam = cam - cam.min()
    peak = float(cam.max())
    return (cam / peak if peak > 0 else cam).cpu().numpy()
