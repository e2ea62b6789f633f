"""Thread count from the CPUs a process may use (cgroup files generated in the test)."""

from mclip.train.threads import cgroup_cpu_quota, training_threads, usable_cpus


def _no_membership(tmp_path):
    path = tmp_path / "self_cgroup"
    path.write_text("")
    return path


def test_cgroup_v2_and_v1_quotas(tmp_path):
    none = _no_membership(tmp_path)
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("250000 100000\n")
    assert cgroup_cpu_quota(v2, none) == 2.5
    (v2 / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(v2, none) is None
    v1 = tmp_path / "v1" / "cpu"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("200000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(tmp_path / "v1", none) == 2.0
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_quota(tmp_path / "v1", none) is None
    assert cgroup_cpu_quota(tmp_path / "absent", none) is None


def test_the_tightest_quota_along_the_process_own_cgroup_counts(tmp_path):
    """Without a cgroup namespace the limit sits in the job's own cgroup (SLURM, systemd)."""
    root = tmp_path / "fs"
    job = root / "system.slice" / "job_42"
    job.mkdir(parents=True)
    (root / "cpu.max").write_text("max 100000\n")
    (root / "system.slice" / "cpu.max").write_text("800000 100000\n")
    (job / "cpu.max").write_text("200000 100000\n")
    membership = tmp_path / "self_cgroup"
    membership.write_text("0::/system.slice/job_42\n")
    assert cgroup_cpu_quota(root, membership) == 2.0
    assert training_threads(0, torch_default=16, root=root, membership=membership) <= 2


def test_threads_are_capped_by_the_quota_and_an_explicit_count_wins(tmp_path):
    none = _no_membership(tmp_path)
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs: one thread, never two
    assert usable_cpus(tmp_path, none) == 1
    assert training_threads(0, torch_default=16, root=tmp_path, membership=none) == 1
    assert training_threads(3, torch_default=16, root=tmp_path, membership=none) == 3
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert training_threads(0, torch_default=1, root=tmp_path, membership=none) == 1
    assert usable_cpus(tmp_path, none) >= 1


def test_auto_data_workers_leave_the_compute_threads_their_cores(tmp_path, monkeypatch):
    import os

    import pytest

    from mclip.config import ConfigError, config_from_dict
    from mclip.train.threads import data_workers

    none = _no_membership(tmp_path)
    (tmp_path / "cpu.max").write_text("200000 100000\n")  # 2 CPUs
    assert data_workers("cpu", threads=2, root=tmp_path, membership=none) == 0
    assert data_workers("cpu", threads=1, root=tmp_path, membership=none) == 1
    assert data_workers("cuda", threads=2, root=tmp_path, membership=none) == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    (tmp_path / "cpu.max").write_text("6400000 100000\n")  # 64 CPUs, 8 GPUs per node
    assert data_workers("cuda", threads=8, local_ranks=8, root=tmp_path, membership=none) == 7
    assert config_from_dict({}).data.num_workers == "auto"
    assert config_from_dict({"data": {"num_workers": 3}}).data.num_workers == 3
    for bad in ("many", -1):
        with pytest.raises(ConfigError, match="data.num_workers"):
            config_from_dict({"data": {"num_workers": bad}})
