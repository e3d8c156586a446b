"""wbc-ray from Python: open a slide, score images with the released models, fuse their answers.

Run from the repository root: `.venv/bin/python docs/examples/python_api.py` (CI runs it).
Analysing whole slides (`wbc_ray.analyze_slides`) starts Ray and Serve; see the README.
"""

import os
from pathlib import Path

import numpy as np
from PIL import Image

import wbc_ray

data = Path(os.environ.get("WBC_RAY_DATA", "../shared/data"))

# A whole-slide file: metadata, and a region read at the base level.
with wbc_ray.open_slide(data / "slides/openslide-python/small.svs") as slide:
    print(slide.info.vendor, slide.dimensions, slide.mpp)
    region = slide.read(0, 0, 0, (16, 16))  # (H, W, 3) uint8

# The release, checked against weights/release.json, one classifier per network.
models = wbc_ray.load_release(precision="fp32")
images = sorted((data / "all_taleqani/images").glob("*/*.jpg"))[:: 400][:4]
tiles = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in images])  # (N, 224, 224, 3)
probs = np.stack([clf.predict(tiles) for clf in models.values()])  # (models, N, 2)

# Fused per tile: the class, and a malignant score for heatmaps.
call, score = wbc_ray.fuse(probs, "fuzzy_rank")
for path, c, s in zip(images, call, score, strict=True):
    print(f"{path.parent.name:>7}/{path.name}: {'malignant' if c else 'benign'} (score {s:.2f})")
