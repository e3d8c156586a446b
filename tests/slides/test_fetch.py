"""Slides by URI through the bounded per-node cache, against a real S3-compatible server."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from tests.conftest import SLIDES, need_data
from wbc_ray.errors import InvalidInput
from wbc_ray.slides import SlideError, check_uri, evict, fetch, local_path, open_slide


@pytest.fixture()
def bucket(s3_server):
    import fsspec

    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    name = f"slides-{time.time_ns()}"
    fs.mkdir(name)
    return fs, name


def test_an_s3_slide_reads_as_the_local_file(bucket, tmp_path, monkeypatch) -> None:
    need_data()
    fs, name = bucket
    src = SLIDES / "pathml/small_HE.svs"
    fs.put_file(str(src), f"{name}/he/small_HE.svs")
    monkeypatch.setenv("WBC_RAY_SLIDE_CACHE", str(tmp_path / "cache"))
    uri = f"s3://{name}/he/small_HE.svs"
    with open_slide(uri) as remote, open_slide(src) as local:
        assert remote.info.path == uri  # records name the URI, not the node's cache
        assert remote.info.dimensions == local.info.dimensions and remote.info.mpp == local.info.mpp
        assert np.array_equal(remote.read(500, 700, 0, (256, 256)), local.read(500, 700, 0, (256, 256)))
    copy = local_path(uri)
    assert copy.is_relative_to(tmp_path / "cache") and copy.stat().st_size == src.stat().st_size
    # Fetched once: a second open uses the copy.
    mtime = copy.stat().st_mtime_ns
    assert fetch(uri) == copy and copy.stat().st_mtime_ns >= mtime
    # A changed object is a new version: fetched again, not served stale.
    fs.pipe(f"{name}/he/small_HE.svs", src.read_bytes()[:-1] + b"\0")
    fs.invalidate_cache()
    assert fetch(uri) != copy


def test_missing_objects_and_credentials_in_uris_are_named_errors(bucket) -> None:
    _, name = bucket
    with pytest.raises(SlideError, match="no such object"):
        open_slide(f"s3://{name}/nope.svs")
    with pytest.raises(SlideError, match="credentials"):
        open_slide(f"s3://AKIA:hunter2@{name}/x.svs")
    with pytest.raises(InvalidInput, match="credentials"):
        check_uri("s3://AKIA:hunter2@bucket/x.svs")
    assert local_path("file:///tmp/x.svs").as_posix() == "/tmp/x.svs"


def test_the_cache_is_bounded_least_recently_used_first(bucket, tmp_path) -> None:
    fs, name = bucket
    for i in range(4):
        fs.pipe(f"{name}/f{i}.bin", bytes([i]) * 1000)
    cache = tmp_path / "c"
    got = [fetch(f"s3://{name}/f{i}.bin", cache=cache, limit_bytes=10_000) for i in range(3)]
    for age, p in zip((30, 10, 20), got, strict=True):  # f1 used last, f0 first
        t = time.time() - age
        os.utime(p, (t, t))
    newest = fetch(f"s3://{name}/f3.bin", cache=cache, limit_bytes=2_500)
    left = sorted(p.name for p in cache.glob("*/*"))
    assert newest.exists() and left == ["f1.bin", "f3.bin"]
    assert evict(cache, 0, keep=newest) and [p.name for p in cache.glob("*/*")] == ["f3.bin"]
    with pytest.raises(SlideError, match="more than the slide cache holds"):
        fetch(f"s3://{name}/f0.bin", cache=cache, limit_bytes=500)
