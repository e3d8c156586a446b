"""Batched augmentation on tensors, and the perturbations evaluation applies.

Augmentation runs on whole batches (one affine grid_sample, colour maths in YIQ), about
100 times cheaper than per-image torchvision transforms on this CPU.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..domain import FIELD_UM
from ..slides import FIELD_PX, GAP_PX, GLASS_RGB

_RGB2YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ2RGB = torch.linalg.inv(_RGB2YIQ)
# The zoom range training draws from unless told: the scale spread of one lab's own images.
ZOOM = (0.85, 1.2)


def augment(
    x: torch.Tensor,
    g: torch.Generator,
    *,
    hue: float = 0.06,
    saturation: float = 0.4,
    brightness: float = 0.2,
    contrast: float = 0.2,
    grayscale_p: float = 0.2,
    channel_gain: float = 0.08,
    scale: tuple[float, float] = ZOOM,
    blur_p: float = 0.0,
) -> torch.Tensor:
    """Float (N, 3, H, W) in [0, 1] -> augmented copy. Geometry: rotation, flip, zoom (drawn
    log-uniformly from `scale`: above 1 the cells look larger), shift; then colour; then, for a
    `blur_p` share, a Gaussian blur of 0.2-1.2 um (focus differs between scanners).
    """
    n = x.shape[0]

    def u(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return torch.rand(n, *shape, generator=g) * (hi - lo) + lo

    theta = u(0, 2 * math.pi)
    # Log-uniform: a range such as 0.5-2 is as likely to halve the cells as to double them.
    s = u(math.log(scale[0]), math.log(scale[1])).exp()
    flip = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(theta) / s, torch.sin(theta) / s
    mat = torch.zeros(n, 2, 3)
    mat[:, 0, 0], mat[:, 0, 1] = cos * flip, -sin
    mat[:, 1, 0], mat[:, 1, 1] = sin * flip, cos
    mat[:, :, 2] = u(-0.1, 0.1, 2)
    grid = F.affine_grid(mat, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    # Colour: hue rotation and saturation in YIQ, then brightness/contrast and per-channel gain
    # (stain strength differs between labs), then sometimes grayscale.
    yiq = torch.einsum("ij,njhw->nihw", _RGB2YIQ, x)
    ang = u(-hue, hue) * 2 * math.pi
    sat = u(1 - saturation, 1 + saturation)
    c, si = torch.cos(ang) * sat, torch.sin(ang) * sat
    i, q = yiq[:, 1], yiq[:, 2]
    yiq = torch.stack(
        [
            yiq[:, 0],
            c[:, None, None] * i - si[:, None, None] * q,
            si[:, None, None] * i + c[:, None, None] * q,
        ],
        dim=1,
    )
    x = torch.einsum("ij,njhw->nihw", _YIQ2RGB, yiq)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * u(1 - contrast, 1 + contrast, 1, 1, 1) + mean * u(
        1 - brightness, 1 + brightness, 1, 1, 1
    )
    x = x * u(1 - channel_gain, 1 + channel_gain, 3, 1, 1)
    gray = (torch.rand(n, generator=g) < grayscale_p)[:, None, None, None]
    lum = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True).expand_as(x)
    x = torch.where(gray, lum, x)
    if blur_p > 0:
        x = _blur_some(x, torch.rand(n, generator=g) < blur_p, u(0.2, 1.2))
    return x.clamp_(0, 1)


def _blur_some(x: torch.Tensor, which: torch.Tensor, sigma_um: torch.Tensor) -> torch.Tensor:
    """Gaussian blur of the images `which` marks, each with its own sigma (microns at the field's
    scale: the side of x spans one FIELD_UM field), as one grouped separable convolution.
    """
    idx = torch.nonzero(which).flatten()
    if len(idx) == 0:
        return x
    n, c, h, w = x.shape
    sigma = (sigma_um[idx] * w / FIELD_UM).clamp(min=0.1)
    radius = max(1, math.ceil(3 * float(sigma.max())))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t[None, :] / sigma[:, None]) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # one kernel per image and channel
    sel = x[idx].reshape(1, len(idx) * c, h, w)
    sel = F.pad(sel, (radius, radius, radius, radius), mode="reflect")
    sel = F.conv2d(sel, k[:, None, None, :], groups=len(idx) * c)
    sel = F.conv2d(sel, k[:, None, :, None], groups=len(idx) * c)
    out = x.clone()
    out[idx] = sel.reshape(len(idx), c, h, w)
    return out


def grayscale_u8(x: np.ndarray) -> np.ndarray:
    """Grayscale copy of uint8 RGB images, kept 3-channel (the colour-shortcut check)."""
    lum = (x.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).round().astype(np.uint8)
    return np.repeat(lum[..., None], 3, axis=-1)


def stain_jitter_u8(x: np.ndarray, seed: int = 0, hue: float = 0.08, saturation: float = 0.3) -> np.ndarray:
    """Stain-jittered copy of uint8 RGB images (fixed seed, geometry untouched)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
    out = augment(
        t,
        g,
        hue=hue,
        saturation=saturation,
        brightness=0.1,
        contrast=0.1,
        grayscale_p=0.0,
        channel_gain=0.08,
        scale=(1.0, 1.0),
    )
    # augment() also rotates and flips: fine for cells, which have no orientation.
    return (out * 255).round().byte().permute(0, 2, 3, 1).numpy()


