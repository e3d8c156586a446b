"""`wbc-ray adapt`: the released models moved to a lab's own cells, as a release of its own.

Each model keeps its backbone (another lab's cells keep most of their *ranking* under the shipped
models: the features carry over; fine-tuning blocks costs a training run per model on 2 cores).
What is refitted is chosen per lab, by cross-validation on the lab's labelled images alone: the
operating point (temperature and threshold on the parent's head), or the classifier head too,
refitted on the pooled features of the lab's images together with a replayed sample of the
parent's own training images (so the parent's lab is not forgotten), pulled towards the parent's
head (L2), class-balanced, the lab and the replay weighing the same. The learning curves of
docs/adapt.md show each choice winning on some labs. Features are computed once per model, so the
whole fit costs one forward pass per image.

The result is a complete release: weights and cards naming the parent release and the lab data's
hash, the domain statistics refitted on both labs' images (so the lab's slides are in range), the
evaluation on a held-out part of the lab's images against the parent's, and `release.json`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..domain import FEATURE_PX, DomainFile, fit_check, image_stats, load_domain, read_fields, write_domain
from ..ensemble import DEFAULT_FUSION, fuse
from ..errors import InvalidInput, OutputExists
from ..manifest import CLASSES, Item, manifest_hash, read_manifest
from ..models import Classifier, available, get_spec, save_checkpoint, submodule
from ..release import is_release, verify_release, write_release_record
from ..scale import FIELD_PX
from ._metrics import best_threshold, binary_metrics
from ._train import fit_temperature

ADAPTED = "adapt.json"  # the evaluation and the record of what was fitted, in the release


@dataclass(frozen=True)
class AdaptConfig:
    """One adaptation: the lab's manifest, the parent release, where the new release goes."""

    manifest: str  # the lab's labelled images: path,label[,split][,mpp]
    out: str
    parent: str  # the release adapted from
    replay_manifest: str | None  # the parent's training images (its `train` split); None: no replay
    mpp: float | None = None  # the lab images' scale where the manifest has no mpp column
    held_out: float = 0.3  # share of each class kept out of the fit to judge it (without a split column)
    replay: int = 256  # parent training images replayed in the fit (half per class)
    pull: float = 1e-3  # L2 pull of the head towards the parent's, per feature
    seed: int = 0
    # Side of the composed slides the tile rates are measured on (one per malignant fraction, of
    # the lab's images); 0: none measured (an analysis then reports the raw share of tiles).
    rates_grid: int = 8
    threads: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def lab_split(items: list[Item], held_out: float, seed: int) -> tuple[list[Item], list[Item]]:
    """(fit, held out): the manifest's `test` rows held out where it has a split column, else a
    share of each class, at least 2 of each in both parts.
    """
    if any(it.split for it in items):
        fit = [it for it in items if it.split != "test"]
        test = [it for it in items if it.split == "test"]
    else:
        rng = np.random.default_rng(seed)
        fit, test = [], []
        for label in (0, 1):
            group = [it for it in items if it.label == label]
            order = rng.permutation(len(group))
            k = max(0, min(len(group) - 2, max(2, round(held_out * len(group)))))
            test += [group[j] for j in order[:k]]
            fit += [group[j] for j in order[k:]]
    for label in (0, 1):
        for part, name in ((fit, "fit"), (test, "held-out")):
            if sum(it.label == label for it in part) < 2:
                raise InvalidInput(
                    f"the lab's images need at least 2 {CLASSES[label]} images in the {name} part "
                    f"(give at least 4 of each class, or a split column with train and test rows)"
                )
    return fit, test


