"""`wbc-ray adapt` on another lab's cells: PBC's normal cells (Barcelona, MGG, at their scale)
as benign and Taleqani blasts at a quarter of their size (a lab whose cells the release reads
wrong: release 3 learned cells down to half their size, and calls about half of these benign) as
malignant; the adapted release is a release like any other and reads that lab's held-out cells."""

from __future__ import annotations

import json

import pytest


def test_adapt_writes_a_release_that_reads_the_labs_cells(lab_release, models_dir) -> None:
    """`lab_release` (tests/conftest.py) is `adapt` run on the other lab's 48 images with 32 of
    the parent's training images replayed, its tile rates measured on 3 x 3-field slides."""
    from wbc_ray.models import load_release
    from wbc_ray.release import verify_release

    out = lab_release
    parent = verify_release(models_dir).info
    release = verify_release(out)  # every file listed and checked, as any release
    assert release.info["lineage"]["parent"] == parent["version"]
    assert len(release.info["lineage"]["lab_sha256"]) == 64
    assert set(release.models) == set(parent["models"])
    for name in release.models:
        card = json.loads((out / f"{name}.json").read_text())
        assert card["training"]["adapted"]["from_release"] == parent["version"]
        adapted = card["training"]["adapted"]
        assert adapted["tuned"] in ("operating_point", "head")
        assert set(adapted["cross_validated_balanced_accuracy"]) == {"operating_point", "head"}
        assert card["version"] != json.loads((models_dir / f"{name}.json").read_text())["version"]

    report = json.loads((out / "adapt.json").read_text())["evaluation"]
    before, after = report["parent"]["fused"], report["adapted"]["fused"]
    assert report["held_out"]["n"] >= 12
    # The parent calls these small blasts benign; the adapted models read them.
    assert after["balanced_accuracy"] >= max(0.8, before["balanced_accuracy"] + 0.1), (before, after)
    # The domain check is refitted on both labs: the new lab's held-out cells are in range.
    flagged = report["domain_flagged_held_out"]
    assert flagged["adapted"] < flagged["parent"], flagged

    # Tile rates of its own, measured on slides of the lab's images with the adapted weights, in
    # the precision the models are served in by default here: analyses report an estimate.
    from wbc_ray.lifecycle import load_tile_rates, rates_for, served_precisions

    assert "tile_rates.json" in release.files and report["tile_rates"]["grid"] == 3
    cards = [json.loads((out / f"{n}.json").read_text()) for n in release.models]
    record = load_tile_rates(out, cards, served_precisions(out, None))
    assert record is not None and rates_for(record, "fuzzy_rank") is not None

    # Loaded like the shipped release; its answers on the lab's cells are its own.
    clfs = load_release(out, precision="fp32")
    assert sorted(clfs) == sorted(release.models)


def test_adapt_refuses_too_few_images_and_a_used_folder(tmp_path, models_dir, lab_manifest) -> None:
    from wbc_ray.errors import InvalidInput, OutputExists
    from wbc_ray.training import AdaptConfig, adapt

    few = tmp_path / "few.csv"
    lines = lab_manifest.read_text().splitlines()
    few.write_text("\n".join(lines[:7] + lines[-1:]) + "\n")  # 6 benign, 1 malignant
    with pytest.raises(InvalidInput, match="at least 2 malignant"):
        adapt(AdaptConfig(str(few), str(tmp_path / "a"), str(models_dir), None), log=lambda _: None)
    used = tmp_path / "used"
    used.mkdir()
    (used / "x").write_text("")
    with pytest.raises(OutputExists, match="not empty"):
        adapt(
            AdaptConfig(str(lab_manifest), str(used), str(models_dir), None, rates_grid=0), log=lambda _: None
        )


def test_analysing_with_other_models_than_the_running_app_is_refused(
    server, lab_release, models_dir, tmp_path
):
    """A running app (a lab's service) is not swapped under its users: `analyze_slides` with an
    adapted release while the app serves the shipped one says so, naming both versions."""
    from wbc_ray.analyze import analyze_slides
    from wbc_ray.errors import InvalidInput
    out = lab_release
    with pytest.raises(InvalidInput, match="serves other models than") as err:
        analyze_slides([str(tmp_path / "any.tiff")], tmp_path / "results", models_dir=out, progress=False)
    for name in ("mobilenet", "xception", "inception_v3"):
        theirs = json.loads((models_dir / f"{name}.json").read_text())["version"]
        ours = json.loads((out / f"{name}.json").read_text())["version"]
        assert f"{name} {theirs} (asked: {ours})" in str(err.value)
