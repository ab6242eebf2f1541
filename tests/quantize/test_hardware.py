"""INT8 defaults chosen from the CPU flags (monkeypatched: the answer must not depend on the test machine)."""

from __future__ import annotations

import platform
import re

import pytest

from modelport.quantize import hardware
from modelport.quantize.hardware import default_int8_settings


@pytest.mark.parametrize(
    ("flags", "cpu", "activation", "reduce_range", "reason"),
    [
        ({"sse2", "avx2", "avx512f", "avx512_vnni"}, "x86-vnni", "uint8", False, r"x86 with avx512_vnni: U8S8"),
        ({"sse2", "avx2", "avx_vnni"}, "x86-vnni", "uint8", False, r"x86 with avx_vnni: U8S8"),
        ({"sse2", "avx2", "amx_int8", "avx512_vnni"}, "x86-vnni", "uint8", False, r"amx_int8/avx512_vnni"),
        ({"sse2", "avx2", "avx512f", "avx512bw"}, "x86-no-vnni", "uint8", True, r"reduce_range.*saturating int16"),
        ({"sse2", "sse4_1"}, "x86-no-vnni", "uint8", True, r"x86 without VNNI"),
        ({"fp", "asimd", "asimddp"}, "arm-dot", "int8", False, r"Arm with asimddp: S8S8"),
        ({"fp", "asimd", "asimddp", "i8mm"}, "arm-dot", "int8", False, r"Arm with asimddp/i8mm"),
        ({"fp", "asimd"}, "arm-no-dot", "int8", False, r"without dot-product.*measure"),
    ],
)
def test_defaults_follow_the_cpu_flags(
    monkeypatch: pytest.MonkeyPatch, flags: set[str], cpu: str, activation: str, reduce_range: bool, reason: str
) -> None:
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset(flags))
    settings = default_int8_settings()
    assert settings["cpu"] == cpu
    assert settings["activation_type"] == activation
    assert settings["weight_type"] == "int8"
    assert settings["reduce_range"] is reduce_range
    assert settings["int8_flags"] == [f for f in hardware.INT8_FLAGS if f in flags]
    assert settings == default_int8_settings(flags)  # explicit flags give the same answer
    assert re.search(reason, settings["reason"]), settings["reason"]


@pytest.mark.parametrize(
    ("machine", "cpu"),
    [
        ("x86_64", "x86-unknown"),
        ("AMD64", "x86-unknown"),
        ("aarch64", "arm-unknown"),
        ("arm64", "arm-unknown"),
        ("riscv64", "unknown"),
    ],
)
def test_without_flags_the_machine_name_decides(monkeypatch: pytest.MonkeyPatch, machine: str, cpu: str) -> None:
    monkeypatch.setattr(hardware, "cpu_flags", frozenset)
    monkeypatch.setattr(platform, "machine", lambda: machine)
    settings = default_int8_settings()
    assert settings["cpu"] == cpu
    assert settings["int8_flags"] == []
    expected = {"x86-unknown": ("uint8", True), "arm-unknown": ("int8", False), "unknown": ("uint8", False)}[cpu]
    assert (settings["activation_type"], settings["reduce_range"]) == expected
    assert "unknown" in settings["reason"]


def test_flags_outrank_the_machine_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    assert default_int8_settings({"asimd", "asimddp"})["cpu"] == "arm-dot"


def test_int8_acceleration_lists_known_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "avx512_vnni", "amx_int8"}))
    assert hardware.int8_acceleration() == ["amx_int8", "avx512_vnni"]
