"""The model release in weights/: every file listed and checked, damage refused by name, no pickle."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import RELEASE
from wbc_ray.errors import ReleaseError
from wbc_ray.models import available, list_models, load_checkpoint
from wbc_ray.release import RELEASE_FILE, derived_dir, verify_release

# The limit the project keeps a release under (git history keeps every one).
MAX_RELEASE_BYTES = 120e6


@pytest.fixture()
def copy(tmp_path: Path) -> Path:
    d = tmp_path / "release"
    shutil.copytree(RELEASE, d)
    return d


def test_the_release_lists_every_file_it_holds_and_all_three_models() -> None:
    rel = verify_release(RELEASE)
    on_disk = {p.relative_to(RELEASE).as_posix() for p in RELEASE.rglob("*") if p.is_file()}
    assert on_disk - {RELEASE_FILE} == set(rel.files)
    assert list(rel.models) == list_models() == available(RELEASE)
    assert sum(e["size"] for e in rel.files.values()) <= MAX_RELEASE_BYTES
    # Each model: weights, a card for code and one for people, with the release's own figures.
    for name in rel.models:
        assert {f"{name}.safetensors", f"{name}.json", f"{name}.md"} <= set(rel.files)
        card = json.loads((RELEASE / f"{name}.json").read_text())
        assert card["version"] == rel.info["models"][name]["version"]
        assert card["release"]["fp16_test_agreement"] >= 0.995
        t = card["training"]
        assert t["commit"] and t["hardware"]["cpu"] and t["epochs_run"] > 0 and "initialised_from" in t
    for key in ("val", "test", "test_grayscale"):
        for f in ("metrics.json", "metrics.md", "roc.png", "confusion.png", "predictions.csv"):
            assert f"eval/{key}/{f}" in rel.files
    assert "tile_rates.json" in rel.files


def test_the_release_is_tracked_by_git_as_it_is_listed() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "weights"], cwd=RELEASE.parent, capture_output=True, text=True
    ).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    listed = {f"weights/{p}" for p in verify_release(RELEASE).files} | {f"weights/{RELEASE_FILE}"}
    assert set(tracked) == listed


@pytest.mark.parametrize("damage", ["truncated", "altered", "missing", "unlisted"])
def test_a_damaged_release_is_refused_naming_the_file(copy: Path, damage: str) -> None:
    target = copy / "xception.safetensors"
    if damage == "truncated":
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
        why, named = "cut short", target
    elif damage == "altered":
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0x01  # one bit, same size
        target.write_bytes(bytes(data))
        why, named = "altered", target
    elif damage == "missing":
        named = copy / "mobilenet.json"
        named.unlink()
        why = "missing"
    else:
        named = copy / "resnet.safetensors"
        shutil.copy2(target, named)
        why = "does not list"
    # Whichever model is asked for: the release is checked whole before any weight is read.
    for call in (lambda: available(copy), lambda: load_checkpoint(copy, "inception_v3")):
        with pytest.raises(ReleaseError, match=why) as err:
            call()
        assert str(named) in str(err.value)
    r = subprocess.run(
        [sys.executable, "-m", "wbc_ray.cli", "release", "--verify", "--out", str(copy)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and str(named) in r.stderr and "Traceback" not in r.stderr


def test_a_manifest_entry_outside_the_release_is_refused(copy: Path) -> None:
    m = json.loads((copy / RELEASE_FILE).read_text())
    m["files"]["../outside.json"] = {"sha256": "0" * 64, "size": 1}
    (copy / RELEASE_FILE).write_text(json.dumps(m))
    with pytest.raises(ReleaseError, match="outside the release"):
        verify_release(copy)


def test_loading_the_release_unpickles_nothing(monkeypatch) -> None:
    import pickle

    import torch

    def refuse(*a, **k):  # type: ignore[no-untyped-def]
        raise AssertionError("something was unpickled")

    from wbc_ray.models import build_model

    build_model("mobilenet")  # the libraries' own imports first: only loading is under test
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    for name in list_models():
        model, card = load_checkpoint(RELEASE, name)
        assert card.version == verify_release(RELEASE).info["models"][name]["version"]
        # fp16 on disk, fp32 in memory.
        assert next(model.parameters()).dtype == torch.float32


def test_what_a_machine_builds_from_a_release_goes_to_the_user_cache(copy, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("WBC_RAY_CACHE", str(tmp_path / "cache"))
    from wbc_ray.models import int8_path

    d = derived_dir(copy)
    assert d.is_relative_to(tmp_path / "cache") and d.name.startswith(verify_release(copy).version + "-")
    assert int8_path(copy, "mobilenet").parent == d
    # A plain checkpoint folder keeps them beside the weights.
    (copy / RELEASE_FILE).unlink()
    assert derived_dir(copy) == copy


@pytest.mark.parametrize("how", [["--verify", "--out"], ["--verify"]])
def test_cli_verify_names_the_version_and_the_files(how: list[str]) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "wbc_ray.cli", "release", *how, str(RELEASE)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    rel = verify_release(RELEASE)
    assert f"release {rel.version}" in r.stdout and f"{len(rel.files)} files" in r.stdout
