"""Errors a user can fix, shared by every module (``ConfigError`` is re-exported by
:mod:`mclip.config`), and the two ways a training run ends early, kept here so that the CLI
catches them without importing the models and the training loop."""

from __future__ import annotations

from pathlib import Path


class ConfigError(ValueError):
    """A configuration problem a user can fix; the message names the key and the fix."""


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite losses in a row, a checkpoint that cannot be written);
    the message says what happened, where the last good checkpoint is and what to do."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped training after a step and its checkpoint; ``checkpoint`` is that
    checkpoint's directory and ``step`` its step. A KeyboardInterrupt, so code that catches
    ``Exception`` does not swallow it."""

    def __init__(self, checkpoint: Path | None, step: int):
        super().__init__(
            f"interrupted (SIGINT) after step {step}; checkpoint {checkpoint} "
            f"written, "
            f"continue with --resume"
        )
        self.checkpoint, self.step = checkpoint, step
