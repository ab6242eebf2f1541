"""The core count the thread budgets start from."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_cpu_count_is_capped_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from modelport import system

    monkeypatch.setattr(system, "_cgroup_cpu_quota", lambda: None)
    monkeypatch.setattr(system.os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.delenv("MODELPORT_CPUS", raising=False)
    assert system.cpu_count() == 8
    monkeypatch.setenv("MODELPORT_CPUS", "2.5")
    assert system.cpu_count() == 3
    monkeypatch.setenv("MODELPORT_CPUS", "16")
    assert system.cpu_count() == 8  # never more than the process may run on
    monkeypatch.setenv("MODELPORT_CPUS", "lots")
    assert system.cpu_count() == 8  # ignored, with a warning
    monkeypatch.delenv("MODELPORT_CPUS")
    monkeypatch.setattr(system, "_cgroup_cpu_quota", lambda: 2)  # a container limited to 2 CPUs
    assert system.cpu_count() == 2


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu.max": "150000 100000\n"}, 2),
        ({"cpu.max": "50000 100000\n"}, 1),
        ({"cpu/cpu.cfs_quota_us": "400000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 4),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),
    ],
)
def test_cgroup_cpu_quota(tmp_path: Path, files: dict[str, str], expected: int | None) -> None:
    from modelport.system import _cgroup_cpu_quota

    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert _cgroup_cpu_quota(tmp_path) == expected
