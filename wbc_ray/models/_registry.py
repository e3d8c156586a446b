"""One registry, one interface for the three architectures (timm under the hood)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import InvalidInput, WeightsUnavailable


@dataclass(frozen=True)
class ArchSpec:
    name: str  # our name, used on the CLI and in model cards
    timm_name: str
    input_size: int  # default training/inference side in pixels
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    cam_layer: str  # module path whose activations Grad-CAM weights
    head: str  # module path of the classifier, replaced for our classes


IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
INCEPTION = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))

REGISTRY: dict[str, ArchSpec] = {}


def register(spec: ArchSpec) -> ArchSpec:
    REGISTRY[spec.name] = spec
    return spec


register(ArchSpec("mobilenet", "mobilenetv2_100", 128, *IMAGENET, cam_layer="conv_head", head="classifier"))
register(ArchSpec("xception", "legacy_xception", 128, *INCEPTION, cam_layer="conv4", head="fc"))
register(ArchSpec("inception_v3", "inception_v3", 128, *INCEPTION, cam_layer="Mixed_7c", head="fc"))


def get_spec(name: str) -> ArchSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise InvalidInput(f"unknown architecture {name!r}; choose one of {sorted(REGISTRY)}") from None


def list_models() -> list[str]:
    return sorted(REGISTRY)


def build_model(name: str, num_classes: int = 2, weights: str | os.PathLike[str] | None = None) -> nn.Module:
    """Architecture `name` with `num_classes` outputs.

    weights: None (random init), "imagenet" (download through timm/Hugging Face Hub), or a
    local .safetensors / .pth file of backbone weights (the classifier head is re-initialised
    when its shape differs).
    """
    import timm

    spec = get_spec(name)
    if weights == "imagenet":
        return _pretrained(spec, num_classes)
    model = timm.create_model(spec.timm_name, pretrained=False, num_classes=num_classes)
    if weights is not None:
        load_backbone(model, Path(weights))
    return model


def _pretrained(spec: ArchSpec, num_classes: int) -> nn.Module:
    import timm

    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "10")
    try:
        return timm.create_model(spec.timm_name, pretrained=True, num_classes=num_classes)
    except Exception as exc:
        raise WeightsUnavailable(
            f"could not download ImageNet weights for {spec.name} ({spec.timm_name}) from the model "
            f"hub: {type(exc).__name__}: {str(exc)[:200]}. Pass a local weight file instead "
            "(--weights PATH.safetensors) or train from scratch (--weights none)."
        ) from exc


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsUnavailable(f"weight file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if path.suffix in {".pth", ".pt", ".bin"}:
        # weights_only refuses arbitrary pickled objects: a hostile file cannot run code.
        state = torch.load(path, map_location="cpu", weights_only=True)
        return state.get("state_dict", state) if isinstance(state, dict) else state
    raise WeightsUnavailable(f"weight file {path} must be .safetensors or .pth")


def load_backbone(model: nn.Module, path: Path) -> list[str]:
    """Load matching tensors, skip a differently shaped head; return the keys left at init."""
    state = _read_state(path)
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise WeightsUnavailable(f"{path} has no tensor that fits this architecture")
    missing = [k for k in own if k not in usable]
    if len(missing) > 0.2 * len(own):
        raise WeightsUnavailable(
            f"{path} matches only {len(usable)} of {len(own)} tensors: wrong architecture?"
        )
    model.load_state_dict(usable, strict=False)
    return missing


def submodule(model: nn.Module, path: str) -> nn.Module:
    mod: nn.Module = model
    for part in path.split("."):
        mod = getattr(mod, part)
    return mod
