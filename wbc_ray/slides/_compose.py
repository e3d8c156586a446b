"""Composed test slides: labelled field images on glass, written as a streamed pyramidal TIFF.

Every level is rendered tile by tile straight from the field list, so no level is ever held
in memory; a 50,000 px square slide costs a few MB of RAM.
"""

from __future__ import annotations

import json
import math
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InvalidInput
from ..manifest import CLASSES, Item
from ..scale import TRAINING_MPP

GLASS_RGB = (238, 235, 240)
FIELD_PX = 224  # a field (one training image) on the slide, at the slide's 0.5 um/px
GAP_PX = 24  # glass between neighbouring fields
TIFF_TILE = 256
SLIDE_THRESHOLD = 0.2  # a slide is malignant when at least this fraction of fields is


@dataclass(frozen=True)
class Layout:
    rows: int
    cols: int
    field_px: int
    gap_px: int
    margin_px: int

    @property
    def pitch(self) -> int:
        return self.field_px + self.gap_px

    @property
    def size(self) -> tuple[int, int]:
        w = 2 * self.margin_px + self.cols * self.pitch - self.gap_px
        h = 2 * self.margin_px + self.rows * self.pitch - self.gap_px
        return w, h

    def box(self, r: int, c: int) -> tuple[int, int, int, int]:
        return (
            self.margin_px + c * self.pitch,
            self.margin_px + r * self.pitch,
            self.field_px,
            self.field_px,
        )


class _FieldCache:
    """Resized field images per (image, level), least recently used out."""

    def __init__(self, paths: list[Path], capacity: int = 4096) -> None:
        self._paths = paths
        self._cache: OrderedDict[tuple[int, int, str | None], np.ndarray] = OrderedDict()
        self._capacity = capacity

    def get(self, idx: int, side: int, defect: str | None = None) -> np.ndarray:
        key = (idx, side, defect)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        with Image.open(self._paths[idx]) as im:
            arr = np.asarray(im.convert("RGB").resize((side, side), Image.Resampling.BILINEAR))
        if defect is not None:
            arr = _with_defect(arr, defect)
        self._cache[key] = arr
        if len(self._cache) > self._capacity:
            self._cache.popitem(last=False)
        return arr


# Faults a composed slide can carry in chosen fields, to test quality control on known areas.
DEFECTS = ("blur", "ink", "blank")
INK_RGB = (25, 105, 60)  # a green marker


def _with_defect(field: np.ndarray, defect: str) -> np.ndarray:
    """A field image with a fault: out of focus, under a marker stroke, or left empty (glass)."""
    from PIL import ImageDraw, ImageFilter

    side = field.shape[0]
    if defect == "blank":
        out = np.empty_like(field)
        out[:] = GLASS_RGB
        return out
    im = Image.fromarray(field)
    if defect == "blur":
        # sigma 3 px at the field's full 224 px: far softer than any training image.
        return np.asarray(im.filter(ImageFilter.GaussianBlur(3.0 * side / FIELD_PX)))
    if defect == "ink":
        # A broad stroke across the whole field, as a pen circling a region leaves on the glass.
        d = ImageDraw.Draw(im)
        d.rectangle((0, 0, side, side), fill=INK_RGB)
        return np.asarray(im)
    raise InvalidInput(f"unknown defect {defect!r}; known: {', '.join(DEFECTS)}")


