"""The CPUs this process may really run on: its affinity mask, capped by the cgroup CPU quota.

OpenMP (and so torch's default intra-op thread count) counts the machine's cores, not a
container's or SLURM job's CPU quota: on a 2-CPU quota of a 16-core host torch starts 16 threads
that take turns on 2 CPUs. :func:`usable_cpus` reads the affinity mask and the tightest cgroup CPU
quota (v2 ``cpu.max`` of the process's own cgroup and its parents, v1 ``cpu.cfs_quota_us`` /
``cpu.cfs_period_us``). Training sizes its threads with it (:mod:`mclip.train.threads`), the
evaluator its image decoders (:mod:`mclip.eval.image_loading`).
"""

from __future__ import annotations

import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
OWN_CGROUP = Path("/proc/self/cgroup")
"""The file naming this process's cgroup (``0::/path`` under cgroup v2)."""


def _own_cgroup_dirs(root: Path, membership: Path) -> list[Path]:
    """cgroup v2 directories from this process's own cgroup up to ``root`` (``root`` alone when
    the membership file names none, e.g. inside a cgroup namespace)."""
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        lines = []
    own = next((line[3:] for line in lines if line.startswith("0::")), "/").strip("/")
    directory, found = root / own, []
    while True:
        found.append(directory)
        if directory == root or root not in directory.parents:
            return found
        directory = directory.parent


def cgroup_cpu_quota(root: Path = CGROUP_ROOT, membership: Path = OWN_CGROUP) -> float | None:
    """The tightest CPU quota in CPUs (e.g. 2.0) along this process's cgroup (v2 ``cpu.max`` of
    its own cgroup and every parent; v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``), or None
    when unlimited or unknown."""
    quotas = []
    for directory in _own_cgroup_dirs(root, membership):
        try:
            quota, period = (directory / "cpu.max").read_text().split()[:2]
            if quota != "max":
                quotas.append(int(quota) / int(period))
        except (OSError, ValueError):
            continue
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        if quota_us > 0 and period_us > 0:
            quotas.append(quota_us / period_us)
    except (OSError, ValueError):
        pass
    return min(quotas) if quotas else None


def usable_cpus(root: Path = CGROUP_ROOT, membership: Path = OWN_CGROUP) -> int:
    """CPUs this process may use: its affinity mask, capped by the cgroup quota (floor, >= 1)."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = cgroup_cpu_quota(root, membership)
    if quota is not None:
        count = min(count or 1, int(quota))
    return max(int(count or 1), 1)
