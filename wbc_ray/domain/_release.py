"""The release's domain file (`domain.json`): the domain check and the stain references."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ReleaseError
from ._check import DomainCheck

DOMAIN_FILE = "domain.json"
FORMAT = "wbc-ray-domain/1"


@dataclass(frozen=True)
class DomainFile:
    """What a release knows of its training images' domain."""

    check: DomainCheck
    stain_references: dict[str, dict[str, list[Any]]]
    stain_default: str = "none"  # the normalisation the release's measurements support
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document written to the release."""
        return {
            "format": FORMAT,
            "check": self.check.to_dict(),
            "stain": {"default": self.stain_default, "references": self.stain_references},
            **self.info,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DomainFile:
        """The domain file `to_dict` wrote; ValueError/KeyError when it is not one."""
        if d.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} document")
        stain = d["stain"]
        info = {k: v for k, v in d.items() if k not in {"format", "check", "stain"}}
        return cls(DomainCheck.from_dict(d["check"]), stain["references"], stain["default"], info)


def load_domain(models_dir: str | os.PathLike[str]) -> DomainFile | None:
    """The release's domain file, or None when it has none (releases before it, checkpoint
    folders); ReleaseError naming the file when it cannot be read.
    """
    path = Path(models_dir) / DOMAIN_FILE
    if not path.is_file():
        return None
    try:
        return DomainFile.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ReleaseError(f"{path}: unreadable domain file ({exc})") from exc


def write_domain(models_dir: str | os.PathLike[str], domain: DomainFile) -> Path:
    """Write `domain.json` into a release folder (the caller rewrites the manifest)."""
    path = Path(models_dir) / DOMAIN_FILE
    path.write_text(json.dumps(domain.to_dict(), indent=1) + "\n")
    return path