def _render(
    layout: Layout,
    order: np.ndarray,
    cache: _FieldCache,
    ds: int,
    x: int,
    y: int,
    w: int,
    h: int,
    defects: dict[int, str] | None = None,
) -> np.ndarray:
    """Region (x, y, w, h) in pixels of the level with downsample `ds`."""
    out = np.empty((h, w, 3), np.uint8)
    out[:] = GLASS_RGB
    p, m, f = layout.pitch, layout.margin_px, layout.field_px
    x0, y0, x1, y1 = x * ds, y * ds, (x + w) * ds, (y + h) * ds  # level-0 extent
    c_lo, c_hi = max(0, (x0 - m) // p), min(layout.cols - 1, (x1 - m) // p)
    r_lo, r_hi = max(0, (y0 - m) // p), min(layout.rows - 1, (y1 - m) // p)
    for r in range(r_lo, r_hi + 1):
        for c in range(c_lo, c_hi + 1):
            fx, fy = (m + c * p) // ds, (m + r * p) // ds
            side = max(1, f // ds)
            ax0, ay0 = max(fx, x), max(fy, y)
            ax1, ay1 = min(fx + side, x + w), min(fy + side, y + h)
            if ax1 <= ax0 or ay1 <= ay0:
                continue
            k = r * layout.cols + c
            img = cache.get(int(order[k]), side, (defects or {}).get(k))
            out[ay0 - y : ay1 - y, ax0 - x : ax1 - x] = img[ay0 - fy : ay1 - fy, ax0 - fx : ax1 - fx]
    return out


def _level_tiles(render: Callable[[int, int, int, int], np.ndarray], w: int, h: int) -> Iterator[np.ndarray]:
    for ty in range(0, h, TIFF_TILE):
        for tx in range(0, w, TIFF_TILE):
            tile = np.empty((TIFF_TILE, TIFF_TILE, 3), np.uint8)
            tile[:] = GLASS_RGB
            tw, th = min(TIFF_TILE, w - tx), min(TIFF_TILE, h - ty)
            tile[:th, :tw] = render(tx, ty, tw, th)
            yield tile


def _field_order(
    items: list[Item], n: int, malignant_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each field's label (shuffled) and the manifest row shown in it."""
    rng = np.random.default_rng(seed)
    n_mal = round(malignant_fraction * n)
    pools = {k: [i for i, it in enumerate(items) if it.label == k] for k in (0, 1)}
    for k, want in ((1, n_mal), (0, n - n_mal)):
        if want and not pools[k]:
            raise InvalidInput(f"manifest has no {CLASSES[k]} images but {want} are needed")
    labels = np.array([1] * n_mal + [0] * (n - n_mal))
    rng.shuffle(labels)
    order = np.empty(n, np.int64)
    for k in (0, 1):
        where = np.flatnonzero(labels == k)
        if len(where):
            pool = np.array(pools[k])
            # Without replacement while the pool lasts, so small slides repeat no image.
            order[where] = rng.choice(pool, size=len(where), replace=len(where) > len(pool))
    return labels, order


def _write_pyramid(
    out: Path,
    layout: Layout,
    order: np.ndarray,
    cache: _FieldCache,
    mpp: float,
    jpeg_quality: int,
    progress: bool,
    defects: dict[int, str] | None = None,
) -> None:
    """The tiled JPEG pyramid (4x steps down to about 512 px), written to a .part file and moved
    into place, so a reader never sees half a slide.
    """
    import tifffile
    from tqdm import tqdm

    width, height = layout.size
    downsamples = [1]
    while max(width, height) // (downsamples[-1] * 4) >= 512:
        downsamples.append(downsamples[-1] * 4)
    tmp = out.with_name(out.name + ".part")
    total = sum(math.ceil(width / d / TIFF_TILE) * math.ceil(height / d / TIFF_TILE) for d in downsamples)
    bar = tqdm(total=total, desc=f"make-slide {out.name}", unit="tile", disable=not progress)
    res = 1e4 / mpp  # pixels per centimetre
    with tifffile.TiffWriter(tmp, bigtiff=True) as tif:
        for i, ds in enumerate(downsamples):
            lw, lh = -(-width // ds), -(-height // ds)

            def render(x: int, y: int, w: int, h: int, ds: int = ds) -> np.ndarray:
                return _render(layout, order, cache, ds, x, y, w, h, defects)

            def counted(it: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
                for t in it:
                    bar.update(1)
                    yield t

            tif.write(
                counted(_level_tiles(render, lw, lh)),
                shape=(lh, lw, 3),
                dtype=np.uint8,
                tile=(TIFF_TILE, TIFF_TILE),
                photometric="rgb",
                compression="jpeg",
                compressionargs={"level": jpeg_quality},
                resolution=(res / ds, res / ds),
                resolutionunit="CENTIMETER",
                subfiletype=0 if i == 0 else 1,
                description=f"wbc-ray composed slide, level {i}, downsample {ds}",
                metadata=None,
            )
    bar.close()
    os.replace(tmp, out)


def compose_slide(
    items: list[Item],
    out: str | os.PathLike[str],
    *,
    grid: tuple[int, int],
    malignant_fraction: float,
    seed: int = 0,
    mpp: float = TRAINING_MPP,
    field_px: int = FIELD_PX,
    gap_px: int = GAP_PX,
    margin_px: int = 256,
    jpeg_quality: int = 90,
    progress: bool = False,
    defects: dict[tuple[int, int], str] | None = None,
) -> dict[str, object]:
    """Write `out` (tiled pyramidal TIFF) and `out` with suffix .json (ground truth); return the truth.

    `defects` maps (row, col) of a field to a fault drawn into it ("blur", "ink", "blank"); the
    truth lists each field's.
    """
    if not 0.0 <= malignant_fraction <= 1.0:
        raise InvalidInput(f"malignant fraction must be within [0, 1], got {malignant_fraction}")
    rows, cols = grid
    if rows < 1 or cols < 1:
        raise InvalidInput(f"grid must be at least 1x1, got {rows}x{cols}")
    n = rows * cols
    labels, order = _field_order(items, n, malignant_fraction, seed)
    layout = Layout(rows, cols, field_px, gap_px, margin_px)
    faults = {}
    for (r, c), kind in (defects or {}).items():
        if kind not in DEFECTS or not (0 <= r < rows and 0 <= c < cols):
            raise InvalidInput(
                f"defect {kind!r} at ({r}, {c}): defects are {DEFECTS}, inside the {rows}x{cols} grid"
            )
        faults[r * cols + c] = kind
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cache = _FieldCache([it.path for it in items])
    _write_pyramid(out, layout, order, cache, mpp, jpeg_quality, progress, faults)

    fields = []
    for r in range(rows):
        for c in range(cols):
            it = items[int(order[r * cols + c])]
            field = {"box": list(layout.box(r, c)), "label": CLASSES[it.label], "image": it.path.name}
            if r * cols + c in faults:
                field["defect"] = faults[r * cols + c]
            fields.append(field)
    frac = float(labels.mean()) if n else 0.0
    width, height = layout.size
    truth: dict[str, object] = {
        "slide": out.name,
        "width": width,
        "height": height,
        "mpp": mpp,
        "grid": [rows, cols],
        "field_px": field_px,
        "n_fields": n,
        "n_malignant": int(labels.sum()),
        "malignant_fraction": frac,
        "threshold": SLIDE_THRESHOLD,
        "slide_label": "malignant" if frac >= SLIDE_THRESHOLD else "benign",
        "seed": seed,
        "fields": fields,
    }
    out.with_suffix(".json").write_text(json.dumps(truth, indent=1))
    return truth
