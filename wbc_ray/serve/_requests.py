"""Checks and conversions of what clients send, kept apart from the routes: names, paths, patches."""

import io
import os
import re
import unicodedata
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import HTTPException
from pydantic import BaseModel, Field, field_validator

from ..config import MAIN_RELEASE, RELEASE_NAME
from ..ensemble import Fusion

MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096
MAX_PATH_CHARS = MAX_PATH_BYTES // 4  # so any text within it fits the bytes limit
MAX_PATCH_PIXELS = 64_000_000


class PathSubmission(BaseModel):
    """A slide already on the server, by its absolute path under the configured slide folders."""

    # What the schema can say of a path, it says (absolute, no NUL, not a URI, bounded), so a
    # request the schema allows is refused only for what no schema can know: where the file is.
    path: str = Field(
        min_length=1,
        max_length=MAX_PATH_CHARS,
        json_schema_extra={"pattern": "^/[^\\u0000]*$"},
        description="absolute path of the slide, under the service's slide folders",
    )
    fusion: Fusion | None = None
    # Stain normalisation for this analysis (default: the service's `domain.stain`).
    stain: Literal["release", "none", "macenko", "reinhard"] | None = None
    release: str | None = Field(
        None,
        max_length=32,
        pattern=f"^{RELEASE_NAME.pattern}$",
        description="the release to analyse with (GET /models lists the service's; default: main)",
    )

    @field_validator("path")
    @classmethod
    def _absolute(cls, path: str) -> str:
        if "\x00" in path:
            raise ValueError("path contains a NUL byte")
        if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", path):
            raise ValueError(
                f"URI scheme not supported here: {path.split('://')[0][:20]!r}; "
                "give a path under the configured slide folders"
            )
        if not path.startswith("/"):
            raise ValueError(
                f"path must be absolute (the server's working folder is not yours): {path[:200]!r}"
            )
        return path


def check_name(name: str) -> str:
    """A client-supplied file name, refused when it could mean a path or break logs."""
    if not name:
        raise HTTPException(400, "upload has no file name")
    if "\x00" in name:
        raise HTTPException(400, "file name contains a NUL byte")
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        raise HTTPException(400, "file name contains control characters")
    if "/" in name or "\\" in name or name in {".", ".."}:
        raise HTTPException(400, f"file name must not contain a path: {name[:80]!r}")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise HTTPException(400, f"file name is longer than {MAX_NAME_BYTES} bytes")
    return name


def allowed_path(path: str, roots: list[Path]) -> Path:
    """The real path of a submitted slide, refused unless it lies under one of `roots` (after
    links are followed, so a link cannot lead out of them).
    """
    if "\x00" in path:
        raise HTTPException(400, "path contains a NUL byte")
    if len(path.encode("utf-8")) > MAX_PATH_BYTES:
        raise HTTPException(400, f"path is longer than {MAX_PATH_BYTES} bytes")
    if "://" in path:
        raise HTTPException(
            422,
            f"URI scheme not supported here: {path.split('://')[0][:20]!r}; "
            "give a path under the configured slide folders",
        )
    p = Path(path)
    if p.is_absolute() and not any(Path(os.path.normpath(p)).is_relative_to(r) for r in roots):
        # Outside, said before the disk is looked at: a missing and an existing file outside
        # the folders get the same answer.
        allowed = ", ".join(str(r) for r in roots)
        raise HTTPException(
            403,
            f"{path[:200]!r} is outside the slide folders this server may read: give a path under "
            f"{allowed} (or upload the file)",
        )
    if not p.is_absolute():
        raise HTTPException(
            400, f"path must be absolute (the server's working folder is not yours): {path[:200]!r}"
        )
    try:
        real = p.resolve(strict=True)
    except (FileNotFoundError, RuntimeError):
        raise HTTPException(404, f"slide not found: {path[:200]!r}") from None
    except OSError as exc:
        raise HTTPException(400, f"cannot use path {path[:200]!r}: {exc.strerror}") from None
    if not any(real.is_relative_to(r) for r in roots):
        allowed = ", ".join(str(r) for r in roots)
        raise HTTPException(
            403,
            f"{path[:200]!r} is outside the slide folders this server may read: give a path under "
            f"{allowed} (or upload the file)",
        )
    return real


def decode_patch(name: str, data: bytes, size: int, mpp: float | None = None) -> np.ndarray:
    """An uploaded patch as one field of the models, an RGB uint8 array of `size` x `size`
    (`domain.to_field`: rescaled from `mpp` as slide tiles are, or taken whole without it);
    anything else is a 413 or 422 naming the file.
    """
    from PIL import Image, UnidentifiedImageError

    from ..domain import to_field

    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_PATCH_PIXELS:
                raise HTTPException(413, f"{name}: {im.width}x{im.height} is too large for a patch")
            img = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise HTTPException(422, f"{name}: not an image ({type(exc).__name__})") from None
    return to_field(img, mpp, size)


def score_response(
    names: list[str],
    res: dict[str, np.ndarray],
    model_names: list[str],
    fusion: str,
    threshold: float,
    screened: Any = None,
    screening: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The /score answer: per patch, the fused score, its call and each model's probabilities;
    with `screened` (a domain.Screened), each patch's quality-control finding and its distance
    from the training images (`out_of_range` beyond the release's threshold).
    """
    from ..domain import REASONS

    def screen_of(i: int) -> dict[str, Any]:
        if screened is None or screening is None:
            return {}
        d = float(screened.domain[i])
        limit = screening.get("threshold")
        return {
            "qc": REASONS[int(screened.qc[i])],
            "domain": None if d != d else round(d, 4),
            "out_of_range": None if limit is None or d != d else bool(d > limit),
        }

    return {
        "fusion": fusion,
        **(screening or {}),
        "patches": [
            {
                "name": n,
                **screen_of(i),
                "fused": float(res["fused"][i]),
                "call": "malignant" if res["fused"][i] >= threshold else "benign",
                "models": {
                    m: {"benign": float(res["probs"][i, j, 0]), "malignant": float(res["probs"][i, j, 1])}
                    for j, m in enumerate(model_names)
                },
            }
            for i, n in enumerate(names)
        ],
    }


def release_app_name(app_name: str, release: str) -> str:
    """The Serve application that serves a lab's release beside the main app `app_name`."""
    return f"{app_name}--{release}"


def check_release(release: str | None, known: list[str]) -> str | None:
    """The release a submission names (None: the main one), refused (422) naming the ones held."""
    if release is None or release == MAIN_RELEASE:
        return None
    if release not in known:
        held = ", ".join([MAIN_RELEASE, *known])
        raise HTTPException(422, f"no release {release[:40]!r} in this service; it holds: {held}")
    return release
