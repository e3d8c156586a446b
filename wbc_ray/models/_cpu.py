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
    autocast ran 15x (MobileNetV2), 7x (InceptionV3) and 15x (Xception) slower than fp32."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def cpu_has_vnni() -> bool:
    """Whether u8 x s8 dot products accumulate in int32 (AVX-512 VNNI, AVX-VNNI or AMX). Without
    VNNI, x86 int8 kernels pair products into saturating int16 sums, which wrecks full-range 8-bit
    activations: on an AVX2-only AMD EPYC, int8 graphs with full ranges kept fp32's decision on
    only 42 % (InceptionV3), 60 % (MobileNetV2) and 95 % (Xception) of the test images."""
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & cpu_flags())
