from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.conftest import MANIFEST, checkpoint_copy, need_data
from wbc_ray.models import Classifier, cpu_has_amx, load_checkpoint, training_precision
from wbc_ray.training import (
    TrainConfig,
    augment,
    best_threshold,
    binary_metrics,
    evaluate,
    fit_temperature,
    roc_auc,
    train,
)


def test_metrics_against_a_hand_computed_confusion_matrix() -> None:
    y = np.array([1, 1, 1, 1, 0, 0, 0, 1, 0, 1])
    pred = np.array([1, 1, 0, 1, 0, 1, 0, 1, 0, 0])
    # tp = 4, fn = 2, tn = 3, fp = 1
    m = binary_metrics(y, pred, pred.astype(float))
    assert m["confusion"] == [[3, 1], [2, 4]]
    assert m["sensitivity"] == pytest.approx(4 / 6) and m["specificity"] == pytest.approx(3 / 4)
    assert m["balanced_accuracy"] == pytest.approx((4 / 6 + 3 / 4) / 2)
    assert m["precision"] == pytest.approx(4 / 5) and m["accuracy"] == pytest.approx(0.7)
    assert m["f1"] == pytest.approx(2 * 0.8 * (4 / 6) / (0.8 + 4 / 6))


def test_auc_and_threshold() -> None:
    y = np.array([0, 0, 1, 1])
    assert roc_auc(y, np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert roc_auc(y, np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    t = best_threshold(y, np.array([0.1, 0.2, 0.3, 0.4]))
    assert 0.2 < t < 0.3


def test_temperature_scaling_recovers_a_known_temperature() -> None:
    g = torch.Generator().manual_seed(0)
    true_logits = torch.randn(4000, 2, generator=g) * 2
    y = torch.multinomial(torch.softmax(true_logits, 1), 1, generator=g).squeeze(1)
    t = fit_temperature(true_logits * 3.0, y)  # over-confident by 3x
    assert t == pytest.approx(3.0, rel=0.15)


def test_augment_keeps_shape_and_range() -> None:
    x = torch.rand(6, 3, 32, 32)
    out = augment(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1 and not torch.equal(out, x)


def test_mosaic_soft_label_is_the_malignant_share_of_field_area() -> None:
    from wbc_ray.training._data import GLASS, mosaic

    # Malignant fields pure red, benign pure blue: counting pixels in a view measures areas.
    n, s = 12, 32
    y = torch.tensor([1, 0] * (n // 2))
    x = torch.zeros(n, s, s, 3, dtype=torch.uint8)
    x[y == 1, ..., 0] = 255
    x[y == 0, ..., 2] = 255
    views, soft = mosaic(x, y, torch.arange(n), torch.Generator().manual_seed(0))
    red = ((views[:, 0] == 1) & (views[:, 2] == 0)).sum((1, 2)).float()
    blue = ((views[:, 2] == 1) & (views[:, 0] == 0)).sum((1, 2)).float()
    glass = torch.isclose(views, torch.tensor(GLASS).view(1, 3, 1, 1)).all(1).sum((1, 2))
    assert torch.equal(red + blue + glass, torch.full((n,), float(s * s)))
    assert torch.allclose(soft, red / (red + blue))
    assert ((soft > 0) & (soft < 1)).any() and (glass > 0).any()  # mixed views exist; gaps show


def _one_small_epoch(out: Path, **kw: Any) -> TrainConfig:
    """MobileNet, one epoch on 48 images a split at 64 px: seconds on this CPU."""
    settings: dict[str, Any] = {"input_size": 64, "epochs": 1, "limit": 48, "batch_size": 16, **kw}
    return TrainConfig(model="mobilenet", manifest=str(MANIFEST), out=str(out), progress=False, **settings)


def test_one_real_epoch_then_checkpoint_and_evaluation(tmp_path) -> None:
    need_data()
    cfg = _one_small_epoch(tmp_path / "w")
    card = train(cfg)
    assert card.training["epochs_run"] == 1 and card.temperature > 0
    assert set(card.metrics) >= {"val", "test", "test_grayscale"}
    model, card2 = load_checkpoint(tmp_path / "w", "mobilenet")
    assert card2.version == card.version and card2.manifest_hash == card.manifest_hash
    assert not (tmp_path / "w" / "mobilenet.last.pt").exists()
    assert card.training["precision_used"] == ("bf16" if cpu_has_amx() else "fp32")
    # Fine-tuning from that folder with slide-like mosaics: epochs are then selected on the
    # validation images plus one mosaic view of each; the operating point stays on the images.
    ft_cfg = {**cfg.__dict__, "out": str(tmp_path / "ft"), "weights": str(tmp_path / "w"), "mosaic": 0.5}
    ft_cfg["precision"] = "bf16"  # the autocast path, whatever "auto" picks on this CPU
    ft = train(TrainConfig(**ft_cfg))
    n_val = sum(map(sum, card.metrics["val"]["confusion"]))
    assert ft.training["history"][0]["val_images"] == 2 * n_val
    assert sum(map(sum, ft.metrics["val"]["confusion"])) == n_val
    assert ft.training["mosaic"] == 0.5 and ft.version != card.version
    assert ft.training["precision_used"] == "bf16"
    # Evaluation on a custom manifest without a split column, checked against our own predictions.
    rows = ["path,label"]
    for sub, label in (("Benign/WBC-Benign-006.jpg", "benign"), ("Benign/WBC-Benign-020.jpg", "benign")):
        rows.append(f"{MANIFEST.parent / 'images' / sub},{label}")
    import csv

    with open(MANIFEST) as fh:
        mal = [r for r in csv.DictReader(fh) if r["split"] == "test" and r["label"] == "malignant"][:3]
    rows += [f"{MANIFEST.parent / r['path']},malignant" for r in mal]
    man = tmp_path / "m.csv"
    man.write_text("\n".join(rows) + "\n")
    res = evaluate(tmp_path / "w", man, tmp_path / "eval", split=None)
    m = res["models"]["mobilenet"]
    from wbc_ray.lifecycle import load_images
    from wbc_ray.manifest import read_manifest

    items = read_manifest(man)
    p = Classifier(model, card2).predict(load_images(items, 64)[0].numpy())
    y = np.array([it.label for it in items])
    assert m["confusion"] == binary_metrics(y, p.argmax(1), p[:, 1])["confusion"]
    assert sum(map(sum, m["confusion"])) == 5
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(saved["ensembles"]) == {"fuzzy_rank", "mean", "vote"}
    assert (tmp_path / "eval" / "roc.png").stat().st_size > 1000
    assert (tmp_path / "eval" / "confusion.png").stat().st_size > 1000


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_amp_training_on_a_gpu(tmp_path) -> None:
    """Where a GPU exists (CI has none): AMP with a loss scaler, a usable checkpoint."""
    need_data()
    card = train(_one_small_epoch(tmp_path / "w", epochs=2))
    assert card.training["precision_used"] == "amp"
    assert len(card.training["history"]) == 2
    assert all(np.isfinite(h["loss"]) for h in card.training["history"])
    x = np.random.default_rng(0).integers(0, 255, (8, 64, 64, 3), dtype=np.uint8)
    on_gpu = Classifier.load(tmp_path / "w", "mobilenet").predict(x)  # AMP on the GPU by default
    on_cpu = Classifier.load(tmp_path / "w", "mobilenet", device="cpu", precision="fp32").predict(x)
    assert np.abs(on_gpu - on_cpu).max() < 0.02


def test_training_precision_auto_and_explicit() -> None:
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert training_precision(gpu) == "amp"
    # bf16 autocast trains slower than fp32 on CPUs without AMX (measured; see the docstring).
    assert training_precision(cpu) == ("bf16" if cpu_has_amx() else "fp32")
    assert training_precision(cpu, "bf16") == "bf16" and training_precision(gpu, "fp32") == "fp32"


def test_precisions_follow_what_the_cpu_computes_natively(monkeypatch) -> None:
    from wbc_ray.models import Classifier, _cpu

    cpu = torch.device("cpu")
    # An AVX2-only CPU emulates bf16 (7-15x slower than fp32, measured): fp32 there.
    monkeypatch.setattr(_cpu, "cpu_flags", lambda: frozenset({"avx", "avx2", "fma"}))
    assert Classifier.default_precision(cpu) == "fp32" and training_precision(cpu) == "fp32"
    monkeypatch.setattr(_cpu, "cpu_flags", lambda: frozenset({"avx512f", "avx512_vnni", "avx512_bf16"}))
    assert Classifier.default_precision(cpu) == "bf16" and training_precision(cpu) == "fp32"
    monkeypatch.setattr(_cpu, "cpu_flags", lambda: frozenset({"avx512_bf16", "amx_bf16"}))
    assert Classifier.default_precision(cpu) == "bf16" and training_precision(cpu) == "bf16"
    assert Classifier.default_precision(torch.device("cuda")) == "amp"


def test_resume_continues_from_the_last_epoch(tmp_path) -> None:
    need_data()
    base = dict(
        model="mobilenet",
        manifest=str(MANIFEST),
        out=str(tmp_path / "w"),
        input_size=64,
        limit=32,
        batch_size=16,
        progress=False,
    )
    # A 2-epoch run interrupted after epoch 1 leaves its state file; the rerun does only epoch 2.
    import wbc_ray.training._train as tr

    calls: list[int] = []
    real = tr.binary_metrics

    def boom(*a, **k):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    tr.binary_metrics = boom  # type: ignore[assignment]
    try:
        with pytest.raises(KeyboardInterrupt):
            train(TrainConfig(**base, epochs=2))  # type: ignore[arg-type]
    finally:
        tr.binary_metrics = real  # type: ignore[assignment]
    st = torch.load(tmp_path / "w" / "mobilenet.last.pt", weights_only=True)
    assert st["epoch"] == 0
    card = train(TrainConfig(**base, epochs=2))  # type: ignore[arg-type]
    assert [h["epoch"] for h in card.training["history"]] == [1, 2]


def test_a_time_budget_cuts_epochs_without_changing_the_run(tmp_path) -> None:
    need_data()
    from safetensors.torch import load_file

    base = dict(model="mobilenet", manifest=str(MANIFEST), input_size=64, limit=32, batch_size=16)
    # A budget far below one epoch plans a single epoch (the recipe has 30)...
    card = train(TrainConfig(**base, out=str(tmp_path / "b"), minutes=0.001, progress=False))  # type: ignore[arg-type]
    assert card.training["epochs_planned"] == 1 and card.training["epochs_run"] == 1
    # ...and the probe's steps leave no trace: the same weights as asking for 1 epoch outright.
    train(TrainConfig(**base, out=str(tmp_path / "e"), epochs=1, progress=False))  # type: ignore[arg-type]
    a, b = (
        load_file(tmp_path / "b" / "mobilenet.safetensors"),
        load_file(tmp_path / "e" / "mobilenet.safetensors"),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_quantize_keeps_no_int8_model_that_moves_the_calls(tmp_path, monkeypatch) -> None:
    need_data()
    import wbc_ray.lifecycle._int8 as q8
    from wbc_ray.models import int8_path

    out = tmp_path / "w"
    cfg = dict(model="mobilenet", manifest=str(MANIFEST), out=str(out), input_size=64, limit=32)
    train(TrainConfig(**cfg, epochs=1, batch_size=16, progress=False))  # type: ignore[arg-type]
    stale = int8_path(out, "mobilenet")
    stale.write_bytes(b"an int8 model of older weights")

    class Skewed(torch.nn.Module):  # what a broken int8 model does: every call pushed one way
        def __init__(self, m: torch.nn.Module) -> None:
            super().__init__()
            self.m = m

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.m(x) + torch.tensor([0.0, 6.0])

    real = q8.compile_int8
    monkeypatch.setattr(q8, "compile_int8", lambda q: Skewed(real(q)))
    (r,) = q8.quantize_models(out, MANIFEST, ["mobilenet"], images=16)
    assert not r.kept and r.held_shift > q8.MAX_MEAN_SHIFT
    assert not stale.exists()  # nor is an older int8 model left to be served


def test_tile_rates_are_remeasured_when_the_served_precisions_change(models_dir, tmp_path) -> None:
    from wbc_ray.lifecycle import ensure_tile_rates, served_precisions
    from wbc_ray.models import int8_path

    d = checkpoint_copy(models_dir, tmp_path / "m")
    from wbc_ray.models import Classifier

    default = Classifier.default_precision()  # bf16 on CPUs with native bf16, else fp32; AMP on GPUs
    first = ensure_tile_rates(d, MANIFEST, {"mobilenet": "fp32"}, grid=4)
    assert first["precision"]["mobilenet"] == "fp32" and first["precision"]["xception"] == default
    stamp = (d / "tile_rates.json").stat().st_mtime_ns
    reused = ensure_tile_rates(d, MANIFEST, {"mobilenet": "fp32"}, grid=4)
    assert reused == json.loads(json.dumps(first))  # the stored record, not measured again
    assert (d / "tile_rates.json").stat().st_mtime_ns == stamp
    # Served in other precisions (int8 where its model exists): measured again, on those calls.
    wanted = {"xception": "int8"}
    again = ensure_tile_rates(d, MANIFEST, wanted, grid=4)
    assert again["precision"] == served_precisions(d, wanted) and again["precision"]["mobilenet"] == default
    assert again["precision"]["xception"].startswith("int8:")  # which quantization, too
    # Each set of precisions keeps its own record: going back measures nothing again.
    stamp = (d / "tile_rates.json").stat().st_mtime_ns
    assert ensure_tile_rates(d, MANIFEST, {"mobilenet": "fp32"}, grid=4) == json.loads(json.dumps(first))
    assert (d / "tile_rates.json").stat().st_mtime_ns == stamp
    assert len(json.loads((d / "tile_rates.json").read_text())["records"]) == 2
    int8_path(d, "xception").unlink(missing_ok=True)
    assert served_precisions(d, wanted)["xception"] == default  # no int8 model: the default precision


def test_subtype_head_trains_alongside_and_leaves_a_binary_checkpoint(tmp_path) -> None:
    need_data()
    from safetensors.torch import load_file

    from wbc_ray.models import build_model, submodule
    from wbc_ray.training._train import _SubtypeHead

    # The auxiliary head reads the binary head's input and gets gradients from its own loss.
    model = build_model("mobilenet", num_classes=2)
    head = submodule(model, "classifier")
    aux = _SubtypeHead(head, torch.tensor([0, 1, 1, 2, 3, 3]), 4)
    model(torch.rand(4, 3, 64, 64))
    assert aux.features is not None and aux.features.shape == (4, head.in_features)
    aux.loss(1, torch.tensor([1, 2, 3]), 0.0).backward()
    assert aux.linear.weight.grad is not None and aux.linear.weight.grad.abs().sum() > 0
    # Balanced over subtypes: the rarest weighs most.
    assert aux.class_w.argmax() in (0, 2) and aux.class_w.argmin() in (1, 3)

    # A real epoch with it (and with mosaic views, which carry no subtype) saves the same
    # tensors as a plain binary model: nothing of the auxiliary head reaches the checkpoint.
    card = train(_one_small_epoch(tmp_path / "w", mosaic=0.25, subtype_weight=0.5))
    assert card.training["subtype_weight"] == 0.5
    saved = load_file(str(tmp_path / "w" / "mobilenet.safetensors"))
    assert set(saved) == set(build_model("mobilenet", num_classes=2).state_dict())
    assert saved["classifier.weight"].shape[0] == 2

    # A manifest without subtypes cannot feed it: a clear error, not a silent binary run.
    import csv

    with open(MANIFEST) as fh:
        rows = [r for r in csv.DictReader(fh)]
    rows = [r for sp in ("train", "val", "test") for r in rows if r["split"] == sp][::200]
    man = tmp_path / "nosub.csv"
    man.write_text(
        "path,label,split\n"
        + "".join(f"{MANIFEST.parent / r['path']},{r['label']},{r['split']}\n" for r in rows)
    )
    with pytest.raises(ValueError, match="subtype"):
        train(TrainConfig(model="mobilenet", manifest=str(man), out=str(tmp_path / "x"), subtype_weight=1.0))
