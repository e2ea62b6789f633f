"""One run per ``train.out_dir``: a second ``mclip train`` into a folder a live run holds is refused
with one line naming the holder; the lock of a run that died (SIGKILL) or a lock file naming a
dead process is taken over and logged; the lock is released when the run ends."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import THREADS_ENV, log_records, run_cli, tiny_overrides
from mclip.config import ConfigError
from mclip.train.run_dir import LOCK_FILE, RunLock

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "demo.yaml"
HOLD = (
    "import sys, time; from mclip.train.run_dir import RunLock; "
    "RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(600)"
)


def _holder(out_dir: Path) -> subprocess.Popen:
    """Another process holding ``out_dir``'s lock, as a running ``mclip train`` does."""
    out_dir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out_dir)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "held"
    return process


def _train(demo_data, run, *extra):
    return run_cli(
        "train",
        "--config",
        DEMO,
        *tiny_overrides(demo_data, run),
        "train.steps=2",
        *extra,
        env={**os.environ, **THREADS_ENV},
    )


@pytest.mark.slow
def test_a_second_run_into_a_held_out_dir_is_one_line_naming_the_holder(demo_data, tmp_path):
    run = tmp_path / "run"
    holder = _holder(run)
    try:
        result = _train(demo_data, run)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mclip: error: train.out_dir")
    assert f"pid {holder.pid} on host {socket.gethostname()}" in lines[0] and "in use" in lines[0]
    assert not (run / "checkpoints").exists() and not (run / "log.jsonl").exists()


@pytest.mark.slow
def test_the_lock_of_a_killed_run_is_taken_over_and_logged(demo_data, tmp_path):
    run = tmp_path / "run"
    holder = _holder(run)
    holder.send_signal(signal.SIGKILL)  # dies holding it: the kernel drops the lock, the file stays
    holder.wait()
    assert json.loads((run / LOCK_FILE).read_text())["pid"] == holder.pid
    result = _train(demo_data, run)
    assert result.returncode == 0, result.stderr[-2000:]
    taken = [r for r in log_records(run) if r.get("event") == "stale_lock_taken_over"]
    assert len(taken) == 1 and taken[0]["previous"]["pid"] == holder.pid
    assert (run / LOCK_FILE).read_text() == ""  # released at the end: it names nobody


@pytest.mark.slow
def test_two_runs_started_together_never_share_an_out_dir(demo_data, tmp_path):
    run = tmp_path / "run"
    argv = [
        sys.executable,
        "-m",
        "mclip.cli",
        "train",
        "--config",
        str(DEMO),
        "--quiet",
        *tiny_overrides(demo_data, run),
        "train.steps=8",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    processes = [
        subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in processes]
    statuses = sorted(p.returncode for p in processes)
    assert statuses == [0, 2], outputs
    refused = outputs[[p.returncode for p in processes].index(2)][1]
    # refused by the lock while the other runs, or (if it finished first) by its checkpoints
    assert "in use by another run" in refused or "already holds checkpoints" in refused, refused
    assert "Traceback" not in refused
    starts = [r for r in log_records(run) if r.get("event") == "start"]
    assert len(starts) == 1  # one run's log, not two interleaved


def test_run_lock_semantics(tmp_path):
    """Live holder refused, released lock free again, a file naming a dead pid taken over."""
    first = RunLock(tmp_path)
    assert first.acquire() is None
    holder = json.loads((tmp_path / LOCK_FILE).read_text())
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    first.release()
    assert (tmp_path / LOCK_FILE).read_text() == ""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_FILE).write_text(
        json.dumps(
            {
                "pid": dead.pid,
                "host": socket.gethostname(),
                "started": "earlier",
                "command": "mclip train",
            }
        )
    )
    second = RunLock(tmp_path)
    assert second.acquire()["pid"] == dead.pid
    second.release()
    live = _holder(tmp_path)
    try:
        with pytest.raises(ConfigError, match=f"pid {live.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        live.kill()
        live.wait()
    time.sleep(0.05)
    third = RunLock(tmp_path)
    assert third.acquire()["pid"] == live.pid
    third.release()


def test_without_file_locks_the_holder_file_decides(tmp_path, monkeypatch):
    """A file system without POSIX locks (ENOLCK): a live holder on this host is refused, a dead
    one is taken over."""
    import errno
    import fcntl

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "lockf", no_locks)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        (tmp_path / LOCK_FILE).write_text(
            json.dumps(
                {
                    "pid": live.pid,
                    "host": socket.gethostname(),
                    "started": "now",
                    "command": "mclip train",
                }
            )
        )
        with pytest.raises(ConfigError, match=f"pid {live.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        live.kill()
        live.wait()
    lock = RunLock(tmp_path)
    assert lock.acquire()["pid"] == live.pid  # now dead: taken over
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()
