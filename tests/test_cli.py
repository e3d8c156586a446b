from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import MANIFEST, SLIDES, checkpoint_copy, need_data


def cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wbc_ray.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def test_info_json() -> None:
    need_data()
    r = cli("info", str(SLIDES / "pathml/small_HE.svs"), "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["vendor"] == "aperio" and d["dimensions"] == [2220, 2967] and d["mpp"] == pytest.approx(0.499)


@pytest.mark.parametrize(
    "name", ["openslide-python/unreadable.svs", "pathml/small_dicom.dcm", "pathml/smalltif.tif", "nope.svs"]
)
def test_info_bad_files_exit_nonzero_without_traceback(name: str) -> None:
    need_data()
    r = cli("info", str(SLIDES / name))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and name.split("/")[-1] in r.stderr and "error" in r.stderr


def test_make_slide_then_tile(tmp_path) -> None:
    need_data()
    out = tmp_path / "s.tiff"
    r = cli(
        "make-slide",
        "--manifest",
        str(MANIFEST),
        "--split",
        "test",
        "--out",
        str(out),
        "--grid",
        "3",
        "4",
        "--malignant-fraction",
        "0.5",
        "--seed",
        "2",
        "--quiet",
    )
    assert r.returncode == 0, r.stderr
    truth = json.loads(out.with_suffix(".json").read_text())
    assert truth["n_fields"] == 12 and truth["n_malignant"] == 6
    z = tmp_path / "s.zarr"
    preview = tmp_path / "p.png"
    r = cli(
        "tile",
        str(out),
        "--out",
        str(z),
        "--tile-px",
        "64",
        "--mpp",
        "1.0",
        "--preview",
        str(preview),
        "--quiet",
    )
    assert r.returncode == 0, r.stderr
    assert "tiles from" in r.stdout and preview.stat().st_size > 1000
    import zarr

    assert zarr.open_group(str(z), mode="r")["done"][:].all()
    # A second run finds every chunk done.
    r = cli("tile", str(out), "--out", str(z), "--tile-px", "64", "--mpp", "1.0", "--quiet")
    assert r.returncode == 0 and "chunks already done" in r.stdout


def test_calibrate_writes_rates_bound_to_the_weights(models_dir, tmp_path) -> None:
    from dataclasses import asdict

    from wbc_ray.lifecycle import load_tile_rates
    from wbc_ray.models import Classifier, available

    d = checkpoint_copy(models_dir, tmp_path / "m")
    r = cli("calibrate", "--models", str(d), "--manifest", str(MANIFEST), "--grid", "5")
    assert r.returncode == 0, r.stderr
    (rec,) = json.loads((d / "tile_rates.json").read_text())["records"]
    assert rec["split"] == "val" and set(rec["fusions"]) == {"fuzzy_rank", "mean", "vote"}
    # Measured in the precisions configs/serve.yaml serves (int8 only where an int8 model exists),
    # naming which int8 model.
    from wbc_ray.models import int8_id, int8_path

    default = Classifier.default_precision()
    for name in ("mobilenet", "xception"):
        qid = int8_id(int8_path(d, name), json.loads((d / f"{name}.json").read_text())["version"])
        assert rec["precision"][name] == (f"int8:{qid}" if qid else default)
    for rates in rec["fusions"].values():
        assert rates["n_pos"] > 0 and rates["n_neg"] > 0
        # The distinct images behind each end (what the interval's widening counts): 5 x 5
        # fields drawn without repeats from validation pools larger than that.
        assert rates["pos_cells"] == rates["neg_cells"] == 25
        assert 0 <= rates["fpr"] <= 1 and 0 <= rates["tpr"] <= 1
    cards = [asdict(Classifier.load(d, n).card) for n in available(d)]
    assert load_tile_rates(d, cards) == rec
    assert load_tile_rates(d, cards, {n: "fp16" for n in available(d)}) is None  # other calls
    cards[0]["bias"] += 0.5  # another operating point: the measured rates no longer apply
    assert load_tile_rates(d, cards) is None


def test_evaluate_served_scores_in_the_serve_configs_precisions(models_dir, tmp_path) -> None:
    from wbc_ray.models import available, int8_path

    man = tmp_path / "m.csv"
    with open(MANIFEST) as fh:
        head, *rows = fh.read().splitlines()
    pick = [r for r in rows if ",benign,test," in r][:20] + [r for r in rows if ",malignant,test," in r][:20]
    test_rows = [f"{MANIFEST.parent}/{r}" for r in pick]  # paths made absolute
    man.write_text("\n".join([head, *test_rows]) + "\n")
    served = cli(
        "evaluate",
        "--models",
        str(models_dir),
        "--manifest",
        str(man),
        "--served",
        "--out",
        str(tmp_path / "s"),
    )
    default = cli(
        "evaluate", "--models", str(models_dir), "--manifest", str(man), "--out", str(tmp_path / "d")
    )
    assert served.returncode == 0 and default.returncode == 0, served.stderr[-2000:] + default.stderr[-2000:]
    s = json.loads((tmp_path / "s" / "metrics.json").read_text())
    d = json.loads((tmp_path / "d" / "metrics.json").read_text())
    # configs/serve.yaml serves all three in int8, where their int8 models exist.
    for name in available(models_dir):
        assert s["precision"][name] == (
            "int8" if int8_path(models_dir, name).exists() else d["precision"][name]
        )
        assert d["precision"][name] != "int8"
    assert sum(map(sum, s["ensembles"]["fuzzy_rank"]["confusion"])) == 40
    assert "precision" in (tmp_path / "s" / "metrics.md").read_text()
    # One precision for all (how a release's fp32 figures are reproduced on any CPU).
    fp32 = cli(
        "evaluate",
        "--models",
        str(models_dir),
        "--manifest",
        str(man),
        "--precision",
        "fp32",
        "--out",
        str(tmp_path / "f"),
    )
    assert fp32.returncode == 0, fp32.stderr[-2000:]
    f = json.loads((tmp_path / "f" / "metrics.json").read_text())
    assert set(f["precision"].values()) == {"fp32"}
