"""Score a slide with TIAToolbox's PatchPredictor, one TorchScript model after another (what a
TIAToolbox user does with three models), in TIAToolbox's own venv: its 2.x engine (`run`, Dask
and Zarr underneath) or, in a venv holding 1.x, its older `predict`.

Writes JSON: per model, the patches' top-left corners at the read resolution and p(malignant),
the seconds each predict() took, the process's start-up and its peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

T0 = time.perf_counter()

import numpy as np  # noqa: E402
import tiatoolbox  # noqa: E402
import torch  # noqa: E402
from tiatoolbox.models.engine.patch_predictor import PatchPredictor  # noqa: E402
from tiatoolbox.models.models_abc import ModelABC  # noqa: E402

V2 = int(tiatoolbox.__version__.split(".")[0]) >= 2
if V2:
    from tiatoolbox.models.engine.io_config import IOPatchPredictorConfig  # noqa: E402
else:
    from tiatoolbox.models.engine.patch_predictor import IOPatchPredictorConfig  # noqa: E402


class Scripted(ModelABC):
    """A TorchScript network (normalised 3 x S x S in, two calibrated logits out) as TIAToolbox
    wants a model: with `infer_batch`, fed uint8 patches by its data loader.
    """

    def __init__(self, path: str, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.net = torch.jit.load(path, map_location="cpu").eval()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        return self.net((x - self.mean) / self.std)

    @staticmethod
    def infer_batch(model: Scripted, batch_data: torch.Tensor, *args: object, **kw: object) -> np.ndarray:
        # 1.x passes on_gpu, 2.x device=: CPU either way here.
        with torch.inference_mode():
            return torch.softmax(model(torch.as_tensor(batch_data)), dim=1).numpy()


def predict(model: Scripted, a: argparse.Namespace, io: IOPatchPredictorConfig, work: str) -> tuple:
    """(patch corners at the read resolution (N, 2), p(malignant) (N,)) for the slide."""
    if not V2:
        predictor = PatchPredictor(
            model=model, batch_size=a.batch, num_loader_workers=a.workers, verbose=False
        )
        res = predictor.predict(
            [a.slide], masks=[a.mask], mode="wsi", ioconfig=io, return_probabilities=True, on_gpu=False
        )[0]
        return np.asarray(res["coordinates"])[:, :2], np.asarray(res["probabilities"])[:, 1]
    import zarr

    predictor = PatchPredictor(model=model, batch_size=a.batch, num_workers=a.workers, verbose=False)
    out = predictor.run(
        [a.slide],
        masks=[a.mask],
        patch_mode=False,
        ioconfig=io,
        save_dir=work,
        overwrite=True,
        output_type="zarr",
        return_probabilities=True,
        device="cpu",
    )
    g = zarr.open(str(next(iter(out.values()))), mode="r")
    return np.asarray(g["coordinates"][:])[:, :2], np.asarray(g["probabilities"][:])[:, 1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--slide", required=True)
    ap.add_argument("--mask", required=True, help="tissue mask image covering the slide")
    ap.add_argument("--model", action="append", required=True, help="NAME=PATH of a TorchScript file")
    ap.add_argument("--mpp", type=float, required=True)
    ap.add_argument("--patch", type=int, required=True)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    io = IOPatchPredictorConfig(
        input_resolutions=[{"units": "mpp", "resolution": a.mpp}],
        patch_input_shape=[a.patch, a.patch],
        stride_shape=[a.patch, a.patch],
    )
    out: dict = {"startup_s": time.perf_counter() - T0, "models": {}}
    for spec in a.model:
        name, path = spec.split("=", 1)
        # Each network's own normalisation, from the model config beside it (WSInfer's format).
        with open(os.path.join(os.path.dirname(path), "config.json")) as fh:
            norm = next(t["arguments"] for t in json.load(fh)["transform"] if t["name"] == "Normalize")
        t = time.perf_counter()
        work = os.path.join(os.path.dirname(os.path.abspath(a.out)), f"tia_{name}")
        coords, p = predict(Scripted(path, norm["mean"], norm["std"]), a, io, work)
        out["models"][name] = {
            "seconds": time.perf_counter() - t,
            "coordinates": coords.round().astype(int).tolist(),
            "p_malignant": p.round(6).tolist(),
        }
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 + (
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    )
    with open(a.out, "w") as fh:
        json.dump(out, fh)


if __name__ == "__main__":
    main()
