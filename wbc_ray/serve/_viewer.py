"""The review workspace's files: the page (`viewer/`) and OpenSeadragon, a pinned release fetched
once from the npm registry by the project's setup (`make setup`, which calls `main`) and checked
against the registry's published integrity hash. The service serves both itself: the viewer
needs no CDN and works offline.
"""

from __future__ import annotations

import base64
import hashlib
import io
import shutil
import sys
import tarfile
import urllib.request
from pathlib import Path

from ..errors import SetupError

VIEWER_DIR = Path(__file__).resolve().parent / "viewer"
OSD_VERSION = "6.1.1"
OSD_TARBALL = f"https://registry.npmjs.org/openseadragon/-/openseadragon-{OSD_VERSION}.tgz"
# The npm registry's `dist.integrity` of that release (sha512 of the tarball).
OSD_INTEGRITY = (
    "sha512-g4iKe2q8B642SaBT3+x4ZF3/8b1TxPPydyjmtrOLgDrlYWMKd9ZXM+1Cb/xa9DVySkvs/7l6HR1nHKfD5F3Tsw=="
)
OSD_DIR = VIEWER_DIR / "vendor" / "openseadragon"
# What the page needs of the package: the minified script, its button images, its licence.
_KEEP = ("build/openseadragon/openseadragon.min.js", "build/openseadragon/images/", "LICENSE.txt")


def viewer_ready() -> bool:
    """Whether OpenSeadragon has been fetched (the page says how to fetch it where not)."""
    stamp = OSD_DIR / "VERSION"
    return (
        (OSD_DIR / "openseadragon.min.js").is_file()
        and stamp.is_file()
        and stamp.read_text().strip() == OSD_VERSION
    )


def fetch_openseadragon(tarball: bytes | None = None) -> Path:
    """Fetch the pinned OpenSeadragon (or unpack `tarball`), check its hash, install it in the
    viewer's folder; the folder.
    """
    if tarball is None:
        try:
            with urllib.request.urlopen(OSD_TARBALL, timeout=60) as r:
                tarball = r.read()
        except OSError as exc:
            raise SetupError(f"cannot fetch OpenSeadragon {OSD_VERSION} from {OSD_TARBALL}: {exc}") from None
    digest = "sha512-" + base64.b64encode(hashlib.sha512(tarball).digest()).decode()
    if digest != OSD_INTEGRITY:
        raise SetupError(f"OpenSeadragon {OSD_VERSION}: the tarball's hash {digest} is not the published one")
    tmp = OSD_DIR.with_name(".openseadragon.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        for m in tar.getmembers():
            rel = m.name.removeprefix("package/")
            if not m.isfile() or not any(rel == k or (k.endswith("/") and rel.startswith(k)) for k in _KEEP):
                continue
            dest = tmp / rel.removeprefix("build/openseadragon/")
            if ".." in Path(rel).parts:
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(m)
            assert src is not None
            dest.write_bytes(src.read())
    (tmp / "VERSION").write_text(OSD_VERSION + "\n")
    shutil.rmtree(OSD_DIR, ignore_errors=True)
    tmp.rename(OSD_DIR)
    return OSD_DIR


def main(argv: list[str] | None = None) -> None:
    """Fetch OpenSeadragon unless it is there (`--force`: fetch it again)."""
    args = sys.argv[1:] if argv is None else argv
    if viewer_ready() and "--force" not in args:
        print(f"OpenSeadragon {OSD_VERSION} already in {OSD_DIR}")
    else:
        print(f"OpenSeadragon {OSD_VERSION} installed in {fetch_openseadragon()}")
