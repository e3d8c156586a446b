"""Checkpoints: safetensors weights + JSON model card. Nothing is ever unpickled."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from .._digest import file_sha256
from ..errors import MissingInput
from ..manifest import CLASSES
from ..release import is_release, verify_release
from ..scale import FIELD_PX, TRAINING_MPP
from ._registry import build_model, get_spec

TRAINING_PX = FIELD_PX


@dataclass
class ModelCard:
    name: str
    architecture: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    classes: tuple[str, ...] = CLASSES
    # Scale of the model input: training images are 224 px at 0.5 um/px, resized to input_size.
    mpp: float = TRAINING_MPP
    manifest_hash: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    # Calibrated logits: z / temperature, plus `bias` on the malignant logit (the operating
    # point chosen on the validation split, so that p >= 0.5 is the tuned decision).
    temperature: float = 1.0
    bias: float = 0.0
    version: str = ""
    # For a released model: its stored dtype and how fp16 storage moved its test decisions.
    release: dict[str, Any] = field(default_factory=dict)

    @property
    def tile_mpp(self) -> float:
        """Microns per pixel of a model input tile."""
        return self.mpp * TRAINING_PX / self.input_size

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        d = json.loads(text)
        d["mean"], d["std"], d["classes"] = tuple(d["mean"]), tuple(d["std"]), tuple(d["classes"])
        return cls(**d)


def default_card(name: str, input_size: int | None = None) -> ModelCard:
    spec = get_spec(name)
    return ModelCard(
        name=name,
        architecture=spec.timm_name,
        input_size=input_size or spec.input_size,
        mean=spec.mean,
        std=spec.std,
    )


def save_checkpoint(model: nn.Module, card: ModelCard, out_dir: str | os.PathLike[str]) -> Path:
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / f"{card.name}.safetensors"
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = weights.with_suffix(".tmp")
    save_file(state, str(tmp), metadata={"architecture": card.architecture})
    card.version = file_sha256(tmp)[:12]
    os.replace(tmp, weights)
    (out / f"{card.name}.json").write_text(card.to_json())
    return weights


def load_card(models_dir: str | os.PathLike[str], name: str) -> ModelCard:
    """A checkpoint's model card, once both of its files are there (weights not read)."""
    d = Path(models_dir)
    _check_release(d, name)
    card_path, weights = d / f"{name}.json", d / f"{name}.safetensors"
    if not card_path.exists() or not weights.exists():
        raise MissingInput(
            f"no checkpoint for {name} in {d} (need {name}.json and {name}.safetensors); "
            "the release is in weights/, and `make models` trains new ones"
        )
    return ModelCard.from_json(card_path.read_text())


def load_weights(models_dir: str | os.PathLike[str], name: str, card: ModelCard) -> nn.Module:
    """The network `name` with its checkpoint's weights, in eval mode (`card` from `load_card`)."""
    from safetensors.torch import load_file

    _check_release(Path(models_dir), name)
    model = build_model(name, num_classes=len(card.classes))
    # A release stores fp16 weights; load_state_dict copies them into the fp32 parameters.
    model.load_state_dict(load_file(str(Path(models_dir) / f"{name}.safetensors")))
    model.eval()
    return model


def load_checkpoint(models_dir: str | os.PathLike[str], name: str) -> tuple[nn.Module, ModelCard]:
    card = load_card(models_dir, name)
    return load_weights(models_dir, name, card), card


def available(models_dir: str | os.PathLike[str]) -> list[str]:
    d = Path(models_dir)
    if is_release(d):
        return list(verify_release(d).models)
    return sorted(p.stem for p in d.glob("*.json") if (d / f"{p.stem}.safetensors").exists())


def _check_release(models_dir: Path, name: str) -> None:
    """In a release, every file must match its release record before one model is read from it."""
    if is_release(models_dir):
        release = verify_release(models_dir)
        if name not in release.models:
            raise MissingInput(
                f"release {release.version} in {models_dir} has no model {name!r} "
                f"(it has {list(release.models)})"
            )
