"""What the CPU offers for low precision: VNNI / AMX on x86, dot-product / i8mm on Arm."""

from __future__ import annotations

import functools
import platform
from pathlib import Path

__all__ = ["INT8_FLAGS", "cpu_flags", "int8_acceleration", "machine"]

#: CPU flags (as /proc/cpuinfo names them) that give INT8 dot products.
INT8_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni", "asimddp", "i8mm")


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