def replay_sample(pool: list[Item], k: int, seed: int) -> list[Item]:
    """`k` of the parent's training images, half of each class (as many as there are)."""
    rng = np.random.default_rng(seed)
    out: list[Item] = []
    for label in (0, 1):
        group = [it for it in pool if it.label == label]
        out += [group[j] for j in sorted(rng.permutation(len(group))[: k // 2])]
    return out


def _fields(items: list[Item], mpp: float | None) -> np.ndarray:
    """The images as the models' fields (224 px at the training scale)."""
    return read_fields([it.path for it in items], [it.mpp or mpp for it in items], FIELD_PX)


def _lab_tile_rates(
    stage: Path, items: list[Item], x: np.ndarray, cfg: AdaptConfig, log: Callable[[str], Any]
) -> dict[str, Any]:
    """Measure the adapted models' tile rates on slides composed of the lab's own images (every
    labelled one, as fields at the training scale), in fp32 and, where the CPU computes it, bf16:
    what turns an analysis's share of malignant tiles into an estimate of the slide's fraction.
    """
    from PIL import Image

    from ..lifecycle import measure_tile_rates, shipped_precisions

    with tempfile.TemporaryDirectory(prefix="wbc_lab_rates_") as tmp:
        manifest = Path(tmp) / "lab_fields.csv"
        with open(manifest, "w") as fh:
            fh.write("path,label,split\n")
            for i, (it, field_img) in enumerate(zip(items, x, strict=True)):
                Image.fromarray(field_img).save(Path(tmp) / f"{i:05d}.png")
                fh.write(f"{i:05d}.png,{CLASSES[it.label]},val\n")
        precisions = shipped_precisions(available(stage))
        kinds = [next(iter(p.values())) for p in precisions]  # one precision for all models
        for kind, precision in zip(kinds, precisions, strict=True):
            log(f"measuring tile rates on slides of the lab's {len(items)} images in {kind}")
            measure_tile_rates(stage, manifest, grid=cfg.rates_grid, seed=cfg.seed, precision=precision)
    return {"images": len(items), "grid": cfg.rates_grid, "precisions": kinds}


def model_features(clf: Classifier, x: np.ndarray, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(pooled features entering the head, the head's logits) for fields `x`."""
    head = submodule(clf.model, get_spec(clf.name).head)
    got: list[torch.Tensor] = []
    hook = head.register_forward_hook(lambda _m, inp, _out: got.append(inp[0].detach().float().cpu()))
    try:
        logits = [clf.logits(x[i : i + batch]).cpu() for i in range(0, len(x), batch)]
    finally:
        hook.remove()
    return torch.cat(got).numpy(), torch.cat(logits).numpy()


def fit_head(
    feats: np.ndarray, y: np.ndarray, weight: np.ndarray, w0: torch.Tensor, b0: torch.Tensor, pull: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """A linear head (2 classes) minimising weighted cross-entropy plus `pull` x |W - W0|^2,
    started from and pulled towards the parent's head (W0, b0).
    """
    x = torch.from_numpy(feats).float()
    t = torch.from_numpy(y).long()
    wt = torch.from_numpy(weight).float()
    w = w0.detach().float().clone().requires_grad_(True)
    b = b0.detach().float().clone().requires_grad_(True)
    opt = torch.optim.LBFGS([w, b], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (F.cross_entropy(x @ w.T + b, t, reduction="none") * wt).sum() / wt.sum()
        loss = loss + pull * ((w - w0.float()) ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-np.clip(x, -60, 60)))


def source_weights(y_lab: np.ndarray, y_replay: np.ndarray) -> np.ndarray:
    """Class-balanced within each source; the lab and the replay weigh the same in total."""
    out = []
    for y in (y_lab, y_replay):
        if not len(y):
            continue
        w = np.zeros(len(y), np.float64)
        for c in (0, 1):
            n = (y == c).sum()
            w[y == c] = 0.5 / n if n else 0.0
        out.append(w)
    return np.concatenate(out) if out else np.zeros(0)


@dataclass(frozen=True)
class Refit:
    """A model's refitted head and operating point (what `adapt` changes in a model)."""

    weight: torch.Tensor  # (2, features)
    bias_vector: torch.Tensor  # (2,)
    temperature: float
    bias: float  # on the malignant logit, after the temperature

    @classmethod
    def fit(
        cls,
        feats: np.ndarray,
        y: np.ndarray,
        weight: np.ndarray,
        head: torch.nn.Linear,
        pull: float,
        tune: str = "head",
    ) -> Refit:
        """Head by `fit_head` (`tune="head"`; "operating_point" keeps the parent's), then the
        temperature by NLL and the operating point so that p >= 0.5 is the balanced-accuracy-best
        threshold (each source counted as `weight` says).
        """
        if tune == "head":
            w, b = fit_head(feats, y, weight, head.weight, head.bias, pull)
        elif tune == "operating_point":
            w, b = head.weight.detach().float().clone(), head.bias.detach().float().clone()
        else:
            raise InvalidInput(f"tune must be head or operating_point, not {tune!r}")
        logits = feats @ w.numpy().T + b.numpy()
        temp = fit_temperature(torch.from_numpy(logits).float(), torch.from_numpy(y).long())
        z = logits / temp
        score = _sigmoid(z[:, 1] - z[:, 0])
        reps = np.maximum(1, np.round(weight / weight[weight > 0].min())).astype(int)
        thr = float(np.clip(best_threshold(np.repeat(y, reps), np.repeat(score, reps)), 1e-4, 1 - 1e-4))
        return cls(w, b, float(temp), float(-np.log(thr / (1 - thr))))

    def predict(self, feats: np.ndarray) -> np.ndarray:
        """Calibrated probability of malignant for pooled features."""
        z = feats @ self.weight.numpy().T + self.bias_vector.numpy()
        return _sigmoid((z[:, 1] - z[:, 0]) / self.temperature + self.bias)

    def apply(self, head: torch.nn.Linear) -> None:
        """Write the refitted weights into the model's head."""
        with torch.no_grad():
            head.weight.copy_(self.weight)
            head.bias.copy_(self.bias_vector)


TUNINGS = ("operating_point", "head")


def fused_score(ps: list[np.ndarray]) -> np.ndarray:
    """The models' probabilities of malignant fused as the service fuses them."""
    return fuse(np.stack([np.stack([1 - p, p], 1) for p in ps]), DEFAULT_FUSION)[0]


def choose_tuning(
    lab: dict[str, np.ndarray],
    y_lab: np.ndarray,
    replay: dict[str, np.ndarray],
    y_replay: np.ndarray,
    heads: dict[str, torch.nn.Linear],
    pull: float,
    seed: int,
    folds: int = 4,
) -> tuple[str, dict[str, float]]:
    """The tuning ("operating_point" or "head") whose fused predictions on the lab's images,
    each predicted by a fit without it (`folds`-fold, stratified, the replay always in), have the
    higher balanced accuracy; a tie keeps the smaller change (the operating point).
    """
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(y_lab), int)
    for c in (0, 1):
        idx = rng.permutation(np.flatnonzero(y_lab == c))
        fold[idx] = np.arange(len(idx)) % folds
    scores: dict[str, float] = {}
    for tune in TUNINGS:
        oof = {m: np.zeros(len(y_lab)) for m in lab}
        for k in range(folds):
            train, held = fold != k, fold == k
            if not held.any():
                continue
            y = np.concatenate([y_lab[train], y_replay])
            w = source_weights(y_lab[train], y_replay)
            for m in lab:
                r = Refit.fit(np.concatenate([lab[m][train], replay[m]]), y, w, heads[m], pull, tune)
                oof[m][held] = r.predict(lab[m][held])
        p = fused_score(list(oof.values()))
        scores[tune] = round(float(binary_metrics(y_lab, (p >= 0.5).astype(int), p)["balanced_accuracy"]), 4)
    best = max(TUNINGS, key=lambda t: (scores[t], -TUNINGS.index(t)))
    return best, scores


def model_head(clf: Classifier) -> torch.nn.Linear:
    """The classifier head `adapt` refits (linear in every registered architecture)."""
    head = submodule(clf.model, get_spec(clf.name).head)
    if not isinstance(head, torch.nn.Linear):
        raise InvalidInput(f"{clf.name}: its head is a {type(head).__name__}, not a linear layer")
    return head


def _metrics(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    return binary_metrics(y, (p >= 0.5).astype(int), p)


def adapt(cfg: AdaptConfig, log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Adapt the parent release to the lab's images into `cfg.out`; return the release record."""
    t0 = time.perf_counter()
    parent = Path(cfg.parent)
    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()):
        raise OutputExists(f"{out} is not empty; give a new folder for the adapted release")
    parent_info = verify_release(parent).info if is_release(parent) else {"version": "checkpoints"}
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    items = read_manifest(cfg.manifest)
    if cfg.mpp is None and any(it.mpp is None for it in items):
        log(
            "note: no scale for some of the lab's images (--mpp, or an mpp column): "
            "each is taken as one whole field"
        )
    fit, test = lab_split(items, cfg.held_out, cfg.seed)
    replay: list[Item] = []
    if cfg.replay_manifest and cfg.replay:
        replay = replay_sample(read_manifest(cfg.replay_manifest, "train"), cfg.replay, cfg.seed)
    log(f"lab images: {len(fit)} to fit, {len(test)} held out; {len(replay)} of the parent's replayed")
    x_fit, x_test = _fields(fit, cfg.mpp), _fields(test, cfg.mpp)
    x_replay = _fields(replay, None) if replay else np.zeros((0, FIELD_PX, FIELD_PX, 3), np.uint8)
    y_fit = np.array([it.label for it in fit])
    y_test = np.array([it.label for it in test])
    y_replay = np.array([it.label for it in replay], dtype=int)
    weight = source_weights(y_fit, y_replay)
    y_all = np.concatenate([y_fit, y_replay])

    stage = out.with_name(out.name + ".partial")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    names = available(parent)
    before: dict[str, np.ndarray] = {}
    after: dict[str, np.ndarray] = {}
    cards: dict[str, str] = {}
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    clfs = {name: Classifier.load(parent, name, precision="fp32") for name in names}
    feats: dict[str, np.ndarray] = {}
    f_test: dict[str, np.ndarray] = {}
    for name, clf in clfs.items():
        feats[name], _ = model_features(clf, np.concatenate([x_fit, x_replay]))
        f_test[name], z_test = model_features(clf, x_test)
        before[name] = torch.softmax(clf.calibrate(torch.from_numpy(z_test)), 1)[:, 1].numpy()
    heads = {name: model_head(clf) for name, clf in clfs.items()}
    # What to tune is chosen on the lab's own images: cross-validated, before the held-out part is
    # looked at (the learning curves of docs/adapt.md show each choice winning on some labs).
    tune, scores = choose_tuning(
        {n: f[: len(y_fit)] for n, f in feats.items()},
        y_fit,
        {n: f[len(y_fit) :] for n, f in feats.items()},
        y_replay,
        heads,
        cfg.pull,
        cfg.seed,
    )
    log(f"tuning the {tune.replace('_', ' ')} (cross-validated balanced accuracy {scores})")
    for name, clf in clfs.items():
        refit = Refit.fit(feats[name], y_all, weight, heads[name], cfg.pull, tune)
        refit.apply(heads[name])
        p_new = refit.predict(f_test[name])
        after[name] = p_new
        card = replace(
            clf.card,
            temperature=refit.temperature,
            bias=refit.bias,
            training={
                **clf.card.training,
                "adapted": {
                    "from_release": parent_info.get("version"),
                    "from_model": clf.card.version,
                    "lab_sha256": manifest_hash(items),
                    "lab_images": len(fit),
                    "replayed": len(replay),
                    "tuned": tune,
                    "created": created,
                    "cross_validated_balanced_accuracy": scores,
                },
            },
            metrics={"lab_held_out": _metrics(y_test, p_new)},
        )
        save_checkpoint(clf.model, card, stage)
        cards[name] = card.version
        log(
            f"{name}: held-out balanced accuracy "
            f"{_metrics(y_test, before[name])['balanced_accuracy']:.3f} -> "
            f"{card.metrics['lab_held_out']['balanced_accuracy']:.3f}"
        )

    def fused(ps: dict[str, np.ndarray]) -> np.ndarray:
        return fused_score([ps[n] for n in names])

    evaluation: dict[str, Any] = {"held_out": {"n": len(test), "malignant": int(y_test.sum())}}
    for key, ps in (("parent", before), ("adapted", after)):
        evaluation[key] = {n: _metrics(y_test, ps[n]) for n in names} | {"fused": _metrics(y_test, fused(ps))}
    domain = _refit_domain(parent, x_fit, x_replay)
    if domain is not None:
        write_domain(stage, domain)
        evaluation["domain_flagged_held_out"] = {
            "parent": _flagged(load_domain(parent), x_test),
            "adapted": _flagged(domain, x_test),
        }
    if cfg.rates_grid:
        evaluation["tile_rates"] = _lab_tile_rates(
            stage, fit + test, np.concatenate([x_fit, x_test]), cfg, log
        )
    seconds = time.perf_counter() - t0
    (stage / ADAPTED).write_text(
        json.dumps({"config": asdict(cfg), "evaluation": evaluation}, indent=1) + "\n"
    )
    record = write_release_record(
        stage,
        {
            "version": f"{parent_info.get('version')}+lab-{manifest_hash(items)[:8]}",
            "models": cards,
            "created": created,
            "lineage": {
                "parent": parent_info.get("version"),
                "lab_sha256": manifest_hash(items),
                "lab_manifest": os.path.basename(cfg.manifest),
                "adapted_s": round(seconds, 1),
            },
        },
    )
    if out.exists():
        out.rmdir()
    os.replace(stage, out)
    fb, fa = evaluation["parent"]["fused"], evaluation["adapted"]["fused"]
    log(
        f"fused on the held-out lab images: balanced accuracy {fb['balanced_accuracy']:.3f} -> "
        f"{fa['balanced_accuracy']:.3f}; release {record['version']} in {out} ({seconds:.0f} s)"
    )
    return record


def _refit_domain(parent: Path, x_fit: np.ndarray, x_replay: np.ndarray) -> DomainFile | None:
    """The parent's domain file with its check refitted on both labs' images (the parent's
    replayed training images and the lab's), its stain references kept.
    """
    base = load_domain(parent)
    if base is None:
        return None
    both = np.concatenate([x_replay, x_fit]) if len(x_replay) else x_fit
    stats = image_stats(_small(both))
    quantile = float(base.check.fitted.get("quantile", 0.975))
    check = fit_check(stats, stats, quantile, refitted_on_lab=True)
    return DomainFile(
        check, base.stain_references, base.stain_default, {**base.info, "refitted_on_lab": True}
    )


def _small(x: np.ndarray) -> np.ndarray:
    """Fields at the domain check's size."""
    from PIL import Image

    return np.stack(
        [
            np.asarray(Image.fromarray(f).resize((FEATURE_PX, FEATURE_PX), Image.Resampling.BILINEAR))
            for f in x
        ]
    )


def _flagged(domain: DomainFile | None, x: np.ndarray) -> float | None:
    if domain is None or not len(x):
        return None
    return round(float(domain.check.out_of_range(domain.check.distances(_small(x))).mean()), 4)
