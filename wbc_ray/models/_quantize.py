"""Static int8 inference on CPU through OpenVINO: quantized once from validation images, stored
beside the weights as an OpenVINO model (`<name>.int8.xml` and `.bin`: plain data, no pickles).

Why OpenVINO and not PyTorch's own int8 (PT2E graphs compiled by Inductor, which this replaced):
measured on an AVX2-only AMD EPYC, one thread (how a Serve replica runs), batch 32, real test
images, alternating in one process: InceptionV3 (128 px) 118 img/s against 80, Xception (96 px)
72-76 against 63-77, MobileNetV2 (128 px) 437 against 395; a model compiles for the CPU in 0.5 s
at load instead of 30-90 s of C++ per model and batch size (cached per machine, with locks and a
size budget); any batch size gives a tile bit-identical answers (the compiled graphs ran at fixed
sizes, padded); and no C++ compiler is needed where the app runs.

NNCF's post-training quantization fits the ranges (symmetric, weights per channel) and corrects
the biases. On CPUs without VNNI, oneDNN's int8 kernels sum pairs of u8 x s8 products in
saturating int16: weights are kept to 7 bits everywhere (NNCF's overflow fix), so no pair can
saturate on any CPU the model is later served on, and `wbc-ray quantize` refuses models whose
held-out answers move (lifecycle._int8).
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import WbcRayError
from ..release import derived_dir

_FORMAT = "openvino-nncf-v1"
_META = "wbc_ray"

# OpenVINO's model converter and NNCF send usage data to Intel unless a consent file under
# ~/intel says no (opt-out). A tool that screens patients' slides must not call out on its own,
# and both fall back to stubs when `openvino_telemetry` cannot be imported: so, in every process
# that loads this package, it cannot (a None entry makes `import` fail). `import openvino`
# already imports the converter, so this must come before it.
if "openvino_telemetry" not in sys.modules:
    sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]


def int8_path(models_dir: str | os.PathLike[str], name: str) -> Path:
    """The int8 model's description; its weights sit beside it with the suffix `.bin`. Beside
    the checkpoints, or for a release in its folder in the user cache: int8 models are built per
    machine (`wbc-ray quantize`), since a release holds no more than it needs (size).
    """
    return derived_dir(models_dir) / f"{name}.int8.xml"


class Int8Unavailable(WbcRayError, RuntimeError):
    """No usable int8 model: never quantized, quantized for other weights, or unreadable."""


@functools.cache
def _core() -> Any:
    import openvino as ov

    return ov.Core()


def to_openvino(model: nn.Module, example: torch.Tensor) -> Any:
    """The float network as an `openvino.Model`, its batch dimension left free (one model serves
    every batch size).
    """
    import openvino as ov

    return ov.convert_model(model.float().eval(), example_input=example[:2].contiguous())


def quantize_int8(float_model: Any, calibration: torch.Tensor) -> Any:
    """`float_model` (from `to_openvino`) quantized on `calibration` (preprocessed images, NCHW),
    one image per statistics step. Returns an `openvino.Model`.
    """
    import nncf
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    images = [calibration[i : i + 1].contiguous().numpy() for i in range(len(calibration))]
    advanced = nncf.AdvancedQuantizationParameters(
        overflow_fix=nncf.OverflowFix.ENABLE,
        # Activation ranges span the extremes seen over all calibration images. NNCF's default
        # for CNNs (the mean over images of each one's extremes) clipped the last layers of
        # images surer than most: InceptionV3's fp32 logit margins of -4 to -7 all came out near
        # -3.5 (correlation with fp32 over 64 test images 0.87, here 0.9996), and MobileNetV2's
        # held-out probabilities moved 0.056 on average (here 0.019).
        activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX,
    )
    return nncf.quantize(
        float_model,
        nncf.Dataset(images),
        subset_size=len(images),
        preset=nncf.QuantizationPreset.PERFORMANCE,
        advanced_parameters=advanced,
    )


class Int8Model(nn.Module):
    """An int8 OpenVINO model compiled for this CPU, called like the float network it came from:
    NCHW float tensor in, logits out. `id` names the quantization (a fresh one per `quantize`).
    """

    def __init__(self, ov_model: Any, threads: int | None = None) -> None:
        super().__init__()
        self.ov_model = ov_model
        self.threads = threads or torch.get_num_threads()
        self._compiled: dict[int, Any] = {}
        self.use_threads(self.threads)
        self.id = _meta(ov_model).get("id", "")
        self._local = threading.local()  # an infer request per calling thread and thread count

    def _compile(self, threads: int) -> Any:
        # A Serve replica runs one thread beside three others on two cores: the thread count is
        # the process's torch setting, and threads are not pinned (OpenVINO pins by default,
        # and four replicas would pile onto the same core). fp32 for the layers left in float,
        # also where the CPU has bf16, so answers do not change with the machine.
        config = {
            "INFERENCE_NUM_THREADS": threads,
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
            "ENABLE_CPU_PINNING": False,
            "INFERENCE_PRECISION_HINT": "f32",
        }
        return _core().compile_model(self.ov_model, "CPU", config)

    def use_threads(self, threads: int) -> None:
        """Run the next calls on `threads` threads. OpenVINO fixes a compiled model's threads, so
        each count has a compiled model of its own (made on first use; `prepare` to do it ahead).
        """
        self.prepare(threads)
        self.compiled = self._compiled[threads]

    def prepare(self, threads: int) -> None:
        if threads not in self._compiled:
            self._compiled[threads] = self._compile(threads)

    def train(self, mode: bool = True) -> Int8Model:
        if mode:
            raise RuntimeError("an int8 model is for inference only")
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        requests = getattr(self._local, "requests", None)
        if requests is None:
            requests = self._local.requests = {}
        request = requests.get(id(self.compiled))
        if request is None:
            request = requests[id(self.compiled)] = self.compiled.create_infer_request()
        x = x.detach().float().contiguous(memory_format=torch.contiguous_format)
        out = request.infer([x.numpy()])
        return torch.from_numpy(np.array(next(iter(out.values())), copy=True))


def _meta(ov_model: Any) -> dict[str, str]:
    keys = ("format", "version", "id")
    return {k: ov_model.get_rt_info([_META, k]).astype(str) for k in keys if ov_model.has_rt_info([_META, k])}


def save_int8(ov_model: Any, path: str | os.PathLike[str], version: str) -> None:
    """Store the quantized model for weights `version`, with an id of its own. The `.bin` is moved into
    place before the `.xml`, so a reader never pairs a new description with old weights.
    """
    import openvino as ov

    path = Path(path)
    qid = uuid.uuid4().hex[:12]
    for key, value in {"format": _FORMAT, "version": version, "id": qid}.items():
        ov_model.set_rt_info(value, [_META, key])
    tmp = path.with_name(f".{path.stem}.{qid}.tmp.xml")
    ov.save_model(ov_model, os.fspath(tmp))
    os.replace(tmp.with_suffix(".bin"), path.with_suffix(".bin"))
    os.replace(tmp, path)


def _read(path: Path, version: str) -> tuple[Any, dict[str, str]]:
    """The int8 model at `path` and its tags, when it is usable for weights `version`; else
    Int8Unavailable, saying why.
    """
    if not path.exists():
        raise Int8Unavailable(f"no int8 model at {path}; run `wbc-ray quantize --models {path.parent}`")
    try:
        ov_model = _core().read_model(os.fspath(path))
    except Exception as exc:  # truncated, foreign, or its .bin missing
        raise Int8Unavailable(
            f"{path} is not a readable OpenVINO model ({str(exc).splitlines()[0]}); rerun `wbc-ray quantize`"
        ) from None
    meta = _meta(ov_model)
    if meta.get("format") != _FORMAT:
        raise Int8Unavailable(
            f"{path} holds an int8 model in format {meta.get('format')!r}, this version reads "
            f"{_FORMAT!r}; rerun `wbc-ray quantize`"
        )
    if meta.get("version") != version:
        raise Int8Unavailable(
            f"{path} was quantized for weights {meta.get('version')!r}, not {version!r}; "
            "rerun `wbc-ray quantize`"
        )
    return ov_model, meta


def int8_id(path: str | os.PathLike[str], version: str) -> str | None:
    """The id of the int8 model at `path` when it is usable for weights `version`, else None."""
    try:
        _, meta = _read(Path(path), version)
    except Int8Unavailable:
        return None
    return meta.get("id") or None


def load_int8(path: str | os.PathLike[str], version: str, threads: int | None = None) -> Int8Model:
    """The stored int8 model, compiled for this CPU; raises Int8Unavailable when it cannot be used."""
    path = Path(path)
    ov_model, _ = _read(path, version)
    try:
        return Int8Model(ov_model, threads)
    except Exception as exc:  # a .bin that does not fit its description
        raise Int8Unavailable(
            f"{path} could not be compiled ({str(exc).splitlines()[0]}); rerun `wbc-ray quantize`"
        ) from None
