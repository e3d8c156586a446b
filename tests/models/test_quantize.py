"""int8 serving precision: ranges measured on real images, stored safely, refused when stale."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import MANIFEST
from wbc_ray.manifest import read_manifest
from wbc_ray.models import INT8_BUCKETS, Classifier, Int8Graph, Int8Unavailable, compiled_cache, int8_path
from wbc_ray.training import load_images, quantize_models
from wbc_ray.training._presets import QUICK_INT8_SCHEMES

# InceptionV3: even the quick preset (the CI models) spreads its outputs enough for agreement
# to mean something; an undertrained MobileNet answers nearly the same for every image, and
# int8 rounding then flips its decisions at random (measured: 70% agreement).
NAME = "inception_v3"
SMALL = "mobilenet"


@pytest.fixture(scope="module")
def int8_models(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("int8")
    for suffix in (".json", ".safetensors"):
        shutil.copy(models_dir / f"{NAME}{suffix}", out / f"{NAME}{suffix}")
    # 128 calibration images and one scheme, as the quick preset's own ranges (`ensure_models`):
    # the same ranges give the same compile key, so the compiled packages are shared, not built
    # twice (~50 s). The choice between schemes runs in tests/training (the kept-ranges test).
    (report,) = quantize_models(out, MANIFEST, [NAME], images=128, schemes=QUICK_INT8_SCHEMES)
    assert report.path == int8_path(out, NAME) and report.path.exists()
    assert report.calibration_images == 128 and report.test_images > 100
    assert report.agreement >= 0.9
    return out


def test_int8_classifier_tracks_fp32(int8_models: Path) -> None:
    items = read_manifest(MANIFEST, "test")[:64]
    fp32 = Classifier.load(int8_models, NAME, device="cpu", precision="fp32")
    int8 = Classifier.load(int8_models, NAME, device="cpu", precision="int8")
    assert int8.precision == "int8"
    x = load_images(items, fp32.card.input_size)[0].numpy()
    p, q = fp32.predict(x), int8.predict(x)
    assert q.shape == p.shape and np.allclose(q.sum(1), 1, atol=1e-5)
    # The malignant margin moves with fp32's from image to image, not just on average.
    a, b = fp32.logits(x).numpy(), int8.logits(x).numpy()
    assert np.corrcoef(a[:, 1] - a[:, 0], b[:, 1] - b[:, 0])[0, 1] > 0.9
    assert (p.argmax(1) == q.argmax(1)).mean() >= 0.9


@pytest.fixture(scope="module")
def small_int8(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MobileNet with the int8 ranges `models_dir` already has (measured if it has none): the
    model that compiles fastest (~20 s a bucket against ~45 for InceptionV3), for the tests that
    compile again."""
    out = tmp_path_factory.mktemp("small_int8")
    for suffix in (".json", ".safetensors", ".int8.safetensors"):
        src = models_dir / f"{SMALL}{suffix}"
        if src.exists():
            shutil.copy(src, out / src.name)
    if not int8_path(out, SMALL).exists():
        quantize_models(out, MANIFEST, [SMALL], images=128)
    return out


def test_int8_graph_is_compiled_and_batch_size_free(small_int8: Path) -> None:
    """Inductor compiles the graph per bucket, once per machine (the second load, at another
    thread count, finds the packages; a rebuild, buckets side by side, gives the same answers);
    cutting and padding batches must not change a tile's answer (batch 1, a bucket exactly,
    between buckets, several buckets plus a rest)."""
    int8 = Classifier.load(small_int8, SMALL, device="cpu", precision="int8")
    assert isinstance(int8.model, Int8Graph) and int8.model.compiled
    x = load_images(read_manifest(MANIFEST, "test")[:45], int8.card.input_size)[0].numpy()
    whole = int8.logits(x).numpy()
    packages = int8.model.packages
    assert len(packages) == len(INT8_BUCKETS) and all(p.parent == compiled_cache() for p in packages)
    before = [p.stat().st_mtime_ns for p in packages]
    # A Serve replica runs one thread; the packages compiled here (all cores) still serve it.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        again = Classifier.load(small_int8, SMALL, device="cpu", precision="int8")
        np.testing.assert_allclose(again.logits(x[:9]).numpy(), whole[:9], atol=1e-4)
    finally:
        torch.set_num_threads(threads)
    assert again.model.compiled and again.model.packages == packages
    assert again.model.graph is None  # found compiled: nothing traced or converted
    assert [p.stat().st_mtime_ns for p in packages] == before  # loaded, not compiled again
    # Damaged packages (disk full, a killed compile) are compiled afresh, not trusted or fatal;
    # both buckets at once, side by side (a child process compiles one where there are 2 cores).
    for p in packages:
        p.write_bytes(b"not a package")
    fresh = Classifier.load(small_int8, SMALL, device="cpu", precision="int8")
    assert fresh.model.compiled and all(p.stat().st_size > 1000 for p in packages)
    assert not list(compiled_cache().glob("*.tmp.pt2"))
    np.testing.assert_allclose(fresh.logits(x).numpy(), whole, atol=1e-4)
    assert whole.shape == (45, 2)
    for n in (1, INT8_BUCKETS[0], INT8_BUCKETS[0] + 1, 45):
        np.testing.assert_allclose(int8.logits(x[:n]).numpy(), whole[:n], atol=1e-4)


