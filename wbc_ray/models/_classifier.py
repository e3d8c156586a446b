"""A checkpointed model ready for inference: preprocessing, precision, calibration in one call."""

from __future__ import annotations

import contextlib
import os

import numpy as np
import torch
from torch import nn

from ..errors import InvalidInput
from ._checkpoint import ModelCard, load_card, load_weights
from ._cpu import cpu_has_amx, cpu_has_bf16
from ._preprocess import preprocess
from ._quantize import Int8Unavailable, int8_path, load_int8

# "fp32" | "bf16" (CPU autocast) | "amp" (CUDA fp16 autocast) | "int8" (CPU, OpenVINO, made
# by `wbc-ray quantize`; see _quantize)
Precision = str


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def training_precision(device: torch.device, requested: str = "auto") -> Precision:
    """The autocast mode for training: "auto" is AMP on GPUs; on CPUs bf16 only with AMX.

    Measured on an AVX-512-bf16 CPU without AMX (2 cores, batch 64, 128 px, channels_last):
    a training step in bf16 autocast is slower than fp32 (Xception 4.3 vs 3.3 s, InceptionV3
    2.0 vs 1.5 s, MobileNetV2 0.89 vs 0.87 s): autocast's casts cost more than its dot products save.
    """
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "amp"
    return "bf16" if cpu_has_amx() else "fp32"


def autocast(device: torch.device, precision: Precision) -> contextlib.AbstractContextManager[object]:
    if precision in ("fp32", "int8"):
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if device.type == "cpu" or precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


class Classifier:
    def __init__(
        self,
        model: nn.Module,
        card: ModelCard,
        device: torch.device | str | None = None,
        precision: Precision | None = None,
        channels_last: bool = True,
    ) -> None:
        self.card = card
        self.device = torch.device(device) if device is not None else default_device()
        self.precision = precision or self.default_precision(self.device)
        if self.precision == "int8" and self.device.type != "cpu":
            raise InvalidInput("int8 inference runs on CPU only; use amp on GPUs")
        self.channels_last = channels_last
        self.model = model.to(self.device).eval()
        # An int8 model lays out its own tensors (OpenVINO picks per layer).
        if channels_last and self.precision != "int8":
            self.model = self.model.to(memory_format=torch.channels_last)

    @staticmethod
    def default_precision(device: torch.device | None = None) -> Precision:
        """AMP on GPUs; on CPUs bf16 autocast where bf16 is native (with channels_last it beats
        fp32 on AVX-512-bf16 CPUs), else fp32, as emulated bf16 is several times slower.
        """
        if (device or default_device()).type == "cuda":
            return "amp"
        return "bf16" if cpu_has_bf16() else "fp32"

    @classmethod
    def load(cls, models_dir: str | os.PathLike[str], name: str, **kw: object) -> Classifier:
        """Raises Int8Unavailable for precision="int8" when no usable int8 model is stored."""
        card = load_card(models_dir, name)
        if kw.get("precision") != "int8":
            return cls(load_weights(models_dir, name, card), card, **kw)  # type: ignore[arg-type]
        # No fp32 network is built (nor timm imported: ~3 s a replica, four at a Serve start).
        return cls(load_int8(int8_path(models_dir, name), card.version), card, **kw)  # type: ignore[arg-type]

    @classmethod
    def load_served(
        cls, models_dir: str | os.PathLike[str], name: str, precision: Precision | None, **kw: object
    ) -> tuple[Classifier, str]:
        """Load in `precision`, or, when the int8 model is missing, stale or unreadable, in the
        default precision: a missing quantization must not stop serving. Returns (classifier, note).
        """
        try:
            return cls.load(models_dir, name, precision=precision, **kw), ""
        except Int8Unavailable as exc:
            return cls.load(models_dir, name, **kw), f"int8 unavailable, serving the default precision: {exc}"

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def precision_id(self) -> str:
        """The precision, and for int8 which quantization: answers measured on one (tile rates)
        do not hold for another.
        """
        qid = getattr(self.model, "id", "") if self.precision == "int8" else ""
        return f"int8:{qid}" if qid else self.precision

    def inputs(self, tiles: np.ndarray | torch.Tensor) -> torch.Tensor:
        c = self.card
        return preprocess(tiles, c.input_size, c.mean, c.std, self.device)

    def calibrate(self, logits: torch.Tensor) -> torch.Tensor:
        z = logits.float() / self.card.temperature
        z[:, 1] = z[:, 1] + self.card.bias
        return z

    @torch.inference_mode()
    def logits(self, tiles: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = self.inputs(tiles)
        with autocast(self.device, self.precision):
            return self.model(x).float()

    def predict(self, tiles: np.ndarray | torch.Tensor, batch_size: int = 64) -> np.ndarray:
        """Calibrated class probabilities (N, K) for uint8 tiles (N, H, W, 3)."""
        arr = tiles if isinstance(tiles, torch.Tensor) else np.asarray(tiles)
        out = [
            torch.softmax(self.calibrate(self.logits(arr[i : i + batch_size])), dim=1).cpu().numpy()
            for i in range(0, len(arr), batch_size)
        ]
        return np.concatenate(out) if out else np.zeros((0, len(self.card.classes)), np.float32)
