"""Training checkpoints: model directory plus ``trainer.pt``, written atomically.

    OUT_DIR/checkpoints/step_0000300/
        config.yaml, model.safetensors (, text_tower/)   -- loadable by DualEncoder.load
        trainer.pt                                        -- optimizer, scheduler, step, RNG

A checkpoint is written to a hidden temporary directory beside its final name and renamed into
place, so a crash mid-write never leaves a half checkpoint that ``--resume`` would pick up.
"""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from mclip.config import Config, ConfigError
from mclip.models.dual import CONFIG_FILE, WEIGHTS_FILE, DualEncoder

TRAINER_FILE = "trainer.pt"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def checkpoint_dir(out_dir: str | Path) -> Path:
    """Where a run keeps its checkpoints: ``OUT_DIR/checkpoints``."""
    return Path(out_dir) / "checkpoints"


def rng_state() -> dict:
    """Python, numpy and torch (CPU and CUDA) RNG states."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(out_dir: str | Path, step: int, model: DualEncoder, config: Config,
                    trainer_state: dict, keep: int | None = None) -> Path:
    """Write ``checkpoints/step_{step:07d}`` atomically; keep the newest ``keep``. Returns its path."""
    root = checkpoint_dir(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:07d}"
    tmp = root / f".tmp-step_{step:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save(tmp, config)
    torch.save(trainer_state, tmp / TRAINER_FILE)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    if keep is not None:
        for old in list_checkpoints(out_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Complete checkpoints under ``out_dir``, oldest first."""
    root = checkpoint_dir(out_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if (m := _STEP_DIR.match(p.name)) and (p / WEIGHTS_FILE).is_file()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def resolve_model_dir(path: str | Path) -> Path:
    """A model directory from a checkpoint directory or a run directory (its latest checkpoint)."""
    path = Path(path)
    if (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file():
        return path
    latest = latest_checkpoint(path)
    if latest is None:
        raise ConfigError(f"'{path}' is neither a model directory ({CONFIG_FILE} + {WEIGHTS_FILE}) "
                          f"nor a run directory with checkpoints/step_*; pass e.g. "
                          f"runs/demo or runs/demo/checkpoints/step_0000300")
    return latest


def load_trainer_state(directory: str | Path) -> dict:
    """A checkpoint's optimizer / scheduler / step / RNG state (``trainer.pt``)."""
    path = Path(directory) / TRAINER_FILE
    if not path.is_file():
        raise ConfigError(f"'{directory}' has no {TRAINER_FILE}: it is a model export, not a "
                          f"training checkpoint, and cannot be resumed")
    return torch.load(path, map_location="cpu", weights_only=False)
