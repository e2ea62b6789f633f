"""A training run's directory, claimed for the run's lifetime.

:func:`open_run` is how both trainers start: pick the device, join the ranks, and on rank 0 check
that ``train.out_dir`` can be written and take its lock, then keep or clear an earlier run's
files (:func:`~mclip.train.checkpoint.prepare_out_dir`). All of it happens before any data or
model is touched. The lock is ``OUT_DIR/.mclip.lock``, a POSIX record lock (``fcntl.lockf``)
held until the run ends, with its holder written in it:

    {"pid": 4242, "host": "node7", "started": "2026-12-05 21:30:00", "command": "mclip train ..."}

A second run into the same folder is refused with one line naming the holder. The operating
system drops the lock when its process dies (SIGKILL included), so the file a dead run leaves
behind, still naming it, is taken over and the takeover is logged (``stale_lock_taken_over``).
On a file system without locks the file alone decides: a holder whose pid is dead on this host
is stale. POSIX locks are not inherited by forked DataLoader workers, so a worker that outlives a
killed trainer holds nothing.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from mclip.config import Config, ConfigError
from mclip.outputs import check_writable
from mclip.train.checkpoint import prepare_out_dir
from mclip.train.distributed import DistContext, any_rank, distributed_device, init_distributed
from mclip.train.setup import resolve_device

LOCK_FILE = ".mclip.lock"


class RunLock:
    """The exclusive lock of one run directory (module docstring)."""

    def __init__(self, out_dir: str | Path):
        self.path = Path(out_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> dict | None:
        """Take the lock for this process. Returns the earlier holder when a stale lock (its
        process gone without releasing it) was taken over, else None; a ConfigError naming the
        holder when a live run holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            previous = _read_holder(fd)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                held = error.errno in (errno.EACCES, errno.EAGAIN)
                if held or (previous and _alive_on_this_host(previous)):
                    raise ConfigError(
                        f"train.out_dir '{self.path.parent}' is in use by another "
                        f"run ({_describe(previous)}); wait for it to end or stop "
                        f"it, or choose another train.out_dir"
                    ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(_holder()).encode(), 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return previous or None

    def release(self) -> None:
        """Empty the lock file (a released lock names nobody) and let it go."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
            fcntl.lockf(self._fd, fcntl.LOCK_UN)
        except OSError:
            pass
        finally:
            os.close(self._fd)
            self._fd = None


def _holder() -> dict:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(sys.argv)[:300],
    }


def _read_holder(fd: int) -> dict:
    text = os.pread(fd, 1 << 16, 0).decode("utf-8", "replace").strip()
    if not text:
        return {}
    try:
        holder = json.loads(text)
        return holder if isinstance(holder, dict) else {"unreadable": text[:100]}
    except ValueError:
        return {"unreadable": text[:100]}


def _alive_on_this_host(holder: dict) -> bool:
    """Whether the holder's pid runs on this host (a holder on another host counts as alive)."""
    if holder.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(holder.get("pid", -1)), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, OverflowError):
        return True
    return True


def _describe(holder: dict) -> str:
    if not holder or "pid" not in holder:
        return "its lock file names no holder"
    return (
        f"pid {holder['pid']} on host {holder.get('host', '?')}, started "
        f"{holder.get('started', '?')}: {holder.get('command', '')}".rstrip(": ")
    )


@dataclass
class Run:
    """What a trainer starts from: its directory, device, ranks, and a stale lock it took over
    (the earlier holder, or None) for the log."""

    out_dir: Path
    device: torch.device
    ctx: DistContext
    taken_over: dict | None = None


@contextlib.contextmanager
def open_run(cfg: Config, resume: bool, overwrite: bool) -> Iterator[Run]:
    """Claim ``cfg.train.out_dir`` for the run inside the ``with`` block (module docstring):
    device, ranks, a writable and locked folder, an earlier run kept (``resume``) or cleared
    (``overwrite``). Every rank raises the same way when rank 0 cannot claim the folder."""
    out_dir = Path(cfg.train.out_dir)
    device = resolve_device(
        distributed_device(cfg.train.device, int(os.environ.get("LOCAL_RANK", "0")))
    )
    if device.type == "cuda":
        torch.cuda.set_device(device)
    ctx = init_distributed(cfg, device)
    lock, problem, taken_over = RunLock(out_dir), None, None
    if ctx.is_main:
        try:
            check_writable(out_dir, "train.out_dir")
            taken_over = lock.acquire()
        except ConfigError as error:
            problem = error
    try:
        if any_rank(problem is not None, ctx, device):
            raise problem or ConfigError(
                f"rank 0 could not claim train.out_dir '{out_dir}' (its message says why)"
            )
        prepare_out_dir(out_dir, resume, overwrite, remove=ctx.is_main)
        if ctx.world_size > 1:
            torch.distributed.barrier()
        yield Run(out_dir, device, ctx, taken_over)
    finally:
        lock.release()


def log_taken_over(logger, run: Run) -> None:
    """A ``stale_lock_taken_over`` record when the run took over a dead run's lock."""
    if run.taken_over:
        logger.event(
            "stale_lock_taken_over",
            previous=run.taken_over,
            note="the earlier holder ended without releasing train.out_dir's lock",
        )
