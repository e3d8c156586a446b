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


def cpu_has_vnni() -> bool:
    """Whether u8 x s8 dot products accumulate in int32 (AVX-512 VNNI, AVX-VNNI or AMX). Without
    VNNI, x86 int8 kernels pair products into saturating int16 sums, which wrecks full-range 8-bit
    activations: on an AVX2-only AMD EPYC, int8 graphs with full ranges kept fp32's decision on
    only 42 % (InceptionV3), 60 % (MobileNetV2) and 95 % (Xception) of the test images."""
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & cpu_flags())
