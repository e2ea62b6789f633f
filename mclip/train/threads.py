"""How many CPU threads torch should use: the CPUs this process may really run on.

OpenMP (and so torch's default intra-op thread count) counts the machine's cores, not a
container's or SLURM job's CPU quota: on a 2-CPU quota of a 16-core host torch starts 16 threads
that take turns on 2 CPUs, and a DataLoader worker must fight them for time. mclip sizes the
pool to the affinity mask, capped by the cgroup CPU quota (v2 ``cpu.max``, v1
``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``).
"""

from __future__ import annotations

import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_cpu_quota(root: Path = CGROUP_ROOT) -> float | None:
    """The cgroup's CPU quota in CPUs (e.g. 2.0), or None when unlimited or unknown."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def usable_cpus(root: Path = CGROUP_ROOT) -> int:
    """CPUs this process may use: its affinity mask, capped by the cgroup quota (floor, >= 1)."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = cgroup_cpu_quota(root)
    if quota is not None:
        count = min(count or 1, int(quota))
    return max(int(count or 1), 1)


def training_threads(requested: int, torch_default: int, root: Path = CGROUP_ROOT) -> int:
    """``requested`` (train.threads) when > 0, else torch's default capped by the usable CPUs."""
    return requested if requested > 0 else max(1, min(torch_default, usable_cpus(root)))
