"""How many CPU threads torch should use: the CPUs this process may really run on
(:mod:`mclip.cpus` counts them).

OpenMP (and so torch's default intra-op thread count) counts the machine's cores, not a
container's or SLURM job's CPU quota: on a 2-CPU quota of a 16-core host torch starts 16 threads
that take turns on 2 CPUs, and a DataLoader worker must fight them for time. mclip sizes the
pool to the affinity mask, capped by the tightest cgroup CPU quota (v2 ``cpu.max`` of the
process's own cgroup and its parents, v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``).
"""

from __future__ import annotations

from pathlib import Path

from mclip.cpus import (
    CGROUP_ROOT,
    OWN_CGROUP,
    cgroup_cpu_quota,  # noqa: F401
    usable_cpus,
)


def training_threads(
    requested: int, torch_default: int, root: Path = CGROUP_ROOT, membership: Path = OWN_CGROUP
) -> int:
    """``requested`` (train.threads) when > 0, else torch's default capped by the usable CPUs."""
    return requested if requested > 0 else max(1, min(torch_default, usable_cpus(root, membership)))


def data_workers(
    device_type: str,
    threads: int,
    local_ranks: int = 1,
    root: Path = CGROUP_ROOT,
    membership: Path = OWN_CGROUP,
) -> int:
    """DataLoader workers per rank for ``data.num_workers: auto``.

    CPU training: the CPUs torch's threads leave free, at most 4; 0 when none is free. A worker
    on a core that the compute threads use stalls them at every synchronisation, which costs
    more than decoding between steps: on 2 CPUs, resnet10t + MiniLM ran at 59 samples/s with one
    worker and at 63 with none. GPU training: the rank's share of the CPUs less one for the
    training loop, 1 to 8.
    """
    cpus = usable_cpus(root, membership)
    local_ranks = max(local_ranks, 1)
    if device_type == "cpu":
        return max(0, min(4, (cpus - threads * local_ranks) // local_ranks))
    return max(1, min(8, cpus // local_ranks - 1))
