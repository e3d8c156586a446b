"""Slides by URI: `file://` and object storage (`s3://`, any fsspec protocol) read through a
bounded local cache on each node.

OpenSlide reads local files only, and reads them at random, so a remote slide is copied whole
into the node's cache once (keyed by the URI and the object's version: size, ETag, modification
time) and every task on that node opens the copy. The cache is bounded: after each fetch the
least recently used copies go until it fits, never the copy just fetched.

Credentials come from the standard variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_SESSION_TOKEN, AWS_ENDPOINT_URL for S3-compatible servers) through fsspec; a URI that
carries credentials itself is refused, so they never reach a job record or a log.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from .._cache import cache_root
from ._error import SlideError

DEFAULT_CACHE_GB = 20.0


def is_uri(path: str | os.PathLike[str]) -> bool:
    """A `scheme://` location (file://, s3://, ...) rather than a plain local path."""
    return "://" in os.fspath(path)


def check_uri(uri: str) -> str:
    """Refuse URIs that carry credentials or lack a location; return the URI."""
    from ..errors import InvalidInput

    parts = urlsplit(uri)
    if parts.username or parts.password:
        raise InvalidInput(
            f"{parts.scheme}:// URI with credentials in it refused: give them through the environment "
            "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) instead"
        )
    if not parts.netloc and parts.scheme != "file":
        raise InvalidInput(f"{uri[:200]!r} names no bucket or host")
    return uri


def cache_dir() -> Path:
    """The slide cache of this node ($WBC_RAY_SLIDE_CACHE, else <wbc-ray cache>/slides)."""
    return Path(os.environ.get("WBC_RAY_SLIDE_CACHE") or cache_root() / "slides")


def cache_limit_bytes() -> int:
    """The cache's bound ($WBC_RAY_SLIDE_CACHE_GB, default 20 GB)."""
    return int(float(os.environ.get("WBC_RAY_SLIDE_CACHE_GB") or DEFAULT_CACHE_GB) * 1e9)


def local_path(path: str | os.PathLike[str]) -> Path:
    """A local file for `path`: itself if local, the file of a file:// URI, else a cached copy."""
    text = os.fspath(path)
    if not is_uri(text):
        return Path(text)
    check_uri(text)
    parts = urlsplit(text)
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    return fetch(text)


def _version(info: dict[str, Any]) -> str:
    keys = ("size", "ETag", "etag", "LastModified", "mtime", "last_modified")
    return "|".join(str(info.get(k)) for k in keys)


def fetch(uri: str, cache: Path | None = None, limit_bytes: int | None = None) -> Path:
    """The local copy of a remote object, fetched into the cache if it is not there already."""
    import fsspec

    cache = cache or cache_dir()
    limit = cache_limit_bytes() if limit_bytes is None else limit_bytes
    try:
        fs, path = fsspec.core.url_to_fs(uri)
        info = fs.info(path)
    except FileNotFoundError:
        raise SlideError(uri, "no such object") from None
    except ImportError as exc:
        raise SlideError(uri, f"no reader for this URI scheme installed ({exc})") from None
    except Exception as exc:  # network, permissions: named, credentials never in the message
        raise SlideError(uri, f"cannot reach the object: {type(exc).__name__}: {exc}") from None
    if info.get("type") == "directory":
        raise SlideError(uri, "is a folder, not a slide file")
    size = int(info.get("size") or 0)
    if limit and size > limit:
        raise SlideError(uri, f"{size / 1e9:.1f} GB is more than the slide cache holds ({limit / 1e9:.1f})")
    key = hashlib.sha256(f"{uri}\n{_version(info)}".encode()).hexdigest()[:24]
    name = Path(urlsplit(uri).path).name or "slide"
    dest = cache / key / name
    if dest.is_file() and dest.stat().st_size == size:
        os.utime(dest)  # most recently used
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Tasks on one node may fetch the same slide at once: each writes its own part file and the
    # rename makes one of them the copy, whole or not at all.
    part = dest.with_name(f".{name}.{uuid.uuid4().hex}.part")
    try:
        fs.get_file(path, str(part))
        if part.stat().st_size != size:
            raise SlideError(uri, f"fetched {part.stat().st_size} of {size} bytes")
        os.replace(part, dest)
    except SlideError:
        raise
    except Exception as exc:
        raise SlideError(uri, f"fetch failed: {type(exc).__name__}: {exc}") from None
    finally:
        part.unlink(missing_ok=True)
    evict(cache, limit, keep=dest)
    return dest


def evict(cache: Path, limit_bytes: int, keep: Path | None = None) -> list[Path]:
    """Remove the least recently used copies until the cache holds at most `limit_bytes`."""
    files = [f for f in cache.glob("*/*") if f.is_file() and not f.name.endswith(".part")]
    total = sum(f.stat().st_size for f in files)
    gone = []
    for f in sorted(files, key=lambda f: f.stat().st_mtime):
        if total <= limit_bytes:
            break
        if keep is not None and f == keep:
            continue
        size = f.stat().st_size
        f.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # another copy of the same key may be arriving
            f.parent.rmdir()
        total -= size
        gone.append(f)
    return gone
