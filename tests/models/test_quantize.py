"""int8 serving precision: an OpenVINO model quantized on real images, stored safely, refused when
stale or damaged, the same answer for a tile whatever the batch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import MANIFEST
from wbc_ray.lifecycle import load_images, quantize_models
from wbc_ray.manifest import read_manifest
from wbc_ray.models import Classifier, Int8Model, Int8Unavailable, int8_id, int8_path

# The released InceptionV3 (quantized here afresh, in a plain checkpoint folder).
NAME = "inception_v3"


@pytest.fixture(scope="module")
def int8_models(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("int8")
    for suffix in (".json", ".safetensors"):
        shutil.copy(models_dir / f"{NAME}{suffix}", out / f"{NAME}{suffix}")
    (report,) = quantize_models(out, MANIFEST, [NAME], images=128)
    assert report.path == int8_path(out, NAME) and report.path.exists()
    assert report.path.with_suffix(".bin").stat().st_size > 100_000
    assert report.calibration_images == 128 and report.test_images > 100
    assert report.agreement >= 0.9
    assert not list(out.glob(".*tmp*"))  # written under temporary names, then moved into place
    return out


def test_int8_classifier_tracks_fp32(int8_models: Path) -> None:
    items = read_manifest(MANIFEST, "test")[:64]
    fp32 = Classifier.load(int8_models, NAME, device="cpu", precision="fp32")
    int8 = Classifier.load(int8_models, NAME, device="cpu", precision="int8")
    assert int8.precision == "int8" and isinstance(int8.model, Int8Model)
    x = load_images(items, fp32.card.input_size)[0].numpy()
    p, q = fp32.predict(x), int8.predict(x)
    assert q.shape == p.shape and np.allclose(q.sum(1), 1, atol=1e-5)
    assert not np.array_equal(p, q)  # really a different computation
    # The malignant margin moves with fp32's from image to image, not just on average.
    a, b = fp32.logits(x).numpy(), int8.logits(x).numpy()
    assert np.corrcoef(a[:, 1] - a[:, 0], b[:, 1] - b[:, 0])[0, 1] > 0.9
    assert (p.argmax(1) == q.argmax(1)).mean() >= 0.9


def test_int8_answers_do_not_depend_on_the_batch(int8_models: Path) -> None:
    """A tile scored alone (`/score`) and inside a slide's batch must get the same answer, bit for
    bit: the resume and "three at once = one at a time" checks compare digests. Also on one
    thread (a Serve replica) and from another thread (the replica's compute thread)."""
    from concurrent.futures import ThreadPoolExecutor

    int8 = Classifier.load(int8_models, NAME, device="cpu", precision="int8")
    x = load_images(read_manifest(MANIFEST, "test")[:45], int8.card.input_size)[0].numpy()
    whole = int8.logits(x).numpy()
    assert whole.shape == (45, 2)
    for n in (1, 7, 32, 33):
        np.testing.assert_array_equal(int8.logits(x[:n]).numpy(), whole[:n])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = Classifier.load(int8_models, NAME, device="cpu", precision="int8")
    finally:
        torch.set_num_threads(threads)
    with ThreadPoolExecutor(1) as pool:
        got = pool.submit(lambda: one.logits(x[:9]).numpy()).result()
    np.testing.assert_allclose(got, whole[:9], atol=1e-3)


def test_stale_damaged_or_missing_int8_models_are_refused(int8_models: Path, tmp_path: Path) -> None:
    stale = tmp_path / "stale"
    shutil.copytree(int8_models, stale)
    card = json.loads((stale / f"{NAME}.json").read_text())
    version = card["version"]
    assert int8_id(int8_path(stale, NAME), version)
    card["version"] = "retrained"
    (stale / f"{NAME}.json").write_text(json.dumps(card))
    with pytest.raises(Int8Unavailable, match="quantized for weights"):
        Classifier.load(stale, NAME, device="cpu", precision="int8")
    assert int8_id(int8_path(stale, NAME), "retrained") is None
    # Weights cut short (a full disk, a partial copy): refused with the file named, not a crash.
    xml = int8_path(stale, NAME)
    blob = xml.with_suffix(".bin")
    blob.write_bytes(blob.read_bytes()[: blob.stat().st_size // 2])
    with pytest.raises(Int8Unavailable, match=r"inception_v3\.int8\.xml"):
        Classifier.load(stale, NAME, device="cpu", precision="int8")
    # The description itself garbled (the old safetensors ranges renamed, say).
    xml.write_bytes(b"not a model description")
    with pytest.raises(Int8Unavailable, match="not a readable OpenVINO model"):
        Classifier.load(stale, NAME, device="cpu", precision="int8")
    xml.unlink()
    with pytest.raises(Int8Unavailable, match="wbc-ray quantize"):
        Classifier.load(stale, NAME, device="cpu", precision="int8")


def test_an_unusable_int8_model_still_serves_and_says_so(int8_models: Path, tmp_path: Path) -> None:
    """A Serve replica asked for int8 with a damaged int8 model serves its float weights instead,
    and the note it logs (and /models shows) says why."""
    broken = tmp_path / "broken"
    shutil.copytree(int8_models, broken)
    int8_path(broken, NAME).with_suffix(".bin").write_bytes(b"")
    clf, note = Classifier.load_served(broken, NAME, "int8", device="cpu")
    assert clf.precision == Classifier.default_precision(torch.device("cpu"))
    assert "int8 unavailable" in note and "inception_v3.int8.xml" in note
    fine, none = Classifier.load_served(int8_models, NAME, "int8", device="cpu")
    assert fine.precision == "int8" and none == ""
    assert fine.precision_id == f"int8:{fine.model.id}" and len(fine.model.id) == 12


def test_an_int8_model_switches_thread_counts_and_back(int8_models: Path) -> None:
    """A replica widens its steps in a slide's tail (`tail_threads`): an int8 model keeps one
    compiled model per thread count, answers alike on both, and the same bits on its own again."""
    int8 = Classifier.load(int8_models, NAME, device="cpu", precision="int8")
    model = int8.model
    x = load_images(read_manifest(MANIFEST, "test")[:16], int8.card.input_size)[0].numpy()
    narrow = int8.logits(x).numpy()
    model.use_threads(model.threads + 1)
    assert model.compiled is not model._compiled[model.threads]
    wide = int8.logits(x).numpy()
    np.testing.assert_allclose(wide, narrow, atol=1e-3)
    model.use_threads(model.threads)
    np.testing.assert_array_equal(int8.logits(x).numpy(), narrow)
