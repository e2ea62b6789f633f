"""Setting a run up: the device, the model (fresh, inherited or from a checkpoint), the
optimizer and the optional compilation of the towers; shared by both trainers."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import cast

import torch

from mclip.config import Config, ConfigError, InheritConfig
from mclip.models.dual import CONFIG_FILE, DualEncoder, saved_sources
from mclip.models.inherit import inherit_towers
from mclip.models.checkpoints import newest_intact_checkpoint
from mclip.train.checkpoint import TRAINER_FILE


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda if available else cpu; 'cuda' without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"config key 'train.device' is '{name}' but no CUDA device is visible; "
            f"use train.device=cpu or auto"
        )
    return torch.device(name)


def autocast_context(device: torch.device, precision: str):
    """bf16 autocast on GPU by default, fp32 on CPU (CPU autocast is slow; fp16 is refused)."""
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if use_bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def build_optimizer(model: torch.nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """AdamW; no weight decay on scalars, biases and norm weights (ndim < 2).

    The fused kernel (one pass over all parameters; on CPU ~5x faster than the per-parameter
    loop) on CUDA and CPU; its state dict is the same as the plain one, so a checkpoint moves
    between CPU and GPU runs.
    """
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": cfg.train.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    params = decay + no_decay
    fused = bool(params) and all(
        p.device.type in ("cuda", "cpu") and p.is_floating_point() for p in params
    )
    return torch.optim.AdamW(
        groups,
        lr=cfg.train.lr,
        betas=cast("tuple[float, float]", tuple(cfg.train.betas)),  # two: config_checks
        eps=cfg.train.eps,
        fused=fused or None,
    )


def compile_towers(model: DualEncoder) -> None:
    """torch.compile the image and text towers in place (state-dict keys stay the same).

    The text tower sees a new sequence length per batch (padding to the longest caption), so
    it is compiled with dynamic shapes.
    """
    model.image.compile()
    model.text.compile(dynamic=True)


def inherit_from(model: DualEncoder, cfg: InheritConfig) -> dict[str, dict]:
    """Fill ``model``'s towers from the mclip model at ``cfg.from_model`` (every
    ``cfg.every``-th layer, leading heads / channels); returns what was copied per tower."""
    from mclip.models.adapters.native import load_native

    if str(cfg.from_model).startswith(("open_clip:", "hf:")):
        raise ConfigError(
            f"model.inherit.from_model={cfg.from_model!r}: weights are inherited "
            f"from an mclip run or checkpoint directory only (open_clip and Hugging "
            f"Face towers name their layers differently); use that model as a "
            f"teacher in distill.teachers instead, or inherit from an mclip "
            f"composite of it (model.image.name: {cfg.from_model.split(':')[0]}:...)"
        )
    teacher = load_native(cfg.from_model).model
    return inherit_towers(model, teacher, cfg.every, cfg.towers)


def resume_point(out_dir: Path, resume: bool) -> tuple[Path | None, list[tuple[Path, str]]]:
    """(the checkpoint ``--resume`` continues from: the newest intact one, None for a fresh run;
    [(damaged newer checkpoint, what is wrong)] passed over). A clear error when none is left."""
    if not resume:
        return None, []
    resumed_from, damaged = newest_intact_checkpoint(out_dir, required=(CONFIG_FILE, TRAINER_FILE))
    if resumed_from is None:
        found = "; ".join(f"{path.name}: {problem}" for path, problem in damaged[:3])
        raise ConfigError(
            f"--resume: no {'intact ' if damaged else ''}checkpoint in "
            f"'{out_dir}/checkpoints'{f' ({found})' if found else ''}; start "
            f"without --resume, or point train.out_dir at the run to continue"
        )
    return resumed_from, damaged


def build_model(cfg: Config, resumed_from: Path | None) -> tuple[DualEncoder, dict | None]:
    """(model, what ``model.inherit`` copied or None). A fresh run builds ``cfg.model`` (pretrained
    towers downloaded or read as configured, then inheritance); a resumed one takes the towers'
    architectures from the checkpoint (its weights are loaded later): no download."""
    if resumed_from is not None:
        return DualEncoder(cfg.model, load_pretrained=False, **saved_sources(resumed_from)), None
    model = DualEncoder(cfg.model)
    inherited = inherit_from(model, cfg.model.inherit) if cfg.model.inherit.from_model else None
    return model, inherited


def log_damaged_checkpoints(
    logger, damaged: list[tuple[Path, str]], resumed_from: Path | None
) -> None:
    """One ``checkpoint_damaged`` record per checkpoint :func:`resume_point` passed over."""
    for path, problem in damaged:
        assert resumed_from is not None  # resume_point passes over none without a resume point
        logger.event(
            "checkpoint_damaged",
            checkpoint=str(path),
            problem=problem,
            note=f"passed over: resumed from {resumed_from.name}, the newest intact one",
        )
