"""Ahead-of-time compilation of exported int8 programs into AOTInductor packages.

Inductor's code generation is single-threaded Python (about two thirds of a compile here, the
C++ build the rest), so the batch buckets of one graph are compiled side by side, one per
process, where the machine has the cores: on this 2-core CPU two InceptionV3 buckets took 78 s
together against 70 s for one. Run as `python -m wbc_ray.models._aot PROGRAM PACKAGE` for the
extra processes.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch

# Freezing folds the int8 weights in: the fused oneDNN kernels need constants. Inductor would
# bake the compiling process's thread count into its OpenMP loops; read at run time instead, one
# package serves `wbc-ray quantize` (all cores) and the one-thread replicas alike, so the first
# Serve start after quantizing compiles nothing. Measured on InceptionV3 128 px, batch 32: as
# fast as a fixed count, identical outputs. The wrapper (host code that calls the kernels, the
# largest C++ file) is built unoptimised: 3-7 s less per compile, the same speed at 1 thread,
# batches 8 and 32 (the kernels carry the work), identical outputs.
INDUCTOR_CONFIGS = {
    "freezing": True,
    "cpp.dynamic_threads": True,
    "aot_inductor.compile_wrapper_opt_level": "O0",
}
log = logging.getLogger(__name__)


def compile_program(program: torch.export.ExportedProgram, package: Path) -> None:
    """Compile `program` to `package`, which appears whole or not at all."""
    tmp = package.with_name(f"{package.stem}.{os.getpid()}.tmp.pt2")
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch._inductor.aoti_compile_and_package(
                program, package_path=os.fspath(tmp), inductor_configs=INDUCTOR_CONFIGS
            )
        os.replace(tmp, package)
    finally:
        tmp.unlink(missing_ok=True)


def compile_programs(programs: dict[Path, torch.export.ExportedProgram]) -> None:
    """Compile each program to its package path: the first here, the others at the same time in
    child processes when there are spare cores; a child that fails is compiled here after."""
    items = list(programs.items())
    if not items:
        return
    spare = max(0, min(len(items) - 1, (os.cpu_count() or 1) - 1))
    children: list[tuple[Path, subprocess.Popen[bytes], Path]] = []
    with tempfile.TemporaryDirectory(prefix="wbc-ray-aot-") as tmp:
        for i, (package, program) in enumerate(items[1 : 1 + spare]):
            saved = Path(tmp) / f"program{i}.pt2"
            torch.export.save(program, os.fspath(saved))
            cmd = [sys.executable, "-m", "wbc_ray.models._aot", os.fspath(saved), os.fspath(package)]
            output = Path(tmp) / f"program{i}.log"
            with open(output, "wb") as out:
                child = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
            children.append((package, child, output))
        rest = [items[0], *items[1 + spare :]]
        try:
            for package, program in rest:
                compile_program(program, package)
        finally:
            failed = [(p, out) for p, child, out in children if child.wait() != 0 or not p.exists()]
        for package, output in failed:
            tail = output.read_text(errors="replace")[-500:]
            log.warning("compiling %s in a child process failed, compiling here: %s", package.name, tail)
            compile_program(programs[package], package)


def _main(program: str, package: str) -> None:
    # The int8 ops, and Inductor's int8 fusion passes, which torchao registers when its x86
    # quantizer is imported: without them the child compiled the unfused reference graph
    # (slower, and its numbers differed from the parent's packages; caught by the tests).
    import torchao.quantization.pt2e.quantize_pt2e  # noqa: F401
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer  # noqa: F401

    compile_program(torch.export.load(program), Path(package))


if __name__ == "__main__":
    _main(*sys.argv[1:3])
