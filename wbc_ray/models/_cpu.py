"""What the CPU computes natively; precision choices depend on it (CPUs here differ)."""

from __future__ import annotations

import functools


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((frozenset(line.split()) for line in f if line.startswith("flags")), frozenset())
    except OSError:
        return frozenset()


def cpu_has_amx() -> bool:
    """Whether the CPU has AMX tiles for bf16 (Sapphire Rapids and later)."""
    return "amx_bf16" in cpu_flags()


def cpu_has_bf16() -> bool:
    """Whether the CPU computes bf16 dot products natively (AVX-512 BF16 or AMX). Without them
    oneDNN emulates bf16: measured on an AVX2-only AMD EPYC (2 cores, 128 px, batch 32), bf16
    autocast ran 15x (MobileNetV2), 7x (InceptionV3) and 15x (Xception) slower than fp32.
    """
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())
