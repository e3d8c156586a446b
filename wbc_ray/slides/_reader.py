"""One interface over OpenSlide and Pillow, with every failure mapped to `SlideError`."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from ._error import SlideError
from ._fetch import is_uri, local_path
from ._tiff_direct import TiffTiles, open_direct

# Plain images are decoded whole, so their size is capped; pyramidal slides are read lazily.
MAX_PLAIN_PIXELS = 100_000_000
# Beyond this a slide with no smaller pyramid level is refused: its thumbnail alone would take
# minutes of decoding. Between the two limits the thumbnail is built in bands.
MAX_SINGLE_LEVEL_PIXELS = 4_000_000_000
MAX_DIRECT_THUMB_PIXELS = 64_000_000
THUMB_BAND_PIXELS = 16_000_000
PLAIN_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
# Modes of 8-bit brightfield images; anything else (16-bit, float, fluorescence) is refused.
PLAIN_MODES = {"RGB", "RGBA", "P", "L", "LA", "CMYK", "YCbCr"}


@dataclass(frozen=True)
class SlideInfo:
    path: str
    vendor: str
    dimensions: tuple[int, int]
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    mpp: float | None
    mpp_source: str
    objective_power: float | None
    associated_images: tuple[str, ...]
    properties: dict[str, str] = field(default_factory=dict)
    # "openslide", "openslide+tiff-direct (levels 0, 1)" or "pillow": which code decodes regions.
    reader: str = "openslide"

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    def level_mpp(self, level: int) -> float | None:
        return None if self.mpp is None else self.mpp * self.level_downsamples[level]

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "vendor": self.vendor,
            "dimensions": list(self.dimensions),
            "level_count": self.level_count,
            "level_dimensions": [list(d) for d in self.level_dimensions],
            "level_downsamples": list(self.level_downsamples),
            "mpp": self.mpp,
            "mpp_source": self.mpp_source,
            "objective_power": self.objective_power,
            "associated_images": list(self.associated_images),
            "reader": self.reader,
        }


class _Backend(Protocol):
    def read(self, x: int, y: int, level: int, w: int, h: int) -> np.ndarray: ...
    def thumbnail(self, max_side: int) -> np.ndarray: ...
    def associated(self, name: str) -> np.ndarray: ...
    def close(self) -> None: ...


class Slide:
    """An open slide. Coordinates of `read` are level-0 pixels; size is in pixels of `level`."""

    def __init__(self, info: SlideInfo, backend: _Backend) -> None:
        self.info = info
        self._backend = backend

    # Short aliases for the facts people use most.
    @property
    def path(self) -> str:
        return self.info.path

    @property
    def dimensions(self) -> tuple[int, int]:
        return self.info.dimensions

    @property
    def mpp(self) -> float | None:
        return self.info.mpp

    def read(self, x: int, y: int, level: int, size: tuple[int, int]) -> np.ndarray:
        """RGB uint8 array (h, w, 3) of the region; areas outside the slide read as white."""
        if not 0 <= level < self.info.level_count:
            raise SlideError(self.path, f"level {level} does not exist")
        w, h = int(size[0]), int(size[1])
        if w <= 0 or h <= 0:
            raise SlideError(self.path, f"region size must be positive, got {w}x{h}")
        try:
            return self._backend.read(int(x), int(y), level, w, h)
        except SlideError:
            raise
        except Exception as exc:  # OpenSlide raises its own errors mid-file (truncation etc.)
            raise SlideError(self.path, f"reading region ({x}, {y}) level {level}: {exc}") from exc

    def thumbnail(self, max_side: int = 1024) -> np.ndarray:
        try:
            return self._backend.thumbnail(max_side)
        except Exception as exc:
            raise SlideError(self.path, f"reading thumbnail: {exc}") from exc

    def associated_image(self, name: str) -> np.ndarray:
        if name not in self.info.associated_images:
            raise SlideError(self.path, f"no associated image named {name!r}")
        return self._backend.associated(name)

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _rgba_to_rgb(rgba: np.ndarray) -> np.ndarray:
    """Composite over white: OpenSlide marks areas with no data as transparent."""
    if rgba.shape[-1] == 3:
        return rgba
    alpha = rgba[..., 3:4]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgba[..., :3])
    a = alpha.astype(np.uint16)
    rgb = (rgba[..., :3].astype(np.uint16) * a + 255 * (255 - a)) // 255
    return rgb.astype(np.uint8)


class _OpenSlideBackend:
    def __init__(self, osr: Any) -> None:
        self._osr = osr
        self.direct: TiffTiles | None = None

    def read(self, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        if self.direct is not None and self.direct.serves(x, y, level):
            region = self.direct.read(x, y, level, w, h)
            if region is not None:
                return region
        return self.read_openslide(x, y, level, w, h)

    def read_openslide(self, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        return _rgba_to_rgb(np.asarray(self._osr.read_region((x, y), level, (w, h))))

    def _direct_thumbnail(self, max_side: int) -> np.ndarray | None:
        """OpenSlide's get_thumbnail (same level, same Lanczos filter), with the level decoded
        straight from the TIFF tiles: the same pixels (checked on the shared slides) in half the
        time, which is time every analysis spends before any tile is scored.
        """
        osr = self._osr
        level = osr.get_best_level_for_downsample(max(d / max_side for d in osr.dimensions))
        w, h = osr.level_dimensions[level]
        if self.direct is None or level not in self.direct.levels or w * h > MAX_DIRECT_THUMB_PIXELS:
            return None
        if not self.direct.serves(0, 0, level):
            return None
        region = self.direct.read(0, 0, level, w, h)
        if region is None:
            return None
        img = Image.fromarray(region)
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        return np.asarray(img)

    def thumbnail(self, max_side: int) -> np.ndarray:
        w, h = self._osr.level_dimensions[-1]
        if w * h <= MAX_DIRECT_THUMB_PIXELS:
            direct = self._direct_thumbnail(max_side)
            if direct is not None:
                return direct
            return np.asarray(self._osr.get_thumbnail((max_side, max_side)).convert("RGB"))
        # OpenSlide's get_thumbnail reads the whole smallest level at once; for a slide with
        # no small level that is gigabytes, so shrink it band by band instead.
        scale = max_side / max(w, h)
        out = Image.new("RGB", (max(1, round(w * scale)), max(1, round(h * scale))), "white")
        band = max(1, int(THUMB_BAND_PIXELS // w))
        level = self._osr.level_count - 1
        for y in range(0, h, band):
            bh = min(band, h - y)
            region = Image.fromarray(self.read(0, y, level, w, bh))
            small = region.resize((out.width, max(1, round(bh * scale))), Image.Resampling.BOX)
            out.paste(small, (0, round(y * scale)))
        return np.asarray(out)

    def associated(self, name: str) -> np.ndarray:
        return np.asarray(self._osr.associated_images[name].convert("RGB"))

    def close(self) -> None:
        if self.direct is not None:
            self.direct.close()
        self._osr.close()


class _PillowBackend:
    """A plain image as a one-level slide, decoded once on first read."""

    def __init__(self, image: Image.Image) -> None:
        self._image = image
        self._pixels: np.ndarray | None = None

    def _array(self) -> np.ndarray:
        if self._pixels is None:
            self._pixels = np.asarray(self._image.convert("RGB"))
        return self._pixels

    def read(self, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        img = self._array()
        out = np.full((h, w, 3), 255, np.uint8)
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + w, img.shape[1]), min(y + h, img.shape[0])
        if x1 > x0 and y1 > y0:
            out[y0 - y : y1 - y, x0 - x : x1 - x] = img[y0:y1, x0:x1]
        return out

    def thumbnail(self, max_side: int) -> np.ndarray:
        img = Image.fromarray(self._array())
        img.thumbnail((max_side, max_side))
        return np.asarray(img)

    def associated(self, name: str) -> np.ndarray:
        raise KeyError(name)

    def close(self) -> None:
        self._image.close()


def _float_prop(props: Any, key: str) -> float | None:
    try:
        value = float(props[key])
    except (KeyError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def _openslide_mpp(props: Any) -> tuple[float | None, str]:
    mpp = _float_prop(props, "openslide.mpp-x")
    if mpp is not None:
        return mpp, "openslide.mpp-x"
    # Generic TIFFs carry resolution tags that OpenSlide passes through without converting.
    xres = _float_prop(props, "tiff.XResolution")
    unit = str(props.get("tiff.ResolutionUnit", "")).lower()
    if xres is not None and unit in {"centimeter", "inch"}:
        return (1e4 if unit == "centimeter" else 25400.0) / xres, f"tiff.XResolution ({unit})"
    return None, "none"


def _check_file(p: Path) -> None:
    try:
        st = p.stat()
    except FileNotFoundError:
        raise SlideError(p, "no such file") from None
    except (OSError, ValueError) as exc:  # ValueError: embedded NUL in the name
        raise SlideError(p, f"cannot access file: {exc}") from None
    if p.is_dir():
        # MRXS and DICOM may be folders of files, but OpenSlide opens them by one file.
        raise SlideError(p, "is a directory, not a slide file (for DICOM or MRXS, pass one file)")
    if st.st_size == 0:
        raise SlideError(p, "file is empty")
    if not os.access(p, os.R_OK):
        raise SlideError(p, "file is not readable (permission denied)")


def _open_openslide(
    p: Path, mpp_override: float | None, default_mpp: float | None, direct: bool
) -> Slide | None:
    import openslide

    try:
        vendor = openslide.OpenSlide.detect_format(str(p))
    except Exception:
        vendor = None
    if vendor is None:
        return None
    try:
        osr = openslide.OpenSlide(str(p))
    except Exception as exc:
        raise SlideError(p, f"OpenSlide recognises it as {vendor} but cannot open it: {exc}") from exc
    # Whatever fails from here on (a level too large, no resolution, a tile that does not decode
    # at the probe) closes what was opened: a long-running service meets many such files.
    backend: _OpenSlideBackend | None = None
    try:
        lw, lh = osr.level_dimensions[-1]
        if lw * lh > MAX_SINGLE_LEVEL_PIXELS:
            raise SlideError(
                p,
                f"smallest pyramid level is {lw}x{lh} ({lw * lh / 1e9:.1f} Gpx), over the "
                f"{MAX_SINGLE_LEVEL_PIXELS / 1e9:.0f} Gpx limit; add reduced-resolution levels",
            )
        props = osr.properties
        mpp, source = _openslide_mpp(props)
        mpp, source = _resolve_mpp(mpp, source, mpp_override, default_mpp)
        backend = _OpenSlideBackend(osr)
        reader = "openslide"
        if direct:
            levels = tuple((int(w), int(h)) for w, h in osr.level_dimensions)
            downsamples = tuple(float(d) for d in osr.level_downsamples)
            backend.direct = open_direct(str(p), str(vendor), levels, downsamples, backend.read_openslide)
            if backend.direct is not None:
                reader = (
                    f"openslide+tiff-direct (levels {', '.join(map(str, sorted(backend.direct.levels)))})"
                )
        info = SlideInfo(
            path=str(p),
            vendor=str(vendor),
            dimensions=tuple(osr.dimensions),  # type: ignore[arg-type]
            level_dimensions=tuple(tuple(d) for d in osr.level_dimensions),  # type: ignore[misc]
            level_downsamples=tuple(float(d) for d in osr.level_downsamples),
            mpp=mpp,
            mpp_source=source,
            objective_power=_float_prop(props, "openslide.objective-power"),
            associated_images=tuple(sorted(osr.associated_images.keys())),
            properties={k: str(v) for k, v in props.items()},
            reader=reader,
        )
        slide = Slide(info, backend)
        _probe(slide)
        return slide
    except BaseException:
        if backend is not None:
            backend.close()
        else:
            osr.close()
        raise


def _probe(slide: Slide) -> None:
    """Read a little at open, so files that open but cannot be decoded fail here, clearly."""
    info = slide.info
    last = info.level_count - 1
    w, h = info.level_dimensions[last]
    slide.read(0, 0, last, (min(w, 64), min(h, 64)))
    cx, cy = info.dimensions[0] // 2, info.dimensions[1] // 2
    slide.read(cx, cy, 0, (min(info.dimensions[0], 16), min(info.dimensions[1], 16)))


def _resolve_mpp(
    mpp: float | None, source: str, override: float | None, default: float | None
) -> tuple[float | None, str]:
    if override is not None:
        return float(override), "setting (override)"
    if mpp is None and default is not None:
        return float(default), "setting (default for slides without mpp)"
    return mpp, source


def _open_pillow(p: Path, mpp_override: float | None, default_mpp: float | None) -> Slide:
    try:
        # Opening reads only the header, so a gigapixel claim is caught before any decode.
        image = Image.open(p)
    except Image.DecompressionBombError as exc:
        raise SlideError(
            p, f"plain image header claims too many pixels ({exc}); convert it to a tiled pyramidal TIFF"
        ) from exc
    except Exception as exc:
        raise SlideError(
            p, f"not a slide OpenSlide reads nor an image Pillow reads ({type(exc).__name__})"
        ) from exc
    w, h = image.size
    if w * h > MAX_PLAIN_PIXELS:
        image.close()
        raise SlideError(
            p,
            f"plain image header claims {w}x{h} pixels ({w * h / 1e9:.2f} Gpx), over the "
            f"{MAX_PLAIN_PIXELS / 1e6:.0f} Mpx limit for non-pyramidal images; "
            "convert it to a tiled pyramidal TIFF",
        )
    if image.mode not in PLAIN_MODES:
        image.close()
        raise SlideError(p, f"unsupported pixel format {image.mode!r}: expected 8-bit RGB brightfield")
    backend = _PillowBackend(image)
    try:
        backend.read(0, 0, 0, 1, 1)  # decode now: a truncated file fails at open, not mid-job
    except Exception as exc:
        image.close()
        raise SlideError(p, f"image data is corrupt or truncated: {exc}") from exc
    try:
        mpp, source = _resolve_mpp(None, "none", mpp_override, default_mpp)
    except BaseException:
        image.close()  # an image without a resolution is refused: nothing stays open
        raise
    info = SlideInfo(
        path=str(p),
        vendor=f"pillow-{(image.format or 'image').lower()}",
        dimensions=(w, h),
        level_dimensions=((w, h),),
        level_downsamples=(1.0,),
        mpp=mpp,
        mpp_source=source,
        objective_power=None,
        associated_images=(),
        reader="pillow",
    )
    return Slide(info, backend)


def open_slide(
    path: str | os.PathLike[str],
    *,
    mpp: float | None = None,
    default_mpp: float | None = None,
    direct: bool = True,
) -> Slide:
    """Open a whole-slide file or plain image.

    Parameters
    ----------
    path : path or URI
        A slide OpenSlide opens (SVS, generic tiled TIFF, DICOM, ...) or a PNG/JPEG image; a
        ``file://`` or ``s3://`` URI (any fsspec protocol) is read through this node's slide cache.
    mpp : float, optional
        Microns per pixel to use instead of what the file says.
    default_mpp : float, optional
        Microns per pixel only where the file says nothing.
    direct : bool, default True
        TIFF-based slides (generic TIFF, SVS) decode their tiles without OpenSlide's compositing
        where that gives the same pixels (checked at open); False reads via OpenSlide only.

    Returns
    -------
    Slide
        A context manager with ``info`` (vendor, levels, mpp) and ``read(x, y, level, size)``.

    Raises
    ------
    SlideError
        For anything that cannot be read (never another exception type), naming the file.
    """
    given = os.fspath(path)
    if not is_uri(given):
        return _open_local(Path(given), mpp, default_mpp, direct)
    from ..errors import InvalidInput

    try:
        local = local_path(given)
    except InvalidInput as exc:
        raise SlideError(given, str(exc)) from None
    slide = _open_local(local, mpp, default_mpp, direct)
    # Records and messages name the URI the user gave, not this node's cache.
    slide.info = replace(slide.info, path=given)
    return slide


def _open_local(p: Path, mpp: float | None, default_mpp: float | None, direct: bool) -> Slide:
    _check_file(p)
    try:
        slide = _open_openslide(p, mpp, default_mpp, direct)
    except SlideError:
        raise
    except Exception as exc:
        raise SlideError(p, f"unexpected error opening slide: {exc}") from exc
    if slide is not None:
        return slide
    if p.suffix.lower() not in PLAIN_SUFFIXES:
        raise SlideError(
            p,
            "not a slide format OpenSlide reads (SVS, TIFF, NDPI, MRXS, DICOM, ...) "
            "nor a plain PNG/JPEG/TIFF image",
        )
    return _open_pillow(p, mpp, default_mpp)
