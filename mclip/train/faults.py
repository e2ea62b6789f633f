"""What the trainer does when something goes wrong: one-line errors, preemption, bad workers.

- :class:`TrainingError`: training cannot go on (bad steps in a row, a checkpoint write failed);
- :class:`StopRequest`: SIGTERM (SLURM preemption) becomes "checkpoint after this step, exit";
- :func:`ignore_sigterm`: DataLoader workers leave SIGTERM to the trainer;
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


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite losses in a row, a checkpoint that cannot be written);
    the message says what happened, where the last good checkpoint is and what to do."""


class StopRequest:
    """Turns SIGTERM (SLURM preemption, ``kill``) into a request the loop honours after the
    current step: write a checkpoint, then exit. A no-op outside the main thread."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def restore_or_explain(directory: Path, model: DualEncoder, optimizer, scheduler,
                       device: torch.device, cfg: Config) -> dict:
    """:func:`restore_checkpoint`, with a shape mismatch turned into a one-line ConfigError
    naming the model keys that differ from the checkpoint's config."""
    try:
        return restore_checkpoint(directory, model, optimizer, scheduler, device)
    except RuntimeError as error:
        if "size mismatch" not in str(error) and "Missing key" not in str(error) \
                and "Unexpected key" not in str(error):
            raise
        saved = load_config(Path(directory) / CONFIG_FILE).to_dict()["model"]
        now = cfg.to_dict()["model"]
        differ = [f"model.{key}: {saved_value!r} in the checkpoint, {now_value!r} now"
                  for key, saved_value, now_value in _flat_differences(saved, now)]
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


def ignore_sigterm(worker_id: int) -> None:
    """DataLoader workers leave SIGTERM (sent to the whole job on preemption) to the trainer,
    which stops them itself after its checkpoint."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
