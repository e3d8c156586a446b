"""Fitting a release's domain file: the domain check on the training images' statistics (its
threshold on the validation images') and the stain references, written into the release.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import numpy as np

from .._digest import file_sha256
from ..domain import FEATURE_PX, DomainFile, fit_check, fit_references, image_stats, read_fields, write_domain
from ..manifest import read_manifest
from ..release import verify_release, write_release_record
from ._release import readme_heading

# In-domain images flagged: about 1 - QUANTILE of the validation images, by construction.
QUANTILE = 0.975
# Training images behind the stain references, half of each class (the classes' backgrounds
# differ in this data set; a reference from one class would pull the other towards it).
REFERENCE_IMAGES = 64


def fit_domain(manifest: str | os.PathLike[str], stain_default: str = "none", log: Any = print) -> DomainFile:
    """The domain file for models trained on `manifest`'s train split (images at the training
    scale: each image is one field).
    """
    train = read_manifest(manifest, "train")
    val = read_manifest(manifest, "val")
    log(f"image statistics of {len(train)} training and {len(val)} validation images ...")
    x_train = read_fields([it.path for it in train], None, FEATURE_PX)
    x_val = read_fields([it.path for it in val], None, FEATURE_PX)
    check = fit_check(
        image_stats(x_train), image_stats(x_val), QUANTILE, manifest_sha256=file_sha256(Path(manifest))
    )
    labels = np.array([it.label for it in train])
    rng = np.random.default_rng(0)
    # As many of each class as there are, up to half the references each (a lab's set may be small).
    pools = [np.flatnonzero(labels == c) for c in (0, 1)]
    pick = np.concatenate([rng.choice(p, min(len(p), REFERENCE_IMAGES // 2), replace=False) for p in pools])
    refs = fit_references(x_train[np.sort(pick)])
    log(f"domain check threshold {check.threshold:.3f} (validation quantile {QUANTILE})")
    return DomainFile(check, refs, stain_default, {"created": _now()})


def _update_readme(d: Path, info: dict[str, Any]) -> None:
    """The release's README: its heading and dates for the new version, and the report on other
    data sets (`eval/sets`, from `wbc-ray evaluate --sets`) where the release holds one.
    """
    path = d / "README.md"
    if not path.is_file():
        return
    lines = path.read_text().split("\n")
    body = "\n".join(lines[3:]).split("\n## Other data sets", 1)[0].rstrip("\n")
    head = readme_heading(info)
    sets = d / "eval" / "sets" / "sets.md"
    tail = []
    if sets.is_file():
        tail = [
            "",
            "## Other data sets",
            "",
            "Each image scored as a slide tile, with each stain normalisation "
            "(`wbc-ray evaluate --sets configs/eval_sets.yaml`; docs/domain.md says what each set is):",
            "",
            sets.read_text().rstrip("\n"),
            "",
            "![sets](eval/sets/sets.png)",
        ]
    path.write_text("\n".join(head + [body] + tail) + "\n")


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


def add_domain(
    release_dir: str | os.PathLike[str],
    manifest: str | os.PathLike[str],
    stain_default: str = "none",
    version: str | None = None,
    log: Any = print,
) -> dict[str, Any]:
    """Fit the domain file and add it to the release in `release_dir` as a new release version
    (the models unchanged), or, with `version` the release's own, to that release (the reports
    under `eval/` added since the cut recorded too); returns the new manifest.
    """
    rel = verify_release(release_dir)
    domain = fit_domain(manifest, stain_default, log)
    write_domain(release_dir, domain)
    info = {k: v for k, v in rel.info.items() if k not in {"format", "files"}}
    new_version = version or (str(int(rel.version) + 1) if rel.version.isdigit() else f"{rel.version}.1")
    if new_version != rel.version:
        changes = f"release {rel.version}'s models with the domain check and stain references (domain.json)"
        info.update(version=new_version, replaces=rel.version, created=_now(), changes=changes)
    # The same version: the release being made gets its domain file and reports (a new model set
    # whose `wbc-ray evaluate --sets` report was added after the cut); what it replaces stays.
    _update_readme(Path(release_dir), info)
    out = write_release_record(release_dir, info)
    verify_release(release_dir)
    log(f"release {new_version} in {release_dir}: domain.json added ({len(out['files'])} files)")
    return out
