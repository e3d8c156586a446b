"""Transfer-learning / from-scratch training loop with EMA, early stopping, resume, calibration."""

from __future__ import annotations

import copy
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidInput
from ..lifecycle import load_images
from ..manifest import Item, manifest_hash, read_manifest
from ..models import (
    Classifier,
    ModelCard,
    autocast,
    build_model,
    default_card,
    get_spec,
    load_checkpoint,
    save_checkpoint,
    submodule,
    training_precision,
)
from ..release import is_release, verify_release
from ._data import ZOOM, augment, grayscale_u8, mosaic
from ._metrics import best_threshold, binary_metrics

# Epoch budgets chosen so each model trains in about 30 minutes or less on 2 CPU cores at 128 px
# (fp32 there: see training_precision); one epoch of Xception costs about four of MobileNet.
DEFAULT_EPOCHS = {"mobilenet": 30, "inception_v3": 26, "xception": 14}


@dataclass
class TrainConfig:
    model: str
    manifest: str
    out: str
    input_size: int = 0  # 0: --init's model's input side, else 128
    epochs: int | None = None  # None: DEFAULT_EPOCHS[model]
    # Fewer epochs than planned (`epochs`, else DEFAULT_EPOCHS) where a short probe of this machine
    # says they would not fit in this many minutes (machines differ several-fold; the plan is logged
    # and kept).
    minutes: float | None = None
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    label_smoothing: float = 0.05
    ema_decay: float = 0.99
    patience: int = 8
    seed: int = 0
    weights: str | None = None  # None | "imagenet" | a weight file | a folder of <model>.safetensors
    # A release (or checkpoint folder) to continue from: the whole trained network, head included,
    # checked against the release's manifest, so training time adds up across machines.
    init: str | None = None
    mosaic: float = 0.0  # share of each batch shown as slide-like windows over fields on glass
    # Weight of an auxiliary subtype loss (a training-only linear head on the pooled features,
    # over the manifest's `subtype` column); 0 turns it off. The saved model stays binary.
    subtype_weight: float = 0.0
    # Zoom range of the geometric augmentation (log-uniform; 0.5-2 teaches cells at half and twice
    # the size, a lab whose magnification differs) and the share of images blurred (focus).
    zoom: tuple[float, float] = ZOOM
    blur: float = 0.0
    limit: int | None = None  # use only this many images per split (tests, smoke runs)
    threads: int | None = None
    device: str | None = None
    precision: str = "auto"  # auto | fp32 | bf16 (CPU) | amp (GPU); see training_precision
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def side(self) -> int:
        """The input side trained at: `input_size`, else the initial model's, else 128."""
        if self.input_size:
            return self.input_size
        if self.init:
            from ..models import load_card

            return load_card(self.init, self.model).input_size
        return 128

    def n_epochs(self) -> int:
        return self.epochs or DEFAULT_EPOCHS.get(self.model, 15)

    def weight_file(self) -> str | None:
        if self.weights and Path(self.weights).is_dir():
            return str(Path(self.weights) / f"{self.model}.safetensors")
        return self.weights


