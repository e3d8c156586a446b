"""Static int8 inference on CPU: activation ranges measured once, stored beside the weights.

Why int8: on CPUs with AVX-512 VNNI but no AMX (this project's test machine), bf16 autocast is
slower than fp32 for Xception and InceptionV3, while int8 convolutions run several times faster.
The graph is quantized with PT2E (torch.export, then torchao's x86 Inductor quantizer) and
compiled by Inductor, which fuses quantize/convolution/activation into oneDNN int8 kernels:
on this 2-core Xeon at 128 px, batch 32, 2 threads (`python -m benchmarks.inference`), that ran
InceptionV3 2.0x and Xception 1.5x faster than the eager torch.ao int8 graphs it replaces (a
deprecated API), and MobileNetV2 4.0x faster than bf16 autocast.

The ranges come from validation images (`wbc-ray quantize`) and are stored as plain tensors in
`<name>.int8.safetensors`, tagged with the weights' version, the range scheme and the graph
format, so loading never unpickles and stale ranges are refused.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn

from . import _cpu

# How activation ranges are fitted. Neither wins everywhere (on earlier weights min/max kept more
# of Xception's fp32 decisions and histogram more of InceptionV3's), so `wbc-ray quantize` picks
# per model on held-out validation images.
SCHEMES = ("minmax", "histogram")
_FORMAT = "pt2e-x86-inductor-v1"
_OBSERVER_KEYS = ("min_val", "max_val", "histogram")
# The compiled graph runs at fixed batch sizes: compiled for a symbolic batch, InceptionV3 ran
# 3.6x slower here (Inductor loses its fused int8 kernels). Batches are cut into BUCKETS[-1]
# and the rest padded up to the smallest bucket that holds it; each bucket is compiled once.
# Per image, single-threaded, batch 8 ran within 20% of batch 64.
BUCKETS = (8, 32)
log = logging.getLogger(__name__)


def int8_path(models_dir: str | os.PathLike[str], name: str) -> Path:
    return Path(models_dir) / f"{name}.int8.safetensors"


class Int8Unavailable(RuntimeError):
    """No usable int8 ranges for a model: never measured, or measured for other weights."""


def reduce_range() -> bool:
    """7-bit activations on CPUs without VNNI. The stored ranges do not depend on it (they are
    observer states); the quantization parameters derived from them at load do."""
    return not _cpu.cpu_has_vnni()


def _quantizer(scheme: str) -> object:
    from torchao.quantization.pt2e.observer import MinMaxObserver
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

    if scheme not in SCHEMES:
        raise ValueError(f"int8 scheme must be one of {SCHEMES}, got {scheme!r}")
    # Full 8-bit activations where the CPU has VNNI; 7-bit (reduce_range) elsewhere, so that
    # pairs of u8 x s8 products cannot saturate int16 (see cpu_has_vnni). Weights per channel.
    config = xiq.get_default_x86_inductor_quantization_config(reduce_range=reduce_range())
    if scheme == "minmax":
        act = dataclasses.replace(
            config.input_activation, observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-12)
        )
        config = dataclasses.replace(config, input_activation=act, output_activation=act)
    return xiq.X86InductorQuantizer().set_global(config)


def _prepare(model: nn.Module, example: torch.Tensor, scheme: str) -> nn.Module:
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    m = copy.deepcopy(model).to(memory_format=torch.contiguous_format).float().eval()
    # Exported once for any batch size (batch 1 would pin it); compiled per bucket later.
    batch = torch.export.Dim("batch", min=1, max=4096)
    example = example.expand(2, *example.shape[1:]).contiguous()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = torch.export.export(m, (example,), dynamic_shapes=({0: batch},)).module()
        return prepare_pt2e(graph, _quantizer(scheme))  # type: ignore[arg-type]


def compiled_cache() -> Path:
    """Where compiled int8 graphs are kept: per user, never beside the weights (a compiled graph
    is native code, so only this machine's own output is ever loaded)."""
    env = os.environ.get("WBC_RAY_COMPILE_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "wbc-ray" / "int8"


def cache_budget_bytes() -> int:
    """How much the compiled-graph cache may hold before the least recently used graphs go
    (`WBC_RAY_COMPILE_CACHE_MB`, default 2048): every new weights version, CPU kind or
    torch upgrade adds 50-200 MB of packages that nothing would ever remove."""
    return int(float(os.environ.get("WBC_RAY_COMPILE_CACHE_MB", "2048")) * (1 << 20))


def prune_cache(cache: Path, budget: int, keep: str | None = None) -> list[str]:
    """Remove whole compiled graphs (all of a key's files), least recently used first, until the
    cache holds at most `budget` bytes; never `keep` or a graph another process holds the lock
    of (compiling or loading it). Returns the keys removed."""
    import fcntl

    groups: dict[str, list[Path]] = {}
    for f in cache.glob("*"):
        if f.is_file():
            groups.setdefault(f.name.split("-b")[0].split(".")[0], []).append(f)

    def stat(f: Path) -> tuple[float, int]:  # (last use: compiled or loaded, size)
        try:
            st = f.stat()
            return max(st.st_atime, st.st_mtime), st.st_size
        except OSError:  # removed meanwhile by another process
            return 0.0, 0

    info = {f: stat(f) for fs in groups.values() for f in fs}
    used = {k: max(info[f][0] for f in fs) for k, fs in groups.items()}
    total = sum(size for _, size in info.values())
    removed = []
    for key in sorted(groups, key=used.__getitem__):
        if total <= budget:
            break
        if key == keep:
            continue
        with open(cache / f"{key}.lock", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            for f in groups[key]:
                total -= info[f][1]
                f.unlink(missing_ok=True)
            (cache / f"{key}.lock").unlink(missing_ok=True)
        removed.append(key)
    if removed:
        log.info("compiled int8 cache over %d MB: removed %d old graphs", budget >> 20, len(removed))
    return removed


def _ranges_digest(ranges: dict[str, torch.Tensor], meta: dict[str, str]) -> str:
    """The ranges' content, not their file's bytes: safetensors writes its metadata in hash-map
    order, which changes from one process to the next, so the same ranges quantized twice
    (`wbc-ray quantize` rerun, or a copy) would otherwise compile again."""
    h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    for name in sorted(ranges):
        t = ranges[name].contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _compile_key(ranges: dict[str, torch.Tensor], meta: dict[str, str], version: str, input_size: int) -> str:
    """Everything the native code depends on: the ranges and weights, the compiler stack and the
    CPU's instruction set. Not the thread count: the loops read it when they run (_aot.INDUCTOR_CONFIGS)."""
    from importlib.metadata import version as installed

    parts = [
        _FORMAT,
        _ranges_digest(ranges, meta),
        version,
        str(input_size),
        torch.__version__,
        installed("torchao"),  # not imported: 2.6 s, and a found graph needs nothing of it
        torch.backends.cpu.get_cpu_capability(),
        f"reduce_range={reduce_range()}",
        "dynamic_threads",
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


Run = Callable[[torch.Tensor], torch.Tensor]


def _package_path(key: str, n: int) -> Path:
    return compiled_cache() / f"{key}-b{n}.pt2"


def _load_package(path: Path) -> Run | None:
    """The compiled package at `path`, its use recorded; None when there is none or it cannot be
    loaded (a truncated or foreign file: removed, to be compiled afresh)."""
    if not path.exists():
        return None
    try:
        run = torch._inductor.aoti_load_package(os.fspath(path))
    except Exception as exc:
        log.warning("recompiling %s: %s", path, exc)
        path.unlink(missing_ok=True)
        return None
    with contextlib.suppress(OSError):  # a read-only cache still loads
        # Last use in the access time, for `prune_cache`; the modification time stays the
        # compile time.
        os.utime(path, (time.time(), path.stat().st_mtime))
    return run  # type: ignore[no-any-return]


def _load_packages(key: str) -> dict[int, Run | None]:
    """Each bucket's package for `key`, None where it is missing or unreadable."""
    return {n: _load_package(_package_path(key, n)) for n in BUCKETS}


def _compiled_runs(key: str) -> dict[int, Run] | None:
    """Every bucket's package for `key` when this machine has them all, else None. Then the
    graph need not be traced and converted at all (12 s for InceptionV3 here, more for four
    replicas starting together on two cores)."""
    import fcntl

    try:
        with open(compiled_cache() / f"{key}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_SH)  # prune_cache leaves a graph being loaded alone
            runs = _load_packages(key)
    except OSError:  # no cache folder yet, or not ours to lock
        return None
    if any(run is None for run in runs.values()):
        return None
    return {n: run for n, run in runs.items() if run is not None}


class Int8Graph(nn.Module):
    """A converted int8 graph, run through Inductor-compiled code at BUCKETS batch sizes when it
    can be (else as it is: correct, but at fp32 speed); `compiled` says which.

    Compiling takes 10-30 s per bucket on this CPU, so each one is compiled ahead of time
    (AOTInductor) once per machine and kept in `compiled_cache()`; later loads take milliseconds.
    """

    def __init__(
        self,
        graph: nn.Module | None,
        input_size: int,
        key: str | None = None,
        runs: dict[int, Run] | None = None,
    ) -> None:
        super().__init__()
        self.graph = graph  # None when every bucket's package was found (nothing to compile)
        self.key = key
        self.runs: dict[int, Run] = runs or {}
        if key is not None and not self.runs:
            try:
                self.runs = self._compile(key, input_size)
            except Exception as exc:  # no C++ compiler, or an op Inductor cannot lower here
                name = type(exc).__name__
                log.warning("int8 graph not compiled (%s: %s); it runs uncompiled, slowly", name, exc)

    @property
    def compiled(self) -> bool:
        return bool(self.runs)

    @property
    def packages(self) -> list[Path]:
        """The compiled packages this graph runs (one per bucket), if compiled."""
        return [_package_path(self.key, n) for n in self.runs] if self.key else []

    def _compile(self, key: str, input_size: int) -> dict[int, Run]:
        """Every bucket's package, compiling the missing ones (side by side: see _aot)."""
        import fcntl

        from ._aot import compile_programs

        assert self.graph is not None
        cache = compiled_cache()
        cache.mkdir(parents=True, exist_ok=True)
        # Replicas of one model start together: one compiles, the others wait and load.
        with open(cache / f"{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            runs = _load_packages(key)
            missing = {}
            for n in (n for n, run in runs.items() if run is None):
                x = torch.zeros(n, 3, input_size, input_size).contiguous(memory_format=torch.channels_last)
                with torch.no_grad(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    missing[_package_path(key, n)] = torch.export.export(self.graph, (x,))
            compile_programs(missing)
        prune_cache(cache, cache_budget_bytes(), keep=key)
        load = torch._inductor.aoti_load_package
        return {n: run or load(os.fspath(_package_path(key, n))) for n, run in runs.items()}

    def train(self, mode: bool = True) -> Int8Graph:
        # An exported graph refuses train()/eval(); it is fixed in inference form anyway.
        if mode:
            raise RuntimeError("an int8 graph is for inference only")
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.runs:
            assert self.graph is not None
            return self.graph(x)  # type: ignore[no-any-return]
        step = BUCKETS[-1]
        outs = [self._padded(x[i : i + step]) for i in range(0, len(x), step)]
        return torch.cat(outs) if len(outs) != 1 else outs[0]

    def _padded(self, x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        size = next(b for b in BUCKETS if b >= n)
        if size == n:
            return self.runs[size](x.contiguous(memory_format=torch.channels_last))
        pad = x[-1:].expand(size - n, *x.shape[1:])
        return self.runs[size](torch.cat([x, pad]).contiguous(memory_format=torch.channels_last))[:n]


def _convert(prepared: nn.Module, input_size: int, key: str | None) -> Int8Graph:
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Int8Graph(convert_pt2e(prepared), input_size, key)  # type: ignore[arg-type]


def measure_int8(
    model: nn.Module, batches: Iterable[torch.Tensor], scheme: str = "minmax"
) -> tuple[Int8Graph, dict[str, torch.Tensor]]:
    """Run preprocessed `batches` through an observed copy of `model`: (int8 model, its ranges).
    The model is not compiled: the same int8 arithmetic, to compare schemes cheaply."""
    it = iter(batches)
    first = next(it)
    prepared = _prepare(model, first[:1], scheme)
    with torch.inference_mode():
        prepared(first)
        for x in it:
            prepared(x)
    ranges = {k: v.detach().clone() for k, v in prepared.state_dict().items() if k.endswith(_OBSERVER_KEYS)}
    return _convert(prepared, first.shape[-1], None), ranges


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


def load_int8(
    build: Callable[[], nn.Module],
    input_size: int,
    version: str,
    path: str | os.PathLike[str],
    compile: bool = True,
) -> Int8Graph:
    """The model `build` makes, in int8 with the stored ranges; raises Int8Unavailable when they
    cannot be used. `build` is called only when the graph must be traced (not compiled yet)."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise Int8Unavailable(f"no int8 ranges at {path}; run `wbc-ray quantize --models {path.parent}`")
    meta = _header(path)
    if meta.get("format") != _FORMAT:
        raise Int8Unavailable(
            f"{path} holds int8 ranges in format {meta.get('format')!r}, this version reads "
            f"{_FORMAT!r}; rerun `wbc-ray quantize`"
        )
    if not _usable(meta, version):
        raise Int8Unavailable(
            f"{path} was measured for weights {meta.get('version')!r}, not {version!r}; "
            "rerun `wbc-ray quantize`"
        )
    scheme = meta["scheme"]
    ranges = load_file(os.fspath(path))
    key = _compile_key(ranges, meta, version, input_size) if compile else None
    # Compiled before from these very ranges (the key digests them), which matched the model then.
    runs = _compiled_runs(key) if key else None
    if runs:
        return Int8Graph(None, input_size, key, runs)
    prepared = _prepare(build(), torch.zeros(1, 3, input_size, input_size), scheme)
    expected = {k for k in prepared.state_dict() if k.endswith(_OBSERVER_KEYS)}
    if set(ranges) != expected:
        raise Int8Unavailable(f"{path} does not match this model's layers; rerun `wbc-ray quantize`")
    prepared.load_state_dict(ranges, strict=False)
    return _convert(prepared, input_size, key)
