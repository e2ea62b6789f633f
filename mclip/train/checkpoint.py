"""Training checkpoints: model directory plus ``trainer.pt``, written atomically.

    OUT_DIR/checkpoints/step_0000300/
        config.yaml, model.safetensors (, text_tower/)   -- loadable by DualEncoder.load
        trainer.pt                                        -- optimizer, scheduler, step, RNG
        manifest.json                                     -- every file's size and sha256, last

A checkpoint is written to a hidden temporary directory beside its final name and renamed into
place, so a crash mid-write never leaves a half checkpoint that ``--resume`` would pick up. A
checkpoint damaged later (a truncated copy, a disk error) no longer matches its manifest:
``--resume`` and run directories given to ``mclip eval`` pass over it to the newest intact one
(:func:`newest_intact_checkpoint`), and a damaged checkpoint named directly is a one-line error.
"""

from __future__ import annotations

import pickle
import random
import shutil
import zipfile
from pathlib import Path

import numpy as np
import torch
from mclip.config import Config, ConfigError
from mclip.models.dual import DualEncoder, load_weights
from mclip.models.checkpoints import (
    checkpoint_dir,
    latest_checkpoint,  # noqa: F401
    list_checkpoints,
)
from mclip.models.manifest import DamagedCheckpoint, write_manifest

TRAINER_FILE = "trainer.pt"


def rng_state() -> dict:
    """Python, numpy and torch (CPU and CUDA) RNG states."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
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


def save_checkpoint(
    out_dir: str | Path,
    step: int,
    model: DualEncoder,
    config: Config,
    trainer_state: dict,
    keep: int | None = None,
) -> Path:
    """Write ``checkpoints/step_{step:07d}`` atomically; keep the newest ``keep``. Returns its
    path."""
    root = checkpoint_dir(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:07d}"
    tmp = root / f".tmp-step_{step:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save(tmp, config, manifest=False)
    torch.save(trainer_state, tmp / TRAINER_FILE)
    write_manifest(tmp)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    if keep is not None:  # the newest ``keep``, counting the one just written, which stays
        others = [p for p in list_checkpoints(out_dir) if p != final]
        for old in others[: max(len(others) - (keep - 1), 0)]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def prepare_out_dir(
    out_dir: str | Path, resume: bool, overwrite: bool, remove: bool = True
) -> None:
    """Check that a run may use ``out_dir``; with ``overwrite`` clear an earlier run's files.

    A fresh run (not ``resume``) into a directory holding checkpoints would mix two runs
    (pruning, ``--resume`` and ``log.jsonl`` would all see both), so it is refused unless
    ``overwrite`` is given; then the earlier checkpoints, log and TensorBoard files are removed
    (by the process with ``remove=True``: rank 0), with the earlier run's ``best/`` model.
    """
    if resume and overwrite:
        raise ConfigError(
            "--resume continues the run in train.out_dir and --overwrite deletes "
            "it: pass only one of them"
        )
    if resume:
        return
    found = list_checkpoints(out_dir)
    if not found:
        return
    if not overwrite:
        names = ", ".join(p.name for p in found[-3:])
        raise ConfigError(
            f"train.out_dir '{out_dir}' already holds checkpoints of an earlier run "
            f"({names}). Pass --resume to continue that run, choose another "
            f"train.out_dir, or pass --overwrite to delete it and start afresh."
        )
    if remove:
        shutil.rmtree(checkpoint_dir(out_dir), ignore_errors=True)
        shutil.rmtree(Path(out_dir) / "tensorboard", ignore_errors=True)
        shutil.rmtree(Path(out_dir) / "best", ignore_errors=True)
        (Path(out_dir) / "log.jsonl").unlink(missing_ok=True)


def restore_checkpoint(
    directory: Path,
    model: DualEncoder,
    optimizer: torch.optim.Optimizer,
    scheduler,
    device: torch.device,
) -> dict:
    """Load a training checkpoint into live objects: weights, optimizer, scheduler and RNG.

    Returns the trainer state (``step``, ``skipped``, ...).
    """
    state = load_trainer_state(directory)
    load_weights(model, directory, device=str(device))
    optimizer.load_state_dict(state["optimizer"])
    match_parameter_layout(optimizer)
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return state


def match_parameter_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give every per-parameter state tensor (Adam's moments) its parameter's memory layout.

    ``load_state_dict`` keeps the layout the state was saved in; a checkpoint written with
    ``train.channels_last`` off and resumed with it on (or the reverse) would otherwise pair a
    channels_last weight with contiguous moments, which the fused AdamW kernel reads as flat
    memory (CPU: silently wrong; CUDA: an error).
    """
    for group in optimizer.param_groups:
        for param in group["params"]:
            for key, value in optimizer.state.get(param, {}).items():
                if (
                    torch.is_tensor(value)
                    and value.shape == param.shape
                    and value.stride() != param.stride()
                ):
                    optimizer.state[param][key] = torch.empty_like(param, dtype=value.dtype).copy_(
                        value
                    )


def load_trainer_state(directory: str | Path) -> dict:
    """A checkpoint's optimizer / scheduler / step / RNG state (``trainer.pt``)."""
    path = Path(directory) / TRAINER_FILE
    if not path.is_file():
        raise ConfigError(
            f"'{directory}' has no {TRAINER_FILE}: it is a model export, not a "
            f"training checkpoint, and cannot be resumed"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as error:
        raise DamagedCheckpoint(
            f"'{directory}' is damaged: {TRAINER_FILE} cannot be read "
            f"({str(error).splitlines()[0] if str(error) else type(error).__name__}"
            f"). Resume from an earlier checkpoint"
        ) from None