def _subset(items: list[Item], limit: int | None, seed: int) -> list[Item]:
    if not limit or limit >= len(items):
        return items
    rng = np.random.default_rng(seed)
    # Keep both classes in a subset, however small.
    by = [[i for i, it in enumerate(items) if it.label == k] for k in (0, 1)]
    half = max(1, limit // 2)
    pick = [j for grp in by for j in rng.permutation(grp)[: max(half, limit - len(by[0]))][:half]]
    return [items[j] for j in sorted(pick)]


class _EMA:
    def __init__(self, model: nn.Module, decay: float) -> None:
        self.model = copy.deepcopy(model).eval()
        self.decay = decay
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        # Warm-up: short runs would otherwise be dominated by the random init.
        d = min(self.decay, (1 + step) / (10 + step))
        for e, m in zip(self.model.state_dict().values(), model.state_dict().values(), strict=True):
            if e.dtype.is_floating_point:
                e.lerp_(m, 1 - d)
            else:
                e.copy_(m)


class _SubtypeHead(nn.Module):
    """Training-only auxiliary head: the subtype from the pooled features the binary head reads.

    The binary loss lumps Early, Pre and Pro together, and most errors are Early pre-B blasts
    against benign cells; naming the subtype asks the features for the finer distinctions.
    It reads the binary head's input through a forward pre-hook, so it works for every
    registered architecture, and it is dropped at save time: checkpoints stay binary.
    """

    class_w: torch.Tensor

    def __init__(self, head: nn.Linear, subtypes: torch.Tensor, n: int) -> None:
        super().__init__()
        self.linear = nn.Linear(head.in_features, n)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        counts = torch.bincount(subtypes, minlength=n).float()
        self.register_buffer("class_w", counts.sum() / (n * counts.clamp(min=1)))
        self.features: torch.Tensor | None = None
        head.register_forward_pre_hook(self._grab)

    def _grab(self, module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        self.features = args[0]

    def loss(self, first: int, target: torch.Tensor, smoothing: float) -> torch.Tensor:
        assert self.features is not None
        logits = self.linear(self.features[first:].float())
        return F.cross_entropy(logits, target, weight=self.class_w, label_smoothing=smoothing)


def _subtype_targets(items: list[Item]) -> tuple[list[str], torch.Tensor]:
    names = sorted({it.subtype or "" for it in items})
    if "" in names:
        raise InvalidInput("subtype_weight > 0 needs a `subtype` column filled for every training image")
    return names, torch.tensor([names.index(it.subtype or "") for it in items])


def _predict_logits(model: nn.Module, card: ModelCard, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    clf = Classifier(model, card, device=device, channels_last=True)
    with torch.inference_mode():
        out = torch.cat([clf.logits(x[i : i + 128]) for i in range(0, len(x), 128)]).cpu()
    return out.clone()  # a normal tensor: calibration differentiates through it


def fit_temperature(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Temperature minimising validation NLL (Guo et al. 2017)."""
    log_t = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=100)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))


def _mosaic_rows(batch: int, mosaic_share: float) -> int:
    """How many of a batch's rows (the first ones) are mosaic views."""
    return round(batch * mosaic_share)


def _batch(
    x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, mosaic_share: float, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float images in [0, 1] and soft malignant labels; the first part of it as mosaics."""
    k = _mosaic_rows(len(idx), mosaic_share)
    plain = x[idx[k:]].permute(0, 3, 1, 2).float().div_(255)
    if k == 0:
        return plain, y[idx].float()
    views, soft = mosaic(x, y, idx[:k], g)
    return torch.cat([views, plain]), torch.cat([soft, y[idx[k:]].float()])


def soft_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, class_w: torch.Tensor, smoothing: float
) -> torch.Tensor:
    """Class-weighted cross entropy against a malignant probability (hard labels are 0 / 1)."""
    t = target * (1 - smoothing) + smoothing / 2
    logp = F.log_softmax(logits, 1)
    per = -(t * logp[:, 1] * class_w[1] + (1 - t) * logp[:, 0] * class_w[0])
    # Normalised like F.cross_entropy(weight=...): by the summed weight of the targets.
    return per.sum() / (t * class_w[1] + (1 - t) * class_w[0]).sum()


class _Step:
    """One optimisation step on a batch of training rows; the loop and the budget probe share it."""

    def __init__(
        self,
        cfg: TrainConfig,
        model: nn.Module,
        aux: _SubtypeHead | None,
        x: torch.Tensor,
        y: torch.Tensor,
        sub_y: torch.Tensor | None,
        class_w: torch.Tensor,
        scaler: torch.amp.GradScaler,
        device: torch.device,
        precision: str,
        card: ModelCard,
    ) -> None:
        self.cfg, self.model, self.aux, self.x, self.y, self.sub_y = cfg, model, aux, x, y, sub_y
        self.class_w, self.scaler, self.device, self.precision = class_w, scaler, device, precision
        self.card = card
        self.mean = torch.tensor(card.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(card.std).view(1, 3, 1, 1)

    def __call__(self, opt: torch.optim.Optimizer, idx: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        cfg, device = self.cfg, self.device
        xb, yb = _batch(self.x, self.y, idx, cfg.mosaic, g)
        xb = augment(xb, g, scale=cfg.zoom, blur_p=cfg.blur)
        xb = ((xb - self.mean) / self.std).to(device).contiguous(memory_format=torch.channels_last)
        with autocast(device, self.precision):
            logits = self.model(xb)
        loss = soft_cross_entropy(logits.float(), yb.to(device), self.class_w, cfg.label_smoothing)
        if self.aux is not None and self.sub_y is not None:
            first = _mosaic_rows(len(idx), cfg.mosaic)  # mosaic views carry no single subtype
            target = self.sub_y[idx[first:]].to(device)
            loss = loss + cfg.subtype_weight * self.aux.loss(first, target, cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(opt)  # skips the step when the scaled gradients overflowed
        self.scaler.update()
        return loss.detach()


def _epochs_in_budget(
    cfg: TrainConfig, step: _Step, params: list[nn.Parameter], steps_per_epoch: int, n_select: int
) -> int:
    """Epochs (at most the planned ones) that fit in cfg.minutes, from timing a few real steps on
    copies of the weights (restored after, so the run itself is unchanged) and one validation
    pass over a sample.
    """
    assert cfg.minutes
    modules = [m for m in (step.model, step.aux) if m is not None]
    saved = [copy.deepcopy(m.state_dict()) for m in modules]
    g = torch.Generator().manual_seed(cfg.seed + 7)  # not the run's generator
    opt = torch.optim.AdamW(params, lr=0.0)
    idx = torch.randperm(len(step.x), generator=g)[: cfg.batch_size]
    step(opt, idx, g)  # the first step allocates and picks kernels
    t = time.perf_counter()
    for _ in range(2):
        step(opt, idx, g)
    step_s = (time.perf_counter() - t) / 2
    for m, sd in zip(modules, saved, strict=True):
        m.load_state_dict(sd)
    sample = step.x[: min(128, len(step.x))]
    t = time.perf_counter()
    _predict_logits(step.model, step.card, sample, step.device)
    select_s = (time.perf_counter() - t) * n_select / len(sample)
    epoch_s = step_s * steps_per_epoch + select_s
    recipe = cfg.n_epochs()
    epochs = max(1, min(recipe, int(cfg.minutes * 60 // epoch_s)))
    _log(
        cfg,
        f"budget {cfg.minutes:g} min: {step_s:.2f} s a step, about {epoch_s:.0f} s an epoch -> "
        f"{epochs} of the {recipe} epochs planned (to repeat exactly: --epochs {epochs})",
    )
    return epochs


def _log(cfg: TrainConfig, msg: str) -> None:
    if cfg.progress:
        print(f"[{cfg.model}] {msg}", flush=True)


def _initial_model(cfg: TrainConfig) -> tuple[nn.Module, dict[str, Any] | None]:
    """The network to start from, and where it came from (for the card's provenance)."""
    if cfg.init is None:
        return build_model(cfg.model, num_classes=2, weights=cfg.weight_file()), (
            {"weights": cfg.weights} if cfg.weights else None
        )
    if cfg.weights:
        raise InvalidInput("--init continues a trained model; it cannot be combined with --weights")
    model, card = load_checkpoint(cfg.init, cfg.model)  # a release is verified file by file first
    if card.input_size != cfg.side():
        _log(cfg, f"note: {cfg.init} trained at {card.input_size} px, continuing at {cfg.side()} px")
    release = verify_release(cfg.init).version if is_release(cfg.init) else None
    # The parent's own training, with its parent's in turn: the time a model took adds up.
    keep = ("epochs_run", "train_seconds", "hardware", "commit", "precision_used", "initialised_from")
    return model, {
        "path": str(Path(cfg.init).resolve()),
        "release": release,
        "model_version": card.version,
        "training": {k: card.training[k] for k in keep if k in card.training},
    }


def provenance(device: torch.device) -> dict[str, Any]:
    """Where and with what a model was trained: the commit, the hardware, the library versions."""
    import platform
    import subprocess

    from ..config import REPO_ROOT

    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
        )
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", False
    names = [line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")]
    cpu = names[0] if names else platform.processor()
    hardware: dict[str, Any] = {"cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads()}
    if device.type == "cuda":
        hardware["gpu"] = torch.cuda.get_device_name(device)
    return {
        "commit": commit + ("-dirty" if dirty else "") if commit else None,
        "hardware": hardware,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def _cpuinfo() -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            return f.readlines()
    except OSError:
        return []


@dataclass
class _Standing:
    """Where a run stands between epochs: what a resumed run restores besides the weights."""

    epochs: int
    start: int = 0
    best_ba: float = -1.0
    best_epoch: int = -1
    best_state: dict[str, torch.Tensor] | None = None
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass
class _Run:
    """One training run's parts: the model and its EMA, the optimiser, schedule and scaler."""

    cfg: TrainConfig
    model: nn.Module
    ema: _EMA
    aux: _SubtypeHead | None
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler

    def resume(self, path: Path, standing: _Standing) -> None:
        """Restore the state `save` wrote (our own file; weights_only refuses anything but tensors
        and plain containers).
        """
        st = torch.load(path, map_location="cpu", weights_only=True)
        self.model.load_state_dict(st["model"])
        self.ema.model.load_state_dict(st["ema"])
        if self.aux is not None and "aux" in st:
            self.aux.load_state_dict(st["aux"])
        self.opt.load_state_dict(st["opt"])
        self.sched.load_state_dict(st["sched"])
        if st.get("scaler"):  # empty when saved by a run without a scaler (CPU)
            self.scaler.load_state_dict(st["scaler"])
        standing.start, standing.best_ba = int(st["epoch"]) + 1, float(st["best_ba"])
        standing.best_epoch = int(st["best_epoch"])
        standing.epochs = int(st.get("epochs", standing.epochs))
        standing.best_state = st.get("best")
        standing.history = list(st.get("history", []))

    def save(self, path: Path, epoch: int, standing: _Standing) -> None:
        """Everything a resumed run needs to continue as if uninterrupted."""
        torch.save(
            {
                "model": self.model.state_dict(),
                "ema": self.ema.model.state_dict(),
                **({"aux": self.aux.state_dict()} if self.aux is not None else {}),
                "opt": self.opt.state_dict(),
                "sched": self.sched.state_dict(),
                "scaler": self.scaler.state_dict(),
                "epoch": epoch,
                "epochs": standing.epochs,
                "best_ba": standing.best_ba,
                "best_epoch": standing.best_epoch,
                "best": standing.best_state,
                "history": standing.history,
            },
            path,
        )


def _training_data(
    cfg: TrainConfig,
) -> tuple[
    dict[str, list[Item]], dict[str, tuple[torch.Tensor, torch.Tensor]], tuple[list[str], torch.Tensor] | None
]:
    """The splits' items and images, and the subtype targets when the auxiliary head is on."""
    splits = {
        s: _subset(read_manifest(cfg.manifest, s), cfg.limit, cfg.seed) for s in ("train", "val", "test")
    }
    # Checked before the images load: a wrong manifest fails at once.
    subtypes = _subtype_targets(splits["train"]) if cfg.subtype_weight > 0 else None
    data = {s: _load(items, cfg.side()) for s, items in splits.items()}
    return splits, data, subtypes


def _load(items: list[Item], side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as the models see them: each a whole field, or, for rows with an `mpp` (another
    lab's cells at their own scale), resized to the field's scale and centred on it.
    """
    if all(it.mpp is None for it in items):
        return load_images(items, side)
    from ..domain import read_fields

    x = read_fields([it.path for it in items], [it.mpp for it in items], side)
    return torch.from_numpy(x), torch.tensor([it.label for it in items], dtype=torch.int64)


def _selection_images(
    cfg: TrainConfig, val: tuple[torch.Tensor, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The images epochs are selected on: val, plus slide-like views of it when training with them.

    Selecting on what deployment sees: val fields and pure-class mosaics of them (so every view
    keeps a hard label). The operating point is still set on whole val images; slide-level bias is
    the tile rates' job (calibrate).
    """
    if cfg.mosaic <= 0:
        return val
    xv, yv = val
    g_val = torch.Generator().manual_seed(cfg.seed + 1)
    views, soft = mosaic(xv, yv, torch.arange(len(xv)), g_val, same_class_p=1.0)
    views_u8 = (views * 255).round().byte().permute(0, 2, 3, 1)
    return torch.cat([xv, views_u8]), torch.cat([yv, soft.round().long()])


def _start_model(
    cfg: TrainConfig, device: torch.device
) -> tuple[nn.Module, nn.Linear, dict[str, Any] | None]:
    """The network to train (fresh, pretrained or continued), on `device`, and its head."""
    model, init_from = _initial_model(cfg)
    model = model.to(device)
    head = submodule(model, get_spec(cfg.model).head)
    assert isinstance(head, nn.Linear)
    if cfg.weights is None and cfg.init is None:
        # A zero head starts every model at p = 0.5; MobileNetV2's default init starts at logits
        # of std ~4, which costs the first epoch just unlearning confident nonsense.
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
    return model.to(memory_format=torch.channels_last), head, init_from


def _select_metrics(
    model: nn.Module, card: ModelCard, select: tuple[torch.Tensor, torch.Tensor], device: torch.device
) -> dict[str, float]:
    """Metrics of `model` on the selection images at their own optimal threshold (the one we
    deploy).
    """
    xv, yv = select
    sv = torch.softmax(_predict_logits(model, card, xv, device), 1)[:, 1].numpy()
    thr = best_threshold(yv.numpy(), sv)
    return binary_metrics(yv.numpy(), sv >= thr, sv)


def _checked_out(cfg: TrainConfig) -> Path:
    out = Path(cfg.out)
    if is_release(out):
        raise InvalidInput(
            f"{out} is a model release: train into another folder (e.g. --out weights_train) and cut a "
            "new release from it with `wbc-ray release`"
        )
    out.mkdir(parents=True, exist_ok=True)
    return out


def train(cfg: TrainConfig) -> ModelCard:
    """Train one architecture; write <out>/<model>.safetensors and .json; return the card."""
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = _checked_out(cfg)
    splits, data, subtypes = _training_data(cfg)
    select = _selection_images(cfg, data["val"])
    xtr, ytr = data["train"]
    counts = torch.bincount(ytr, minlength=2).float()
    # Class weights undo the 1:5 imbalance; without them early epochs call everything malignant.
    class_w = (counts.sum() / (2 * counts.clamp(min=1))).to(device)

    model, head, init_from = _start_model(cfg, device)
    # The EMA copy is taken before the auxiliary head hooks in: only the trained model feeds it.
    ema = _EMA(model, cfg.ema_decay)
    aux: _SubtypeHead | None = None
    if subtypes is not None:
        aux = _SubtypeHead(head, subtypes[1], len(subtypes[0])).to(device)
        _log(cfg, f"auxiliary subtype head over {subtypes[0]}, weight {cfg.subtype_weight}")
    precision = training_precision(device, cfg.precision)
    _log(cfg, f"training on {device} in {precision}, channels_last")
    # AMP on CUDA autocasts to fp16, whose small gradients underflow to zero unless the loss is
    # scaled up first; bf16 (CPU) has fp32's range and needs no scaler.
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda" and precision == "amp")
    card = default_card(cfg.model, cfg.side())
    card.manifest_hash = manifest_hash(splits["train"])
    steps_per_epoch = math.ceil(len(xtr) / cfg.batch_size)
    params = list(model.parameters()) + (list(aux.parameters()) if aux is not None else [])
    sub_y = subtypes[1] if aux is not None and subtypes is not None else None
    step = _Step(cfg, model, aux, xtr, ytr, sub_y, class_w, scaler, device, precision, card)
    state_path = out / f"{cfg.model}.last.pt"
    standing = _Standing(epochs=cfg.n_epochs())
    if cfg.minutes and not state_path.exists():  # a resumed run keeps its plan
        standing.epochs = _epochs_in_budget(cfg, step, params, steps_per_epoch, len(select[0]))
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=standing.epochs * steps_per_epoch, pct_start=0.1
    )
    run = _Run(cfg, model, ema, aux, opt, sched, scaler)
    if state_path.exists():
        run.resume(state_path, standing)
        _log(
            cfg,
            f"resuming at epoch {standing.start + 1}/{standing.epochs} (best val BA {standing.best_ba:.4f})",
        )

    t0 = time.perf_counter()
    _epochs(run, step, standing, card, select, device, state_path, len(xtr), steps_per_epoch)
    assert standing.best_state is not None
    final = build_model(cfg.model, num_classes=2)
    final.load_state_dict(standing.best_state)
    final.eval()
    card = calibrate_and_evaluate(final, card, data, device)
    card.training = {
        **{k: v for k, v in asdict(cfg).items() if k not in {"progress", "extra"}},
        "input_size": cfg.side(),
        "epochs_planned": standing.epochs,
        "epochs_run": len(standing.history),
        "best_epoch": standing.best_epoch + 1,
        "train_seconds": round(time.perf_counter() - t0, 1),
        "history": standing.history,
        "train_counts": counts.int().tolist(),
        "precision_used": precision,
        "initialised_from": init_from,
        **provenance(device),
        **cfg.extra,
    }
    save_checkpoint(final, card, out)
    state_path.unlink(missing_ok=True)
    _log(
        cfg,
        f"done: test BA {card.metrics['test']['balanced_accuracy']:.4f} "
        f"AUC {card.metrics['test']['roc_auc']:.4f} -> {out / (cfg.model + '.safetensors')}",
    )
    return card


def _epochs(
    run: _Run,
    step: _Step,
    standing: _Standing,
    card: ModelCard,
    select: tuple[torch.Tensor, torch.Tensor],
    device: torch.device,
    state_path: Path,
    n_train: int,
    steps_per_epoch: int,
) -> None:
    """The epochs left: train, select on the EMA weights, save the state, stop early."""
    from tqdm import tqdm

    cfg, epochs = run.cfg, standing.epochs
    g = torch.Generator().manual_seed(cfg.seed)
    for _ in range(standing.start):  # the same shuffles and augmentations as an uninterrupted run
        torch.randperm(n_train, generator=g)
    t0 = time.perf_counter()
    for epoch in range(standing.start, epochs):
        run.model.train()
        perm = torch.randperm(n_train, generator=g)
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"{cfg.model} {epoch + 1}/{epochs}",
            disable=not cfg.progress or not sys.stderr.isatty(),
            leave=False,
            mininterval=5,
        )
        loss_sum = 0.0
        for i in bar:
            loss = step(run.opt, perm[i * cfg.batch_size : (i + 1) * cfg.batch_size], g)
            run.sched.step()
            run.ema.update(run.model, epoch * steps_per_epoch + i)
            loss_sum += float(loss.detach())
            bar.set_postfix(loss=f"{loss_sum / (i + 1):.3f}")
        m = _select_metrics(run.ema.model, card, select, device)
        standing.history.append(
            {
                "epoch": epoch + 1,
                "loss": loss_sum / steps_per_epoch,
                "val_ba": m["balanced_accuracy"],
                "val_auc": m["roc_auc"],
                "val_images": len(select[1]),
            }
        )
        improved = m["balanced_accuracy"] > standing.best_ba + 1e-9
        if improved:
            standing.best_ba, standing.best_epoch = m["balanced_accuracy"], epoch
            standing.best_state = {k: v.detach().clone() for k, v in run.ema.model.state_dict().items()}
        _log(
            cfg,
            f"epoch {epoch + 1}/{epochs} loss {loss_sum / steps_per_epoch:.4f} val BA "
            f"{m['balanced_accuracy']:.4f} AUC {m['roc_auc']:.4f}{' *' if improved else ''} "
            f"({time.perf_counter() - t0:.0f} s)",
        )
        run.save(state_path, epoch, standing)
        if epoch - standing.best_epoch >= cfg.patience:
            _log(cfg, f"early stop: no val improvement for {cfg.patience} epochs")
            break


def calibrate_and_evaluate(
    model: nn.Module,
    card: ModelCard,
    data: dict[str, tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
) -> ModelCard:
    """Temperature and operating-point bias from val; metrics on val, test and grayscale test."""
    xv, yv = data["val"]
    lv = _predict_logits(model, card, xv, device)
    card.temperature = fit_temperature(lv, yv)
    pv = torch.softmax(lv / card.temperature, 1)[:, 1].numpy()
    thr = float(np.clip(best_threshold(yv.numpy(), pv), 1e-4, 1 - 1e-4))
    card.bias = -math.log(thr / (1 - thr))  # p >= thr  <=>  calibrated p >= 0.5
    clf = Classifier(model, card, device=device)
    metrics: dict[str, Any] = {"val_threshold_uncalibrated": thr}
    xt, yt = data["test"]
    for name, (x, y) in {
        "val": (xv, yv),
        "test": (xt, yt),
        "test_grayscale": (torch.from_numpy(grayscale_u8(xt.numpy())), yt),
    }.items():
        p = clf.predict(x)[:, 1]
        metrics[name] = binary_metrics(y.numpy(), p >= 0.5, p)
    card.metrics = metrics
    return card


def train_many(names: list[str], base: TrainConfig, parallel: bool = True) -> dict[str, ModelCard]:
    """Train several architectures; in parallel as Ray tasks (one GPU each where there are GPUs)."""
    if not parallel or len(names) == 1:
        return {n: train(TrainConfig(**{**asdict(base), "model": n})) for n in names}
    import ray

    from ..pipeline import init_ray

    init_ray(log_to_driver=True)
    gpus = ray.cluster_resources().get("GPU", 0)
    cpus = ray.cluster_resources().get("CPU", 1)
    per_cpu = max(0.1, min(1.0, cpus / len(names)) - 0.01)  # fractional: never starve the driver
    threads = max(1, int(cpus // len(names)))
    # One GPU each where there are enough; else the models share them (three on one GPU: a
    # third each), since a task asking for a whole GPU would wait for the one before it.
    gpu_share = 1.0 / math.ceil(len(names) / gpus) if gpus else 0.0
    remote = ray.remote(num_cpus=per_cpu, num_gpus=gpu_share)(train)
    refs = {
        n: remote.remote(TrainConfig(**{**asdict(base), "model": n, "threads": base.threads or threads}))
        for n in names
    }
    return {n: ray.get(r) for n, r in refs.items()}
