"""What the trainer does when something goes wrong: one-line errors, preemption, bad workers.

- :class:`~mclip.errors.TrainingError` (in :mod:`mclip.errors`, which the CLI
  imports without the models): training cannot go on (bad steps in a row, a checkpoint write
  failed);
- :class:`StopRequest`: SIGTERM (SLURM preemption) and SIGINT (Ctrl-C) become "checkpoint after
  this step, exit"; :class:`~mclip.errors.TrainingInterrupted` tells the caller that
  Ctrl-C ended the run;
- :func:`ignore_stop_signals`: DataLoader workers leave SIGTERM and SIGINT to the trainer;
- :func:`restore_or_explain`: resuming into a model of another shape is a one-line ConfigError.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import torch

from mclip.config import Config, ConfigError, load_config
from mclip.models.dual import CONFIG_FILE, DualEncoder
from mclip.train.checkpoint import restore_checkpoint


class StopRequest:
    """Turns SIGTERM (SLURM preemption, ``kill``) and SIGINT (Ctrl-C) into a request the loop
    honours after the current step: write a checkpoint, then exit. ``signal_name`` says which
    came first. A second Ctrl-C interrupts at once (KeyboardInterrupt), for a step that hangs.
    A no-op outside the main thread."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.requested = False
        self.signal_name: str | None = None
        self._previous: dict = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.signal_name == "SIGINT":
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = self.signal_name or signal.Signals(signum).name

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


def restore_or_explain(
    directory: Path, model: DualEncoder, optimizer, scheduler, device: torch.device, cfg: Config
) -> dict:
    """:func:`restore_checkpoint`, with a shape mismatch turned into a one-line ConfigError
    naming the model keys that differ from the checkpoint's config."""
    try:
        return restore_checkpoint(directory, model, optimizer, scheduler, device)
    except RuntimeError as error:
        if (
            "size mismatch" not in str(error)
            and "Missing key" not in str(error)
            and "Unexpected key" not in str(error)
        ):
            raise
        saved = load_config(Path(directory) / CONFIG_FILE).to_dict()["model"]
        now = cfg.to_dict()["model"]
        differ = [
            f"model.{key}: {saved_value!r} in the checkpoint, {now_value!r} now"
            for key, saved_value, now_value in _flat_differences(saved, now)
        ]
        raise ConfigError(
            f"--resume: the checkpoint '{directory}' holds a model of another shape than the "
            f"config asks for ({'; '.join(differ[:4]) or 'the weights do not fit'}). Resume with "
            f"the run's own model settings, or start a new run in another train.out_dir"
        ) from None


def _flat_differences(a: dict, b: dict, prefix: str = ""):
    """(dotted key, a's value, b's value) for every leaf that differs between two nested dicts."""
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            yield from _flat_differences(va, vb, f"{prefix}{key}.")
        elif va != vb:
            yield f"{prefix}{key}", va, vb


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers leave SIGTERM (sent to the whole job on preemption) and SIGINT (Ctrl-C
    reaches the terminal's whole process group) to the trainer, which stops them itself after
    its checkpoint; a worker killed by either would end the run with a traceback instead."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
