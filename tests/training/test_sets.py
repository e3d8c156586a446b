"""`wbc-ray evaluate --sets` (several data sets, one report) and `wbc-ray domain` (a release's
domain file), on real images and the real release.
"""

from __future__ import annotations

import csv
import json
import shutil

import pytest
import yaml

from tests.conftest import DATA, MANIFEST, RELEASE, need_data
from wbc_ray.cli import main


def test_evaluate_sets_one_report_with_a_row_per_set_and_stain(tmp_path, capsys) -> None:
    need_data()
    sets = {
        "sets": [
            {"name": "test", "manifest": "all_taleqani/split.csv", "split": "test", "limit": 15},
            {
                "name": "grey",
                "manifest": "all_taleqani/split.csv",
                "split": "test",
                "limit": 15,
                "shift": "grayscale",
            },
            {"name": "pbc", "manifest": "pbc/labels.csv", "mpp": 0.1, "limit": 20},
            {"name": "glass", "blank": 6},
        ]
    }
    spec = tmp_path / "sets.yaml"
    spec.write_text(yaml.safe_dump(sets))
    out = tmp_path / "report"
    code = main(
        [
            "evaluate",
            "--models",
            str(RELEASE),
            "--sets",
            str(spec),
            "--out",
            str(out),
            "--stain",
            "none,reinhard",
        ]
    )
    assert code == 0
    report = json.loads((out / "sets.json").read_text())
    rows = {(r["set"], r["stain"]): r for r in report["rows"]}
    assert set(rows) == {(s, m) for s in ("test", "grey", "pbc", "glass") for m in ("none", "reinhard")}
    test, pbc, grey = rows["test", "none"], rows["pbc", "none"], rows["grey", "none"]
    assert test["n"] == 30 and test["benign"] == test["malignant"] == 15
    assert test["fused"]["balanced_accuracy"] >= 0.8 and "roc_auc" in test["fused"]
    assert set(pbc["fused"]) == {"specificity"}  # all benign: the one rate it has
    assert pbc["scale"] == "rescaled from their mpp"
    assert "without a scale" in test["scale"]  # the missing scale is said
    assert test["flagged"] <= 0.2 and pbc["flagged"] >= 0.9 and grey["flagged"] >= 0.9
    assert pbc["domain_auc"] >= 0.9 and rows["glass", "none"]["qc_rejected"] == 1.0
    assert set(test["models"]) == {"inception_v3", "mobilenet", "xception"}
    assert (out / "sets.png").stat().st_size > 5000
    table = (out / "sets.md").read_text()
    assert table.count("\n") == 2 + len(rows) and "| pbc | 20 (20/0) | none | spec." in table
    assert "| pbc |" in capsys.readouterr().out


def test_evaluate_with_mpp_rescales_and_names_bad_sets(tmp_path) -> None:
    need_data()
    from wbc_ray.errors import InvalidInput
    from wbc_ray.training._sets import load_sets

    rows = list(csv.DictReader((DATA / "pbc" / "labels.csv").read_text().splitlines()))[:6]
    m = tmp_path / "lab.csv"
    m.write_text("path,label\n" + "".join(f"{DATA / 'pbc' / r['path']},benign\n" for r in rows))
    assert (
        main(
            [
                "evaluate",
                "--models",
                str(RELEASE),
                "--manifest",
                str(m),
                "--mpp",
                "0.1",
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 0
    )
    row = json.loads((tmp_path / "o" / "sets.json").read_text())["rows"][0]
    assert row["n"] == 6 and row["scale"] == "rescaled from their mpp"
    bad = tmp_path / "bad.yaml"
    bad.write_text("sets:\n  - {name: x, manifest: a.csv, blank: 3}\n")
    with pytest.raises(InvalidInput, match="exactly one of manifest, slide, blank"):
        load_sets(bad, DATA)
    bad.write_text("sets:\n  - {name: x, manifest: a.csv, shift: fog}\n")
    with pytest.raises(InvalidInput, match="unknown shift 'fog'"):
        load_sets(bad, DATA)


def test_domain_fits_a_new_release_version_that_loads_and_is_checked(tmp_path) -> None:
    need_data()
    from wbc_ray.domain import load_domain
    from wbc_ray.errors import ReleaseError
    from wbc_ray.release import verify_release

    rel = tmp_path / "release"
    shutil.copytree(RELEASE, rel)
    before = verify_release(rel).version
    with open(MANIFEST) as fh:
        rows = list(csv.DictReader(fh))
    small = [r for r in rows if r["split"] == "train"][::40] + [r for r in rows if r["split"] == "val"][::20]
    m = tmp_path / "small.csv"
    with open(m, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "label", "split"])
        w.writeheader()
        for r in small:
            w.writerow({"path": str(MANIFEST.parent / r["path"]), "label": r["label"], "split": r["split"]})
    assert main(["domain", "--models", str(rel), "--manifest", str(m), "--stain-default", "reinhard"]) == 0
    after = verify_release(rel)
    assert after.version == str(int(before) + 1) and after.info["replaces"] == before
    d = load_domain(rel)
    assert d is not None and d.stain_default == "reinhard"
    assert d.check.fitted["train_images"] == sum(r["split"] == "train" for r in small)
    assert set(d.stain_references) == {"macenko", "reinhard"}
    readme = (rel / "README.md").read_text()
    assert readme.startswith(f"# wbc-ray model release {after.version}\n") and "domain.json" in readme
    # Its own version again: the domain file (and any report under eval/) recorded into the same
    # release, which still replaces what it replaced.
    (rel / "eval" / "note.md").write_text("a report added after the cut\n")
    assert main(["domain", "--models", str(rel), "--manifest", str(m), "--version", after.version]) == 0
    again = verify_release(rel)
    assert again.version == after.version and again.info["replaces"] == before
    assert "eval/note.md" in again.files
    # The file is part of the release: altered, the release is refused by name.
    (rel / "domain.json").write_text((rel / "domain.json").read_text().replace("reinhard", "macenko", 1))
    with pytest.raises(ReleaseError, match="domain.json"):
        verify_release(rel)
