from __future__ import annotations

import numpy as np
import pytest
import torch

from wbc_ray.models import (
    Classifier,
    WeightsUnavailable,
    build_model,
    default_card,
    get_spec,
    gradcam,
    list_models,
    load_checkpoint,
    save_checkpoint,
    tile_scale,
)


def test_registry_has_the_three_architectures() -> None:
    assert list_models() == ["inception_v3", "mobilenet", "xception"]
    for name in list_models():
        spec = get_spec(name)
        model = build_model(name, num_classes=2).eval()
        with torch.no_grad():
            out = model(torch.zeros(1, 3, 96, 96))
        assert out.shape == (1, 2)
        assert dict(model.named_modules())[spec.cam_layer] is not None
    with pytest.raises(ValueError, match="unknown architecture"):
        get_spec("resnet")


def test_imagenet_download_fails_clearly_offline(monkeypatch) -> None:
    # The real download path, with the hub switched off so no test touches the network. The hub
    # reads HF_HUB_OFFLINE once, at import: once an earlier test has imported it, only the
    # constant counts (without it this test tried the network: 47 s of timeouts).
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsUnavailable, match="local weight file"):
        build_model("mobilenet", weights="imagenet")


def test_local_weight_file_is_loaded_and_head_replaced(tmp_path) -> None:
    from safetensors.torch import save_file

    src = build_model("mobilenet", num_classes=1000)
    path = tmp_path / "mobilenet_imagenet.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    model = build_model("mobilenet", num_classes=2, weights=path)
    a, b = src.state_dict(), model.state_dict()
    assert torch.equal(a["conv_stem.weight"], b["conv_stem.weight"])
    assert b["classifier.weight"].shape == (2, 1280)
    with pytest.raises(WeightsUnavailable, match="does not exist"):
        build_model("mobilenet", weights=tmp_path / "missing.safetensors")
    with pytest.raises(WeightsUnavailable, match="wrong architecture|no tensor"):
        build_model("xception", weights=path)


def test_pickled_code_in_a_pth_file_is_refused(tmp_path) -> None:
    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, path)
    with pytest.raises(Exception, match="(?i)weights.only|unsupported|global"):
        build_model("mobilenet", weights=path)


def test_checkpoint_round_trip_and_classifier(tmp_path) -> None:
    model = build_model("mobilenet", num_classes=2).eval()
    card = default_card("mobilenet", 64)
    card.temperature, card.bias = 1.7, -0.3
    save_checkpoint(model, card, tmp_path)
    loaded, card2 = load_checkpoint(tmp_path, "mobilenet")
    assert card2 == card and len(card2.version) == 12
    assert card2.tile_mpp == pytest.approx(0.5 * 224 / 64)
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    tiles = np.random.default_rng(0).integers(0, 255, (5, 80, 80, 3), dtype=np.uint8)
    clf = Classifier(loaded, card2, device="cpu", precision="fp32")
    p = clf.predict(tiles)
    assert p.shape == (5, 2) and np.allclose(p.sum(1), 1, atol=1e-5)
    # Calibration is applied: same as softmax(z / T + [0, b]).
    z = clf.logits(tiles)
    want = torch.softmax(z / 1.7 + torch.tensor([0.0, -0.3]), 1).numpy()
    assert np.allclose(p, want, atol=1e-5)
    cam = gradcam(clf, tiles[0])
    assert cam.shape == (80, 80) and cam.min() >= 0 and cam.max() <= 1


def test_missing_checkpoint_is_explained(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="make models"):
        load_checkpoint(tmp_path, "xception")


def test_models_of_different_input_sizes_share_one_tile_scale() -> None:
    # Xception at 96 px beside two models at 128 px: one 112 um field, read at 128 px, so no
    # model gets an upsampled tile.
    cards = [{"mpp": 0.5, "input_size": 128}, {"mpp": 0.5, "input_size": 96}, {"mpp": 0.5, "input_size": 128}]
    assert tile_scale(cards) == (0.875, 128)
    assert tile_scale(cards[1:2]) == (round(112 / 96, 6), 96)
    # A model trained on another field of view would see other cells per tile: refused.
    with pytest.raises(ValueError, match="field of view"):
        tile_scale([{"mpp": 0.5, "input_size": 128}, {"mpp": 0.25, "input_size": 128}])
