"""The GPU path of the Serve app where a CUDA GPU exists (skipped elsewhere, CI included):
`wbc-ray analyze` picks configs/serve.gpu.yaml by itself, the three replicas share one GPU and
run AMP, and their scores and Grad-CAM agree with the same weights in fp32 on the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_gpu_replicas_analyse_a_slide_and_agree_with_cpu_fp32(
    ray_local, models_dir: Path, composed: Path, test_items, tmp_path: Path
) -> None:
    from ray import serve

    from wbc_ray.analyze import analyze_slides
    from wbc_ray.lifecycle import load_images
    from wbc_ray.models import Classifier, gradcam
    from wbc_ray.serve import ensemble_handle
    from wbc_ray.serve.app import SERVE_GPU_CONFIG, default_serve_config

    assert default_serve_config() == SERVE_GPU_CONFIG
    serve.shutdown()  # whatever an earlier test started: this one must start the app itself
    try:
        (r,) = analyze_slides(
            [str(composed)], models_dir=str(models_dir), out_dir=str(tmp_path), progress=False
        )
        assert r.ok, r.error
        truth = json.loads(composed.with_suffix(".json").read_text())
        assert r.result["n_tiles"] >= truth["n_fields"]
        ens = ensemble_handle()
        stats = ens.stats.remote().result()
        assert {s["name"] for s in stats} == {"mobilenet", "xception", "inception_v3"}
        assert all(s["device"].startswith("cuda") and s["precision"] == "amp" for s in stats), stats
        assert sum(s["tiles_scored"] for s in stats) >= 3 * r.result["n_tiles"]

        # The same images through the GPU replicas (AMP) and through fp32 on the CPU.
        x = load_images(test_items[:96], 128)[0].numpy()
        got = ens.score.remote(x, interactive=True).result()["probs"]  # (N, M, 2), model-name order
        cpu = {}
        for m, name in enumerate(sorted(s["name"] for s in stats)):
            cpu[name] = Classifier.load(str(models_dir), name, device="cpu", precision="fp32")
            want = cpu[name].predict(x)
            assert np.abs(got[:, m, 1] - want[:, 1]).max() < 0.02, name
            assert (got[:, m].argmax(1) == want.argmax(1)).mean() >= 0.98, name
        # Grad-CAM on the GPU replica (fp32 gradients) against the CPU, for the class the model
        # calls: a map for the other class can be empty (no positive evidence at all).
        i = int(np.flatnonzero(np.array([it.label for it in test_items[:96]]) == 1)[0])
        target = int(cpu["xception"].predict(x[i : i + 1]).argmax())
        cam = ens.gradcam.remote("xception", x[i], target).result()
        assert cam.shape[:2] == x[i].shape[:2] and np.isfinite(cam).all() and cam.max() > 0
        on_cpu = gradcam(cpu["xception"], x[i], target)
        assert np.corrcoef(cam.ravel(), on_cpu.ravel())[0, 1] > 0.95
    finally:
        serve.shutdown()
