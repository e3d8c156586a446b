"""Why the domain check uses image statistics: the share each candidate flags on the test split,
the shifted copies and another lab's cells, and the ROC AUC of its distance against the test
split's, for (a) the Mahalanobis distance on image statistics (what ships, `wbc_ray.domain`) and
(b) the Mahalanobis distance on a network's pooled features (64 principal components of
MobileNetV2's and Xception's penultimate layer, fp32), each fitted on the training split with its
threshold at the validation split's 97.5 %. Writes bench_results/domain_choice.json.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import numpy as np

from benchmarks._common import cpu_description, finish, target
from wbc_ray.config import load_settings
from wbc_ray.domain import FEATURE_PX, SHIFTS, fit_check, image_stats, read_fields
from wbc_ray.manifest import read_manifest
from wbc_ray.training._metrics import roc_auc

PCS = 64


def _sets(data: object) -> dict[str, Callable[[], np.ndarray]]:
    from pathlib import Path

    root = Path(str(data))
    split = root / "all_taleqani" / "split.csv"
    paths = {sp: [it.path for it in read_manifest(split, sp)] for sp in ("train", "val", "test")}
    pbc = [it.path for it in read_manifest(root / "pbc" / "labels.csv")][::5]
    sets: dict[str, Callable[[], np.ndarray]] = {
        sp: (lambda sp=sp: read_fields(paths[sp], None, FEATURE_PX)) for sp in ("train", "val", "test")
    }
    for s in SHIFTS:
        sets[f"test: {s}"] = lambda s=s: read_fields(paths["test"], None, FEATURE_PX, s)
    sets["PBC whole"] = lambda: read_fields(pbc, None, FEATURE_PX)
    sets["PBC at 0.1 um/px"] = lambda: read_fields(pbc, 0.1, FEATURE_PX)
    return sets


def _pooled(name: str, models: object) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    from wbc_ray.models import Classifier

    clf = Classifier.load(models, name, precision="fp32")  # type: ignore[arg-type]
    net = clf.model.eval()

    def feats(x: np.ndarray) -> np.ndarray:
        out = []
        with torch.no_grad():
            for i in range(0, len(x), 64):
                f = net.forward_features(clf.inputs(x[i : i + 64]))
                out.append(net.forward_head(f, pre_logits=True).float().numpy())
        return np.concatenate(out)

    return feats


def _pca_mahalanobis(train: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    mu = train.mean(0)
    _, s, vt = np.linalg.svd(train - mu, full_matrices=False)
    v, var = vt[:PCS], (s[:PCS] ** 2) / (len(train) - 1)
    return lambda y: np.sqrt((((y - mu) @ v.T) ** 2 / var).sum(1))


def main() -> int:
    s = load_settings()
    images = {k: f() for k, f in _sets(s.data_dir).items()}
    candidates: dict[str, Callable[[np.ndarray], np.ndarray]] = {"image statistics": image_stats}
    for name in ("mobilenet", "xception"):
        candidates[f"{name} pooled features"] = _pooled(name, s.models_dir)
    table: dict[str, dict[str, dict[str, float]]] = {}
    for cand, embed in candidates.items():
        emb = {k: embed(v) for k, v in images.items()}
        if cand == "image statistics":
            check = fit_check(emb["train"], emb["val"])
            dist, thr = check.distances_of, check.threshold
        else:
            dist = _pca_mahalanobis(emb["train"])
            thr = float(np.quantile(dist(emb["val"]), 0.975))
        ref = dist(emb["test"])
        table[cand] = {}
        for k, e in emb.items():
            d = dist(e)
            auc = roc_auc(np.r_[np.zeros(len(ref)), np.ones(len(d))], np.r_[ref, d])
            table[cand][k] = {
                "flagged": round(float((d > thr).mean()), 3),
                "auc_vs_test": round(float(auc), 3),
            }
        print(cand, {k: v["flagged"] for k, v in table[cand].items()})
    stats = table["image statistics"]
    result = {
        "cpu": cpu_description(),
        "table": table,
        "targets": {
            "test split flagged (image statistics)": target(stats["test"]["flagged"], "<=", 0.05),
            "PBC flagged (image statistics)": target(stats["PBC at 0.1 um/px"]["flagged"], ">=", 0.9),
        },
    }
    return finish("domain_choice", result)


if __name__ == "__main__":
    sys.exit(main())
