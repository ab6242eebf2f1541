"""What the CPU offers for low precision, and the INT8 settings that follow from it.

The right INT8 format depends on the instructions ONNX Runtime's kernels (MLAS) can use:

* x86 with VNNI or AMX (``avx512_vnni``, ``avx_vnni``, ``amx_int8``): u8 x s8 dot products accumulate
  straight into int32, so U8S8 (uint8 activations, int8 weights) with full 8-bit weights is the fast
  and accurate choice.
* x86 without VNNI (AVX2 / AVX-512BW / SSE4.1): the u8 x s8 kernels multiply with ``(v)pmaddubsw``, which
  adds two u8*s8 products into a *saturating* int16 — 255*127*2 overflows it. ``reduce_range`` keeps
  weights to 7 bits (255*64*2 fits), the setting ORT's own ``quantize_static`` guidance gives for
  these CPUs.
* Arm with dot product (``asimddp``) or i8mm: signed ``sdot``/``smmla`` kernels; ORT's guidance is S8S8
  (int8 activations and weights), no range reduction needed.

The choice comes with a ``reason`` so reports can say why a format was picked.
"""

from __future__ import annotations

import functools
import platform
from collections.abc import Collection
from pathlib import Path
from typing import Literal, TypedDict

__all__ = ["INT8_FLAGS", "Int8Defaults", "cpu_flags", "default_int8_settings", "int8_acceleration", "machine"]

#: CPU flags (as /proc/cpuinfo names them) that give INT8 dot products.
INT8_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni", "asimddp", "i8mm")

_X86_VNNI = ("amx_int8", "avx512_vnni", "avx_vnni")
_ARM_DOT = ("asimddp", "i8mm")
_X86_MARKERS = ("sse2", "avx", "avx2")
_ARM_MARKERS = ("asimd", "neon")


class Int8Defaults(TypedDict):
    """INT8 settings chosen for a CPU, and why."""

    #: "x86-vnni", "x86-no-vnni", "x86-unknown", "arm-dot", "arm-no-dot", "arm-unknown" or "unknown".
    cpu: str
    activation_type: Literal["uint8", "int8"]
    weight_type: Literal["int8"]
    #: Quantize weights to 7 bits (avoids int16 saturation of u8 x s8 on x86 without VNNI).
    reduce_range: bool
    #: The INT8 dot-product flags found (empty: none).
    int8_flags: list[str]
    reason: str


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo is not available)."""
    info = Path("/proc/cpuinfo")
    if not info.exists():
        return frozenset()
    flags: set[str] = set()
    for line in info.read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return frozenset(flags)


def int8_acceleration() -> list[str]:
    """The INT8 dot-product features this CPU has (empty list: none known)."""
    flags = cpu_flags()
    return [f for f in INT8_FLAGS if f in flags]


def machine() -> str:
    """A one-line description of the machine for reports."""
    return f"{platform.machine()} {platform.processor() or ''}".strip()


def _architecture(flags: Collection[str]) -> str:
    """'x86', 'arm' or 'unknown', from the flags first (so they alone decide) and the machine name second."""
    if any(f in flags for f in _X86_MARKERS):
        return "x86"
    if any(f in flags for f in _ARM_MARKERS):
        return "arm"
    name = platform.machine().lower()
    if name in ("x86_64", "amd64", "i386", "i686"):
        return "x86"
    if name in ("aarch64", "arm64") or name.startswith("arm"):
        return "arm"
    return "unknown"


def default_int8_settings(flags: Collection[str] | None = None) -> Int8Defaults:
    """The INT8 format for this CPU (or for ``flags``, as /proc/cpuinfo names them), with the reason."""
    flags = cpu_flags() if flags is None else frozenset(flags)
    found = [f for f in INT8_FLAGS if f in flags]
    arch = _architecture(flags)
    if arch == "x86":
        return _x86(flags, found)
    if arch == "arm":
        return _arm(flags, found)
    return Int8Defaults(
        cpu="unknown",
        activation_type="uint8",
        weight_type="int8",
        reduce_range=False,
        int8_flags=found,
        reason="CPU unknown (no /proc/cpuinfo flags, unknown machine type): ONNX Runtime's CPU default U8S8 — "
        "measure it against FP32 before deploying",
    )


def _x86(flags: Collection[str], found: list[str]) -> Int8Defaults:
    vnni = [f for f in _X86_VNNI if f in flags]
    if vnni:
        return Int8Defaults(
            cpu="x86-vnni",
            activation_type="uint8",
            weight_type="int8",
            reduce_range=False,
            int8_flags=found,
            reason=f"x86 with {'/'.join(vnni)}: U8S8 with 8-bit weights — VNNI accumulates u8 x s8 products in "
            "int32 without saturation",
        )
    saturation = (
        "the u8 x s8 kernels add pairs of products in a saturating int16 (vpmaddubsw), which 8-bit weights can overflow"
    )
    if not flags:
        return Int8Defaults(
            cpu="x86-unknown",
            activation_type="uint8",
            weight_type="int8",
            reduce_range=True,
            int8_flags=found,
            reason=f"x86 with unknown features (no /proc/cpuinfo): U8S8 with reduce_range (7-bit weights), safe "
            f"without VNNI, where {saturation}",
        )
    return Int8Defaults(
        cpu="x86-no-vnni",
        activation_type="uint8",
        weight_type="int8",
        reduce_range=True,
        int8_flags=found,
        reason=f"x86 without VNNI: U8S8 with reduce_range (7-bit weights) — {saturation}",
    )


def _arm(flags: Collection[str], found: list[str]) -> Int8Defaults:
    dot = [f for f in _ARM_DOT if f in flags]
    if dot:
        cpu, reason = "arm-dot", f"Arm with {'/'.join(dot)}: S8S8 — signed dot-product kernels, no range reduction"
    elif flags:
        cpu = "arm-no-dot"
        reason = (
            "Arm without dot-product instructions: S8S8, but INT8 has no dot-product acceleration here — measure "
            "it against FP32 before deploying"
        )
    else:
        cpu = "arm-unknown"
        reason = "Arm with unknown features (no /proc/cpuinfo): S8S8, ONNX Runtime's guidance for Arm — measure it"
    return Int8Defaults(
        cpu=cpu, activation_type="int8", weight_type="int8", reduce_range=False, int8_flags=found, reason=reason
    )
