"""Files that fail at open or at the probe leave no file handle behind (a long-running service
meets many)."""

from __future__ import annotations

import os
import shutil

import pytest
from PIL import Image

from tests.conftest import SLIDES, need_data
from wbc_ray.slides import SlideError, open_slide


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_hundreds_of_failed_opens_leave_the_open_files_flat(tmp_path) -> None:
    need_data()
    # Fails at the probe (opens, a tile does not decode), at open, as an unsupported format, as a
    # truncated file, and as an image in a pixel format the models cannot take.
    shutil.copy(SLIDES / "openslide-python" / "unreadable.svs", tmp_path / "probe.svs")
    truncated = tmp_path / "cut.svs"
    data = (SLIDES / "openslide-python" / "small.svs").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    grey16 = tmp_path / "grey16.png"
    Image.new("I;16", (64, 64)).save(grey16)
    cases = [
        tmp_path / "probe.svs",
        SLIDES / "openslide-python" / "unopenable.tiff",
        SLIDES / "pathml" / "small_dicom.dcm",
        truncated,
        grey16,
    ]
    for p in cases:  # once each first: libraries' own one-time handles are not leaks
        with pytest.raises(SlideError):
            open_slide(p)
    before = _fds()
    kept = []  # as a service keeps errors (logs, job records): their tracebacks hold the frames
    for _ in range(60):
        for p in cases:
            with pytest.raises(SlideError) as err:
                open_slide(p)
            kept.append(err.value)
    assert _fds() <= before + 2, (before, _fds())
    # And a slide that opens still closes what it opened.
    for _ in range(50):
        with open_slide(SLIDES / "openslide-python" / "boxes.tiff"):
            pass
    assert _fds() <= before + 2
