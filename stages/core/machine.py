"""The CPU this runs on, read once from /proc/cpuinfo (Linux; elsewhere the platform's name and no flags):
what the reports and records stamp, and whether bfloat16 runs in hardware. No TensorFlow here."""

from __future__ import annotations

import contextlib
import functools
import os
import platform
from collections.abc import Mapping
from pathlib import Path

#: The CPU kinds whose kernels round differently, newest first: oneDNN's AMX, AVX-512 with bfloat16 (which
#: also changes cifar_rgb_fast's precision, stages/training/hardware.py), AVX-512, AVX2.
ISA_FLAGS = (("amx_bf16", "amx"), ("avx512_bf16", "avx512_bf16"), ("avx512f", "avx512"), ("avx2", "avx2"))

#: CPU flags of bfloat16 dot products in hardware: Intel's AMX tiles (Sapphire Rapids and later) and
#: AVX512_BF16 (AMD Zen 4 and later, Intel Cooper Lake), which oneDNN uses for bfloat16 convolutions.
NATIVE_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


@functools.cache
def cpu_model_and_flags() -> tuple[str, frozenset[str]]:
    model, flags = platform.processor() or platform.machine(), frozenset()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = frozenset(value.split())
    return model, flags


def cpu_has_native_bf16() -> bool:
    """True on CPUs that compute in bfloat16 in hardware (:data:`NATIVE_BF16_FLAGS`)."""
    return bool(NATIVE_BF16_FLAGS & cpu_model_and_flags()[1])


#: oneDNN's ONEDNN_MAX_CPU_ISA values (its docs: "CPU dispatcher control") capped to our kind names, by
#: prefix, most specific first; a value without a cap (ALL, unset) leaves the CPU's own kind.
ONEDNN_CAPS = (
    ("AVX10_1_512_AMX", "amx"),
    ("AVX512_CORE_AMX", "amx"),
    ("AVX10_1_512", "avx512_bf16"),
    ("AVX512_CORE_FP16", "avx512_bf16"),
    ("AVX512_CORE_BF16", "avx512_bf16"),
    ("AVX512", "avx512"),
    ("AVX2", "avx2"),
    ("AVX", "other"),
    ("SSE41", "other"),
)


def kernel_kind(flags: frozenset[str], environ: Mapping[str, str]) -> str:
    """The kind of kernels oneDNN runs here: the CPU's best (:data:`ISA_FLAGS`), lowered by a user's
    ONEDNN_MAX_CPU_ISA; ``eigen`` when TF_ENABLE_ONEDNN_OPTS=0 turns oneDNN off (both change the numbers)."""
    if environ.get("TF_ENABLE_ONEDNN_OPTS", "").strip() == "0":
        return "eigen"
    order = [name for _, name in ISA_FLAGS] + ["other"]
    isa = next((name for flag, name in ISA_FLAGS if flag in flags), "other")
    cap = environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    capped = next((name for prefix, name in ONEDNN_CAPS if cap.startswith(prefix)), isa)
    return max(isa, capped, key=order.index)


def machine() -> dict:
    """The CPU this ran on: float results are reproducible exactly only on the same kind (oneDNN picks
    AVX2, AVX-512 or AMX kernels, which round differently) with the same number of cores."""
    model, flags = cpu_model_and_flags()
    isa = kernel_kind(flags, os.environ)
    # the cores this process may use (taskset, a cluster's allocation), as TensorFlow counts its threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": model, "cores": cores, "isa": isa}
