"""The domain check, tile QC, stain normalisation, scale and shifts on real images (no Ray)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from tests.conftest import DATA, MANIFEST, RELEASE, need_data
from wbc_ray.config import QcSettings
from wbc_ray.domain import (
    FEATURE_PX,
    REASONS,
    SHIFTS,
    QcThresholds,
    StainNormalizer,
    TileScreen,
    load_domain,
    read_fields,
    shift_image,
    tile_qc,
    to_field,
)
from wbc_ray.manifest import read_manifest

PBC = DATA / "pbc" / "labels.csv"


def _limits() -> QcThresholds:
    return QcThresholds.from_settings(QcSettings())


@pytest.fixture(scope="module")
def domain():
    need_data()
    d = load_domain(RELEASE)
    assert d is not None, "the release ships domain.json"
    return d


@pytest.fixture(scope="module")
def test_fields():
    need_data()
    items = read_manifest(MANIFEST, "test")
    return read_fields([it.path for it in items], None, FEATURE_PX), np.array([it.label for it in items])


@pytest.fixture(scope="module")
def pbc_paths():
    if not PBC.exists():
        pytest.skip(f"{PBC} not found")
    rows = list(csv.DictReader(PBC.read_text().splitlines()))
    return [PBC.parent / r["path"] for r in rows[::25]]  # 80 cells, 10 of each class


def test_check_passes_the_test_split_and_flags_other_labs_and_shifts(domain, test_fields, pbc_paths) -> None:
    x, _ = test_fields
    check = domain.check
    flagged = check.out_of_range(check.distances(x)).mean()
    assert flagged <= 0.05, flagged  # the threshold sits at the validation split's 97.5 %
    # Another lab's normal cells, whole and at their scale; grayscale copies; H&E tissue; glass.
    for name, tiles in {
        "pbc whole": read_fields(pbc_paths, None, FEATURE_PX),
        "pbc at 0.1 um/px": read_fields(pbc_paths, 0.1, FEATURE_PX),
        "grayscale": np.stack([shift_image(t, "grayscale") for t in x[:80]]),
        "glass": np.full((8, FEATURE_PX, FEATURE_PX, 3), (238, 235, 240), np.uint8),
    }.items():
        share = check.out_of_range(check.distances(tiles)).mean()
        assert share >= 0.9, (name, share)
    # The distance orders: test images nearer than the stain-shifted copies on average.
    shifted = np.stack([shift_image(t, "stain") for t in x[:80]])
    assert np.median(check.distances(shifted)) > np.median(check.distances(x[:80]))


def test_check_round_trips_through_json(domain) -> None:
    from wbc_ray.domain import DomainFile

    again = DomainFile.from_dict(domain.to_dict())
    tiles = np.random.default_rng(0).integers(0, 255, (4, FEATURE_PX, FEATURE_PX, 3), dtype=np.uint8)
    assert np.allclose(again.check.distances(tiles), domain.check.distances(tiles))
    with pytest.raises(ValueError, match="statistics"):
        type(domain.check).from_dict({**domain.check.to_dict(), "features": ["od_r"]})


def _ink(t: np.ndarray) -> np.ndarray:
    im = Image.fromarray(t)
    ImageDraw.Draw(im).rectangle((0, 40, FEATURE_PX, 90), fill=(25, 105, 60))
    return np.asarray(im)


def _debris(t: np.ndarray) -> np.ndarray:
    im = Image.fromarray(t)
    ImageDraw.Draw(im).ellipse((30, 30, 70, 70), fill=(15, 12, 10))
    return np.asarray(im)


def test_qc_passes_training_scale_fields_and_names_each_fault(test_fields) -> None:
    x, _ = test_fields
    limits = _limits()
    assert (tile_qc(x, limits) == 0).mean() >= 0.99
    sample = x[:60]
    faults = {
        "blur": np.stack(
            [np.asarray(Image.fromarray(t).filter(ImageFilter.GaussianBlur(2.0))) for t in sample]
        ),
        "ink": np.stack([_ink(t) for t in sample]),
        "debris": np.stack([_debris(t) for t in sample]),
        "background": np.clip(
            np.array([238, 235, 240])
            + np.random.default_rng(1).normal(0, 2, (60, FEATURE_PX, FEATURE_PX, 3)),
            0,
            255,
        ).astype(np.uint8),
    }
    for reason, tiles in faults.items():
        codes = tile_qc(tiles, limits)
        assert (codes == REASONS.index(reason)).mean() >= 0.9, (reason, np.bincount(codes))


def test_screen_skips_rejected_tiles_and_checks_the_rest(domain, test_fields) -> None:
    x, _ = test_fields
    tiles = np.concatenate([x[:5], np.full((3, FEATURE_PX, FEATURE_PX, 3), 238, np.uint8)])
    s = TileScreen(_limits(), None, domain.check)(tiles)
    assert s.usable.tolist() == [True] * 5 + [False] * 3
    assert np.isfinite(s.domain).all()  # every tile has its distance; only usable ones count
    assert (s.tiles == tiles).all()  # no normalisation asked: the tiles go on as they are


def test_stain_normalisation_moves_a_shifted_stain_towards_the_reference(domain, test_fields) -> None:
    from torchstain.numpy.utils.rgb2lab import rgb2lab
    from torchstain.numpy.utils.split import lab_split

    def lab_means(t: np.ndarray) -> np.ndarray:
        return np.array([c.mean() for c in lab_split(rgb2lab(t.astype(np.float32) / 255))])

    x, _ = test_fields
    shifted = np.stack([shift_image(t, "stain") for t in x[:20]])
    ref = np.asarray(domain.stain_references["reinhard"]["target_means"])
    for method in ("macenko", "reinhard"):
        norm = StainNormalizer(method, domain.stain_references)
        out = norm(shifted)
        assert out.shape == shifted.shape and out.dtype == np.uint8
        assert not np.array_equal(out, shifted)
        if method == "reinhard":
            before = np.abs(lab_means(shifted) - ref).sum()
            after = np.abs(lab_means(out) - ref).sum()
            assert after < before / 2, (before, after)
    glass = np.full((2, FEATURE_PX, FEATURE_PX, 3), 240, np.uint8)
    norm = StainNormalizer("macenko", domain.stain_references)
    assert np.array_equal(norm(glass), glass) and norm.passed == 2  # too little stain: left as is
    with pytest.raises(ValueError, match="one of"):
        StainNormalizer("vahadane", domain.stain_references)


def test_to_field_puts_a_micron_where_slide_tiles_put_it() -> None:
    # A disc 120 px across at 0.1 um/px is 12 um: 12 / 0.875 = 13.7 px on a 128 px field of 112 um.
    im = Image.new("RGB", (360, 360), (240, 220, 220))
    ImageDraw.Draw(im).ellipse((120, 120, 240, 240), fill=(80, 40, 120))
    f = to_field(np.asarray(im), 0.1, 128)
    assert f.shape == (128, 128, 3)
    dark = f[64, :, 0] < 160
    assert dark[64]
    left, right = 64, 64
    while dark[left - 1]:
        left -= 1
    while dark[right + 1]:
        right += 1
    assert abs((right - left + 1) - 13.7) <= 2
    # Smaller than the field (41 px): mirrored copies fill it, about 3 x 3 discs, no flat border.
    assert 6 * 13.7**2 < (f[:, :, 0] < 160).sum() < 12 * 13.7**2
    # Larger than the field: the centre is cut out at scale (a 1 um/px image: 112 px of it).
    big = np.zeros((400, 400, 3), np.uint8)
    big[144:256, 144:256] = 255
    assert to_field(big, 1.0, 128).mean() > 250
    # Without a scale the image is one whole field.
    assert to_field(np.asarray(im), None, 128).shape == (128, 128, 3)


def test_each_shift_changes_the_image_and_unknown_ones_are_refused(test_fields) -> None:
    x, _ = test_fields
    for name in SHIFTS:
        y = shift_image(x[0], name)
        assert y.shape == x[0].shape and y.dtype == np.uint8 and not np.array_equal(y, x[0]), name
    with pytest.raises(ValueError, match="unknown shift"):
        shift_image(x[0], "fog")


def test_manifest_takes_an_mpp_column(tmp_path) -> None:
    from wbc_ray.errors import InvalidInput

    img = tmp_path / "a.png"
    Image.new("RGB", (50, 50)).save(img)
    (tmp_path / "m.csv").write_text("path,label,mpp\na.png,benign,0.25\na.png,malignant,\n")
    items = read_manifest(tmp_path / "m.csv")
    assert [it.mpp for it in items] == [0.25, None]
    (tmp_path / "bad.csv").write_text("path,label,mpp\na.png,benign,fine\n")
    with pytest.raises(InvalidInput, match="bad.csv:2: mpp 'fine' is not a number"):
        read_manifest(tmp_path / "bad.csv")