# The views mimic composed slides: fields on the same glass, with the same gap between them.
GLASS = tuple(c / 255 for c in GLASS_RGB)
GAP_FRACTION = GAP_PX / FIELD_PX


def mosaic(
    x: torch.Tensor,
    y: torch.Tensor,
    anchor: torch.Tensor,
    g: torch.Generator,
    *,
    same_class_p: float = 0.5,
    empty_p: float = 0.15,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Slide-like training views: a random window over a 2x2 block of fields on glass.

    A slide tile lands anywhere: across two to four fields, the gaps between them, or the
    empty glass at the edge. Trained only on whole centred fields, every model reads such
    views as malignant far too often. Each view here crops an (S, S) window at a random
    offset from fields around `anchor` (x: (N, S, S, 3) uint8). Its soft label is the
    malignant share of the field area it shows, the label a slide's truth implies.
    Returns float (n, 3, S, S) in [0, 1] and (n,) float labels.
    """
    n, s = len(anchor), x.shape[1]
    gap = max(1, round(s * GAP_FRACTION))
    side = 2 * s + gap
    canvas = torch.empty(n, 3, side, side)
    canvas[:] = torch.tensor(GLASS).view(1, 3, 1, 1)
    # Partners: all of the anchor's class half of the time (pure benign blocks exist on a
    # benign slide), otherwise anything; some cells are left empty, as at a slide's margin.
    rand = torch.randint(0, len(x), (n, 4), generator=g)
    same = torch.rand(n, generator=g) < same_class_p
    for i in range(n):
        if same[i]:
            pool = torch.nonzero(y == y[anchor[i]]).flatten()
            rand[i] = pool[torch.randint(0, len(pool), (4,), generator=g)]
    rand[:, 0] = anchor
    present = torch.rand(n, 4, generator=g) >= empty_p
    present[:, 0] = True
    labels = y[rand].float()
    # Offsets up to half a pitch cover every placement of a window on the field lattice (the
    # flips and rotations of augment() supply the mirror images) and keep the anchor in view.
    ox = torch.randint(0, (s + gap) // 2 + 1, (n,), generator=g)
    oy = torch.randint(0, (s + gap) // 2 + 1, (n,), generator=g)
    out = torch.empty(n, 3, s, s)
    soft = torch.empty(n)
    for i in range(n):
        area = torch.zeros(4)
        for k in range(4):
            if not present[i, k]:
                continue
            r, c = divmod(k, 2)
            top, left = r * (s + gap), c * (s + gap)
            canvas[i, :, top : top + s, left : left + s] = x[rand[i, k]].permute(2, 0, 1).float() / 255
            # Overlap of this field with the window [ox, ox+s) x [oy, oy+s).
            w = max(0, min(left + s, int(ox[i]) + s) - max(left, int(ox[i])))
            h = max(0, min(top + s, int(oy[i]) + s) - max(top, int(oy[i])))
            area[k] = w * h
        out[i] = canvas[i, :, oy[i] : oy[i] + s, ox[i] : ox[i] + s]
        soft[i] = (area * labels[i]).sum() / area.sum()
    return out, soft
