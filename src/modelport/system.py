"""Facts about the machine the process runs on, as the process may use it."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

__all__ = ["CPUS_ENV", "cpu_count"]

logger = logging.getLogger(__name__)

#: Environment variable that caps the cores the server budgets threads for (set per Ray replica).
CPUS_ENV = "MODELPORT_CPUS"


def cpu_count() -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup CPU quota and ``$MODELPORT_CPUS``.

    In a container the affinity still lists every core of the node, while the CPU limit is a cgroup
    quota: budgeting threads from the affinity alone would start one thread per node core and throttle.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        cores = min(cores, quota)
    cap = os.environ.get(CPUS_ENV)
    if cap:
        try:
            cores = min(cores, max(1, math.ceil(float(cap))))
        except ValueError:
            logger.warning("%s=%r is not a number of cores; ignored", CPUS_ENV, cap)
    return max(1, cores)


def _cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Cores allowed by a cgroup v2 ``cpu.max`` (``"max 100000"``: no limit) or cgroup v1 CFS quota."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota == "max":
            return None
        return max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota_us <= 0 or period_us <= 0 else max(1, math.ceil(quota_us / period_us))
