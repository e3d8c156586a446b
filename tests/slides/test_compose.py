from __future__ import annotations

import json

import numpy as np
import pytest

from wbc_ray.slides import compose_slide, open_slide


def test_truth_and_pyramid(composed, test_items) -> None:
    truth = json.loads(composed.with_suffix(".json").read_text())
    assert truth["n_fields"] == 48 and truth["n_malignant"] == 12
    assert truth["malignant_fraction"] == pytest.approx(0.25) and truth["slide_label"] == "malignant"
    with open_slide(composed) as s:
        assert s.dimensions == (truth["width"], truth["height"])
        # The pixels inside a field box are the field image, not glass.
        x, y, w, h = truth["fields"][0]["box"]
        inside = s.read(x + 20, y + 20, 0, (w - 40, h - 40))
        assert inside.std() > 10
        glass = s.read(0, 0, 0, (100, 100))
        assert glass.std() < 3 and glass.mean() > 230


def test_levels_and_seed_reproducible(tmp_path, test_items) -> None:
    a = compose_slide(test_items, tmp_path / "a.tiff", grid=(12, 14), malignant_fraction=0.0, seed=1)
    b = compose_slide(test_items, tmp_path / "b.tiff", grid=(12, 14), malignant_fraction=0.0, seed=1)
    assert a["fields"] == b["fields"] and a["slide_label"] == "benign"
    with open_slide(tmp_path / "a.tiff") as s:
        assert s.info.level_count >= 2
        assert s.info.level_downsamples[1] == pytest.approx(4, rel=0.01)
        lo = s.read(0, 0, 1, s.info.level_dimensions[1])
        assert lo.shape[:2][::-1] == s.info.level_dimensions[1]
        assert np.isfinite(lo.mean())


def test_bad_arguments(tmp_path, test_items) -> None:
    with pytest.raises(ValueError, match="within"):
        compose_slide(test_items, tmp_path / "x.tiff", grid=(2, 2), malignant_fraction=1.5)
    benign_only = [it for it in test_items if it.label == 0]
    with pytest.raises(ValueError, match="no malignant"):
        compose_slide(benign_only, tmp_path / "x.tiff", grid=(2, 2), malignant_fraction=0.5)
