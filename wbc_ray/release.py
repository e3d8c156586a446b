"""A model release: a folder of checkpoints with a release record (`release.json`) that lists every
file with its sha256 and size, and the release's version.

Loading from a release checks every file against the record first (once per process while the
files stay as they were), so a truncated, altered, missing or unlisted file is refused by name
before any weight is read. Nothing in a release is unpickled: weights are safetensors, the rest
JSON, Markdown and PNG.

A release folder is read-only for the app: what is built from it on a machine (int8 models for
this CPU, tile rates measured in a precision the release does not ship) goes to a per-release
folder in the user cache (`derived_dir`), so a clone stays clean and a new release starts afresh.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ._cache import cache_root
from ._digest import file_sha256
from .errors import ReleaseError

RELEASE_FILE = "release.json"
FORMAT = "wbc-ray-release/1"
# Files a loader would read as a model: one that is not in the record is refused, so a weight
# file dropped into a release cannot be served as if it were released.
_MODEL_SUFFIXES = (".safetensors", ".json")


@dataclass(frozen=True)
class Release:
    """A release whose files were all checked against its record."""

    path: Path
    version: str
    models: tuple[str, ...]
    files: dict[str, dict[str, Any]]  # relative path -> {"sha256", "size"}
    info: dict[str, Any]  # the whole release record


def is_release(models_dir: str | os.PathLike[str]) -> bool:
    """Whether `models_dir` is a release (has a record), not a plain folder of checkpoints."""
    return (Path(models_dir) / RELEASE_FILE).is_file()


def release_summary(models_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """A release's version and lineage (parent release, lab data hash, when), as results and the
    service name it; None for a plain folder of checkpoints.
    """
    if not is_release(models_dir):
        return None
    info = _read_record(Path(models_dir))
    return {"version": info.get("version"), "created": info.get("created"), "lineage": info.get("lineage")}


def _read_record(models_dir: Path) -> dict[str, Any]:
    path = models_dir / RELEASE_FILE
    try:
        info = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReleaseError(f"{path}: unreadable release record ({exc})") from exc
    if not isinstance(info, dict) or info.get("format") != FORMAT or not isinstance(info.get("files"), dict):
        raise ReleaseError(f"{path}: not a {FORMAT} release record")
    return info


def _safe_relpath(models_dir: Path, rel: str) -> Path:
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise ReleaseError(f"{models_dir / RELEASE_FILE}: file entry {rel!r} points outside the release")
    return models_dir.joinpath(*p.parts)


def _stat_key(models_dir: Path, files: dict[str, Any]) -> tuple[Any, ...]:
    """What must stay unchanged for an earlier check to still hold (path, size, mtime of each)."""
    key: list[Any] = []
    for rel in sorted(files):
        try:
            st = _safe_relpath(models_dir, rel).stat()
            key.append((rel, st.st_size, st.st_mtime_ns, st.st_ino))
        except OSError:
            key.append((rel, None))
    return tuple(key)


_checked: dict[tuple[Any, ...], Release] = {}
_lock = threading.Lock()


def verify_release(models_dir: str | os.PathLike[str]) -> Release:
    """The release in `models_dir`, every file checked against its release record; ReleaseError naming
    the first file that is missing, of another size, altered, or a model file not listed.
    """
    d = Path(models_dir).resolve()
    info = _read_record(d)
    files: dict[str, dict[str, Any]] = info["files"]
    mstat = (d / RELEASE_FILE).stat()
    key = (str(d), mstat.st_size, mstat.st_mtime_ns, _stat_key(d, files), _unlisted(d, files))
    with _lock:
        if key in _checked:
            return _checked[key]
    for rel, entry in sorted(files.items()):
        path = _safe_relpath(d, rel)
        if not path.is_file():
            raise ReleaseError(
                f"{path}: missing from the release {info.get('version')} (listed in {RELEASE_FILE})"
            )
        size = path.stat().st_size
        if size != entry.get("size"):
            raise ReleaseError(
                f"{path}: {size} bytes, but release {info.get('version')} lists {entry.get('size')}: "
                "cut short or replaced (restore it, e.g. `git checkout -- weights`)"
            )
        if file_sha256(path) != entry.get("sha256"):
            raise ReleaseError(
                f"{path}: sha256 differs from release {info.get('version')}'s record: the file was "
                "altered (restore it, e.g. `git checkout -- weights`)"
            )
    if key[-1]:
        raise ReleaseError(
            f"{d / key[-1][0]}: a model file that release {info.get('version')} does not list; "
            "remove it, or cut a new release (`wbc-ray release`)"
        )
    models = info.get("models")
    if not isinstance(models, dict) or not models:
        raise ReleaseError(f"{d / RELEASE_FILE}: lists no models")
    rel_obj = Release(d, str(info.get("version")), tuple(sorted(models)), files, info)
    with _lock:
        _checked[key] = rel_obj
    return rel_obj


def _unlisted(d: Path, files: dict[str, Any]) -> tuple[str, ...]:
    return tuple(
        sorted(
            p.name
            for p in d.iterdir()
            if p.is_file() and p.suffix in _MODEL_SUFFIXES and p.name != RELEASE_FILE and p.name not in files
        )
    )


def derived_dir(models_dir: str | os.PathLike[str]) -> Path:
    """Where what this machine builds from the models goes (int8 models, tile rates measured
    here): the folder itself for a plain checkpoint folder; for a release, a folder of its own in
    the user cache, named for the release's version and record (an edited release never reuses
    what was built from another).
    """
    d = Path(models_dir)
    if not is_release(d):
        return d
    raw = (d / RELEASE_FILE).read_bytes()
    info = _read_record(d)
    out = cache_root() / "releases" / f"{info.get('version')}-{hashlib.sha256(raw).hexdigest()[:12]}"
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_release_record(models_dir: str | os.PathLike[str], info: dict[str, Any]) -> dict[str, Any]:
    """Write `release.json` listing every file under `models_dir` (sha256, size) with `info`
    (which must hold "version" and "models"); returns the record.
    """
    d = Path(models_dir)
    files = {
        p.relative_to(d).as_posix(): {"sha256": file_sha256(p), "size": p.stat().st_size}
        for p in sorted(d.rglob("*"))
        if p.is_file() and p.name != RELEASE_FILE
    }
    record = {"format": FORMAT, **info, "files": files}
    tmp = d / (RELEASE_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, d / RELEASE_FILE)
    return record
