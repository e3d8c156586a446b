"""Static int8 inference on CPU: activation ranges measured once, stored beside the weights.

Why int8: on CPUs with AVX-512 VNNI but no AMX (this project's test machine), bf16 autocast is
slower than fp32 for Xception and InceptionV3, while int8 convolutions run 2-3x faster. The
ranges come from validation images (`wbc-ray quantize`) and are stored as plain tensors in
`<name>.int8.safetensors`, tagged with the weights' version and the range scheme, so loading
never unpickles and stale ranges are refused. Weights are quantized per output channel at load.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

# How activation ranges are fitted. Neither wins everywhere: on this project's test split plain
# min/max kept 99.5% of Xception's fp32 decisions (histogram 99.3%) and histogram-fitted
# ranges 99.8% of InceptionV3's (min/max 98.5%), so `wbc-ray quantize` picks per model.
SCHEMES = ("minmax", "histogram")
_FORMAT = "x86-v1"
_OBSERVER_KEYS = ("min_val", "max_val", "histogram")
# Quantized torch.cat requantizes inputs whose ranges differ (Inception's branch joins) and warns
# on every model it runs; the decisions `wbc-ray quantize` checks already include that effect.
warnings.filterwarnings("ignore", message="All inputs of this cat operator must share")


def int8_path(models_dir: str | os.PathLike[str], name: str) -> Path:
    return Path(models_dir) / f"{name}.int8.safetensors"


class Int8Unavailable(RuntimeError):
    """No usable int8 ranges for a model: never measured, or measured for other weights."""


def _qconfig_mapping(scheme: str) -> object:
    from torch.ao.quantization import (
        HistogramObserver,
        MinMaxObserver,
        PerChannelMinMaxObserver,
        QConfig,
        QConfigMapping,
    )

    if scheme not in SCHEMES:
        raise ValueError(f"int8 scheme must be one of {SCHEMES}, got {scheme!r}")
    observer = MinMaxObserver if scheme == "minmax" else HistogramObserver
    qconfig = QConfig(
        # Full 8-bit activations: reduce_range exists for CPUs without VNNI, which overflow.
        activation=observer.with_args(dtype=torch.quint8, quant_min=0, quant_max=255, reduce_range=False),
        weight=PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric),
    )
    return QConfigMapping().set_global(qconfig)


def _prepare(model: nn.Module, example: torch.Tensor, scheme: str) -> nn.Module:
    from torch.ao.quantization.quantize_fx import prepare_fx

    torch.backends.quantized.engine = "x86"
    m = copy.deepcopy(model).to(memory_format=torch.contiguous_format).float().eval()
    with warnings.catch_warnings():
        # torch.ao warns that it is moving to torchao and prints whole FX graphs; the API works.
        warnings.simplefilter("ignore")
        return prepare_fx(m, _qconfig_mapping(scheme), example_inputs=(example,))  # type: ignore[arg-type]


def _convert(prepared: nn.Module) -> nn.Module:
    from torch.ao.quantization.quantize_fx import convert_fx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert_fx(prepared)  # type: ignore[arg-type]


def measure_int8(
    model: nn.Module, batches: Iterable[torch.Tensor], scheme: str = "minmax"
) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """Run preprocessed `batches` through an observed copy of `model`: (int8 model, its ranges)."""
    it = iter(batches)
    first = next(it)
    prepared = _prepare(model, first[:1], scheme)
    with torch.inference_mode():
        prepared(first)
        for x in it:
            prepared(x)
    ranges = {k: v.detach().clone() for k, v in prepared.state_dict().items() if k.endswith(_OBSERVER_KEYS)}
    return _convert(prepared), ranges


def save_int8(
    ranges: dict[str, torch.Tensor], out: str | os.PathLike[str], version: str, scheme: str
) -> None:
    from safetensors.torch import save_file

    save_file(ranges, os.fspath(out), metadata={"version": version, "scheme": scheme, "format": _FORMAT})


def _header(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(os.fspath(path), framework="pt") as fh:
        return fh.metadata() or {}


def _usable(meta: dict[str, str], version: str) -> bool:
    return meta.get("version") == version and meta.get("format") == _FORMAT and meta.get("scheme") in SCHEMES


def int8_matches(path: str | os.PathLike[str], version: str) -> bool:
    """Whether `path` holds int8 ranges for weights `version` (reads only the file's header)."""
    return Path(path).exists() and _usable(_header(Path(path)), version)


def load_int8(model: nn.Module, input_size: int, version: str, path: str | os.PathLike[str]) -> nn.Module:
    """`model` in int8 with the stored ranges; raises Int8Unavailable when they cannot be used."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise Int8Unavailable(f"no int8 ranges at {path}; run `wbc-ray quantize --models {path.parent}`")
    meta = _header(path)
    if not _usable(meta, version):
        raise Int8Unavailable(
            f"{path} was measured for weights {meta.get('version')!r}, not {version!r}; "
            "rerun `wbc-ray quantize`"
        )
    scheme = meta["scheme"]
    prepared = _prepare(model, torch.zeros(1, 3, input_size, input_size), scheme)
    ranges = load_file(os.fspath(path))
    expected = {k for k in prepared.state_dict() if k.endswith(_OBSERVER_KEYS)}
    if set(ranges) != expected:
        raise Int8Unavailable(f"{path} does not match this model's layers; rerun `wbc-ray quantize`")
    prepared.load_state_dict(ranges, strict=False)
    return _convert(prepared)