def test_stale_or_missing_ranges_are_refused(int8_models: Path, tmp_path: Path) -> None:
    stale = tmp_path / "stale"
    shutil.copytree(int8_models, stale)
    card = json.loads((stale / f"{NAME}.json").read_text())
    card["version"] = "retrained"
    (stale / f"{NAME}.json").write_text(json.dumps(card))
    with pytest.raises(Int8Unavailable, match="measured for weights"):
        Classifier.load(stale, NAME, device="cpu", precision="int8")
    # Ranges stored for another graph format (the eager torch.ao int8 of earlier versions).
    from safetensors.torch import load_file, save_file

    ranges = load_file(int8_path(stale, NAME))
    old = {"version": "retrained", "format": "x86-v1", "scheme": "minmax"}
    save_file(ranges, int8_path(stale, NAME), metadata=old)
    with pytest.raises(Int8Unavailable, match="format 'x86-v1'"):
        Classifier.load(stale, NAME, device="cpu", precision="int8")
    int8_path(stale, NAME).unlink()
    with pytest.raises(Int8Unavailable, match="wbc-ray quantize"):
        Classifier.load(stale, NAME, device="cpu", precision="int8")


def test_uncompilable_int8_still_serves_and_says_so(
    int8_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No usable compile cache (here: a file where the folder should be): the graph runs
    uncompiled, gives the same answers, and the served note says why it is slow."""
    fast = Classifier.load(int8_models, NAME, device="cpu", precision="int8")
    blocked = tmp_path / "not_a_dir"
    blocked.write_text("")
    monkeypatch.setenv("WBC_RAY_COMPILE_CACHE", str(blocked / "int8"))
    clf, note = Classifier.load_served(int8_models, NAME, "int8", device="cpu")
    assert clf.precision == "int8" and not clf.model.compiled and "could not be compiled" in note
    assert fast.model.compiled
    x = load_images(read_manifest(MANIFEST, "test")[:16], clf.card.input_size)[0].numpy()
    assert (clf.predict(x).argmax(1) == fast.predict(x).argmax(1)).mean() >= 0.9


def test_compiled_cache_drops_least_recently_used_graphs(tmp_path: Path) -> None:
    import fcntl
    import os

    from wbc_ray.models._quantize import prune_cache

    for age, key in enumerate(("c0ffee", "beef01", "abcd02")):  # newest first
        for n in INT8_BUCKETS:
            f = tmp_path / f"{key}-b{n}.pt2"
            f.write_bytes(b"x" * 1000)
            os.utime(f, (1e9 - age * 1000, 1e9 - age * 1000))
        (tmp_path / f"{key}.lock").touch()
        os.utime(tmp_path / f"{key}.lock", (1e9 - age * 1000, 1e9 - age * 1000))
    per_key = 1000 * len(INT8_BUCKETS)
    # Over budget by one graph: the oldest goes, whole (packages and lock), the rest stay.
    assert prune_cache(tmp_path, 2 * per_key) == ["abcd02"]
    assert not list(tmp_path.glob("abcd02*")) and len(list(tmp_path.glob("beef01*"))) == 3
    # Neither the graph being compiled (`keep`) nor one another process holds goes.
    with open(tmp_path / "beef01.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert prune_cache(tmp_path, 0, keep="c0ffee") == []
    assert prune_cache(tmp_path, 0, keep="c0ffee") == ["beef01"]
    assert sorted(p.name for p in tmp_path.iterdir())[0].startswith("c0ffee")


def test_compile_key_follows_the_ranges_not_the_file_bytes(int8_models: Path, tmp_path: Path) -> None:
    """safetensors writes its metadata in hash-map order, different per process: the same ranges
    written twice must find the same compiled packages, and other ranges must not."""
    import struct

    from safetensors.torch import load_file

    from wbc_ray.models import save_int8
    from wbc_ray.models._quantize import _compile_key, _header

    def key(path: Path) -> str:  # as `load_int8` reads a ranges file
        return _compile_key(load_file(str(path)), _header(path), "v", 80)

    src = int8_path(int8_models, NAME)
    raw = src.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    header["__metadata__"] = dict(reversed(list(header["__metadata__"].items())))
    text = json.dumps(header, separators=(",", ":")).encode().ljust(n)
    assert len(text) == n and text != raw[8 : 8 + n]
    same = tmp_path / "same.safetensors"
    same.write_bytes(raw[:8] + text + raw[8 + n :])
    assert key(same) == key(src)
    ranges = load_file(str(src))
    first = sorted(ranges)[0]
    ranges[first] = ranges[first] * 1.01
    other = tmp_path / "other.safetensors"
    meta = header["__metadata__"]
    save_int8(ranges, other, meta["version"], meta["scheme"])
    assert key(other) != key(src)


def test_a_bucket_whose_child_compile_fails_is_compiled_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The extra buckets compile in child processes; one that fails (here its saved program is
    unreadable, as after a full disk) is compiled in this process afterwards, with a warning."""
    import logging
    import os

    from wbc_ray.models import _aot

    nn = torch.nn
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)).eval()
    programs = {tmp_path / f"b{n}.pt2": torch.export.export(net, (torch.zeros(n, 3, 8, 8),)) for n in (2, 4)}
    monkeypatch.setattr(os, "cpu_count", lambda: 2)  # a child even on a one-core machine
    monkeypatch.setattr(torch.export, "save", lambda program, f, *a, **k: Path(f).write_bytes(b"cut short"))
    with caplog.at_level(logging.WARNING, logger=_aot.__name__):
        _aot.compile_programs(programs)
    assert "b4.pt2 in a child process failed, compiling here" in caplog.text
    for package in programs:
        n = int(package.stem[1:])
        x = torch.randn(n, 3, 8, 8)
        run = torch._inductor.aoti_load_package(str(package))
        torch.testing.assert_close(run(x), net(x), atol=1e-4, rtol=1e-4)
