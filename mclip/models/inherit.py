"""Weight inheritance: start a smaller student tower from a teacher's weights.

TinyCLIP (Wu et al. 2023, arXiv:2309.12314) initialises a compact CLIP from a big one by
inheriting weights instead of starting from random ones. Here the student's own architecture
(fewer layers, and optionally fewer attention heads / channels) is built from its config, and
every student tensor is filled from the teacher tensor of the same role:

- layer i of the student takes layer ``i * every`` of the teacher (a transformers encoder's
  ``...layer.N.`` / ``...layers.N.``, a timm ViT's ``blocks.N.``), so ``every: 2`` keeps the
  teacher's layers 0, 2, 4, ...;
- a tensor smaller than the teacher's in some dimension takes the leading slice (the leading
  channels, and so the leading attention heads when the head width is kept); a fused
  query-key-value weight (timm's ``qkv``) is sliced per part, so q, k and v each keep their
  leading heads;
- a timm ViT's absolute position embedding (``pos_embed``) is resampled (bicubic, timm's
  ``resample_abs_pos_embed``) from the teacher's patch grid to the student's when the image
  sizes differ, so every student position takes the teacher's embedding of the same place in
  the image (a leading slice would give the student the teacher's first grid rows);
- a student tensor with no teacher counterpart, or larger than it in some dimension, keeps its
  fresh initialisation and is reported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from timm.layers import resample_abs_pos_embed
from torch import nn

from mclip.errors import ConfigError

_LAYER = re.compile(r"(^|\.)(layer|layers|blocks)\.(\d+)\.")


@dataclass
class InheritReport:
    """What :func:`inherit_weights` did, tensor by tensor (names as in the student)."""

    copied: list[str] = field(default_factory=list)
    sliced: list[str] = field(default_factory=list)
    resampled: list[str] = field(default_factory=list)
    kept_init: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        """Counts and the first few names of tensors that kept their initialisation."""
        return {
            "copied": len(self.copied),
            "sliced": len(self.sliced),
            "resampled": len(self.resampled),
            "kept_init": len(self.kept_init),
            "kept_init_names": self.kept_init[:8],
        }


def teacher_key(student_key: str, every: int) -> str:
    """The teacher tensor name for a student tensor: layer index i becomes i * every."""
    return _LAYER.sub(
        lambda m: f"{m.group(1)}{m.group(2)}.{int(m.group(3)) * every}.", student_key, count=1
    )


def leading_slice(
    teacher: torch.Tensor, shape: torch.Size, fused_parts: int = 1
) -> torch.Tensor | None:
    """The leading ``shape`` block of ``teacher``, or None when ``shape`` does not fit in it.

    ``fused_parts`` > 1: dimension 0 holds that many equal parts (q, k, v) and each part is
    sliced on its own.
    """
    if teacher.dim() != len(shape):
        return None
    if fused_parts > 1:
        if teacher.shape[0] % fused_parts or shape[0] % fused_parts:
            return None
        parts = teacher.reshape(fused_parts, teacher.shape[0] // fused_parts, *teacher.shape[1:])
        block = leading_slice(parts, torch.Size([fused_parts, shape[0] // fused_parts, *shape[1:]]))
        return None if block is None else block.reshape(shape)
    if any(s > t for s, t in zip(shape, teacher.shape)):
        return None
    return teacher[tuple(slice(0, s) for s in shape)]


def _position_grid(model: nn.Module, name: str) -> tuple[list[int], int] | None:
    """(patch grid [rows, cols], prefix tokens in the table) of the timm ViT owning the position
    table ``name`` of ``model``, or None when ``name`` is no such table."""
    if not (name == "pos_embed" or name.endswith(".pos_embed")):
        return None
    owner = model.get_submodule(name.rpartition(".")[0])
    grid = getattr(getattr(owner, "patch_embed", None), "grid_size", None)
    if grid is None:
        return None
    prefix = (
        0 if getattr(owner, "no_embed_class", False) else getattr(owner, "num_prefix_tokens", 1)
    )
    return list(grid), prefix


@torch.no_grad()
def inherit_weights(student: nn.Module, teacher: nn.Module, every: int = 1) -> InheritReport:
    """Fill ``student``'s parameters and buffers from ``teacher`` in place (module docstring).

    Both are modules of the same family (two transformers encoders, two timm ViTs, two mclip
    towers). ``every`` >= 1: student layer i takes teacher layer i * every.
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    source = teacher.state_dict()
    report = InheritReport()
    for name, tensor in student.state_dict().items():
        key = teacher_key(name, every)
        if key not in source:
            report.kept_init.append(name)
            continue
        value = source[key]
        mine, theirs = _position_grid(student, name), _position_grid(teacher, key)
        if (
            mine is not None
            and theirs is not None
            and mine[0] != theirs[0]
            and mine[1] == theirs[1]
        ):
            value = resample_abs_pos_embed(
                value, new_size=mine[0], old_size=theirs[0], num_prefix_tokens=mine[1]
            )
            report.resampled.append(name)
        if value.shape == tensor.shape:
            tensor.copy_(value)
            report.copied.append(name)
            continue
        fused = 3 if name.endswith(("qkv.weight", "qkv.bias")) else 1
        block = leading_slice(value, tensor.shape, fused)
        if block is None:
            report.kept_init.append(name)
        else:
            tensor.copy_(block)
            report.sliced.append(name)
    return report


def inherit_towers(
    student: nn.Module, teacher: nn.Module, every: int, towers: list[str]
) -> dict[str, dict]:
    """Inherit the ``towers`` ('image', 'text') of an mclip DualEncoder ``student`` from the
    DualEncoder ``teacher``; returns {tower: :meth:`InheritReport.summary`}.

    A tower that inherits nothing (different families, or a student wider than its teacher
    everywhere) is a :class:`~mclip.errors.ConfigError`.
    """
    summaries = {}
    for tower in towers:
        report = inherit_weights(getattr(student, tower), getattr(teacher, tower), every)
        if not report.copied and not report.sliced:
            raise ConfigError(
                f"model.inherit: the {tower} tower inherited nothing from the teacher (no tensor "
                f"of the same name fits, e.g. {report.kept_init[:2]}); the student's tower must be "
                f"of the teacher's family and no wider. Fix model.{tower} or model.inherit.towers"
            )
        summaries[tower] = report.summary()
    return summaries
