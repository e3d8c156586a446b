"""What the sturdier recipe adds: wide zoom and blur in the augmentation, another lab's cells at
their own scale in the train split (never the images an evaluation set reads), and a time budget
that caps explicit epochs too.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import DATA, MANIFEST, need_data
from wbc_ray.manifest import read_manifest
from wbc_ray.training import TrainConfig, augment, held_out_images, mix_manifest, train
from wbc_ray.training._data import _blur_some


def _disc(side: int = 96, radius: int = 12) -> torch.Tensor:
    """One white image with a black disc in the middle: its area measures the zoom."""
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    inside = ((yy - side / 2 + 0.5) ** 2 + (xx - side / 2 + 0.5) ** 2) < radius**2
    x = torch.ones(1, 3, side, side)
    x[:, :, inside] = 0.0
    return x


def test_zoom_is_drawn_log_uniformly_over_the_range() -> None:
    # No colour change, no shift: the disc's dark area is the zoom squared times its own area.
    x = _disc().repeat(400, 1, 1, 1)
    out = augment(
        x,
        torch.Generator().manual_seed(0),
        hue=0,
        saturation=0,
        brightness=0,
        contrast=0,
        grayscale_p=0,
        channel_gain=0,
        scale=(0.5, 2.0),
    )
    # Only the middle counts: zoomed out, the mirrored padding shows copies of the disc further out.
    yy, xx = torch.meshgrid(torch.arange(96), torch.arange(96), indexing="ij")
    middle = ((yy - 47.5) ** 2 + (xx - 47.5) ** 2) < 34**2
    area = ((out.mean(1) < 0.5) & middle).sum((1, 2)).float() / (x[0].mean(0) < 0.5).sum()
    zoom = area.sqrt()
    assert zoom.min() < 0.6 and zoom.max() > 1.7  # both ends reached
    # Log-uniform: as many images zoomed out as in (a uniform draw would put 2/3 above 1).
    assert abs(float((zoom > 1).float().mean()) - 0.5) < 0.1
    assert abs(float(zoom.log().mean())) < 0.1


def test_blur_softens_only_the_chosen_images_by_their_own_sigma() -> None:
    x = _disc(64, 10).repeat(3, 1, 1, 1)
    which = torch.tensor([True, False, True])
    out = _blur_some(x, which, torch.tensor([0.3, 1.0, 1.2]))
    assert torch.equal(out[1], x[1])  # not chosen: untouched

    def edge(img: torch.Tensor) -> float:  # gradient energy: falls as the blur grows
        return float(((img[:, 1:, :] - img[:, :-1, :]) ** 2).mean())

    assert edge(out[2]) < edge(out[0]) < edge(x[0])
    assert torch.allclose(out.mean((1, 2, 3)), x.mean((1, 2, 3)), atol=0.01)  # blur keeps the mean
    # Through augment: the share blurred follows blur_p.
    g = torch.Generator().manual_seed(0)
    plain = dict(hue=0, saturation=0, brightness=0, contrast=0, grayscale_p=0, channel_gain=0, scale=(1, 1))
    a = augment(_disc(64, 10).repeat(200, 1, 1, 1), g, blur_p=0.3, **plain)  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(0)
    b = augment(_disc(64, 10).repeat(200, 1, 1, 1), g, blur_p=0.0, **plain)  # type: ignore[arg-type]
    changed = ((a - b).abs().amax((1, 2, 3)) > 0.02).float().mean()
    assert 0.2 < float(changed) < 0.4


def test_mixed_manifest_never_takes_the_images_evaluation_reads(tmp_path: Path) -> None:
    need_data()
    pbc = DATA / "pbc" / "labels.csv"
    if not pbc.is_file():
        pytest.skip(f"no PBC cells at {pbc}")
    held = held_out_images(DATA)
    test_split = {it.path.resolve() for it in read_manifest(MANIFEST, "test")}
    assert test_split <= held  # the sets read the whole Taleqani test split
    out, added = mix_manifest(MANIFEST, pbc, tmp_path / "m.csv", mpp=0.1, limit=300, exclude=held)
    assert added == 300
    rows = read_manifest(out)
    base = read_manifest(MANIFEST)
    assert len(rows) == len(base) + 300
    extra = rows[len(base) :]
    assert all(it.split == "train" and it.mpp == 0.1 and it.label == 0 for it in extra)
    assert not {it.path.resolve() for it in extra} & held
    # The base rows keep their splits: validation and test are still only the first lab's.
    assert [(it.path, it.split) for it in rows[: len(base)]] == [(it.path, it.split) for it in base]
    with open(out) as fh:
        assert all(Path(r["path"]).is_absolute() for r in csv.DictReader(fh))


def test_training_reads_rows_with_an_mpp_at_their_scale_and_records_the_recipe(tmp_path: Path) -> None:
    need_data()
    pbc = DATA / "pbc" / "labels.csv"
    if not pbc.is_file():
        pytest.skip(f"no PBC cells at {pbc}")
    man, _ = mix_manifest(MANIFEST, pbc, tmp_path / "m.csv", mpp=0.1, limit=40, exclude=set())
    cfg = TrainConfig(
        model="mobilenet",
        manifest=str(man),
        out=str(tmp_path / "w"),
        input_size=64,
        epochs=1,
        batch_size=16,
        zoom=(0.5, 2.0),
        blur=0.2,
        progress=False,
    )
    from wbc_ray.domain import read_fields
    from wbc_ray.training._train import _load

    cells = [it for it in read_manifest(man, "train") if it.mpp is not None][:3]
    x, y = _load(cells, 64)
    # A PBC cell (360 px at 0.1 um/px = 36 um) fills about a third of the 112 um field, as on a slide.
    assert torch.equal(x, torch.from_numpy(read_fields([c.path for c in cells], 0.1, 64)))
    assert y.tolist() == [0, 0, 0]
    whole = read_fields([cells[0].path], None, 64)[0]
    assert not np.array_equal(x[0].numpy(), whole)
    card = train(cfg)
    assert card.training["zoom"] == [0.5, 2.0] or tuple(card.training["zoom"]) == (0.5, 2.0)
    assert card.training["blur"] == 0.2
    n_train = sum(card.training["train_counts"])
    assert n_train == len(read_manifest(man, "train"))
    assert card.training["train_counts"][0] == sum(it.label == 0 for it in read_manifest(man, "train"))


def test_a_time_budget_also_caps_explicit_epochs(tmp_path: Path) -> None:
    need_data()
    base = dict(model="mobilenet", manifest=str(MANIFEST), input_size=64, limit=32, batch_size=16)
    card = train(TrainConfig(**base, out=str(tmp_path / "b"), epochs=50, minutes=0.001, progress=False))  # type: ignore[arg-type]
    assert card.training["epochs_planned"] == 1 and card.training["epochs_run"] == 1
    assert math.isclose(card.training["minutes"], 0.001)
