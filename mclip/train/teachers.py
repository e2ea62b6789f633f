"""Frozen teachers for distillation, run online beside the student.

Each teacher is any model :func:`mclip.models.adapters.load_model` accepts (an mclip run, an
open_clip or a Hugging Face model). The training stream decodes every image once and applies
each teacher's own preprocessing beside the student's (the same random flip replayed on both),
so a teacher embeds the very image the student sees, at its own resolution and normalisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from mclip.config import DistillConfig
from mclip.models.adapters import ModelAdapter, load_model


@dataclass
class Teacher:
    """A loaded, frozen teacher and the numbers the losses need from it."""
    name: str
    model: ModelAdapter
    logit_scale: float
    """Temperature inverse t (not its log)."""
    logit_bias: float
    weight: float

    @property
    def embed_dim(self) -> int:
        return int(self.model.embed_dim)

    def image_transform(self) -> Callable:
        """PIL image -> this teacher's input tensor [3, H, W] (picklable, for the stream)."""
        return self.model.image_transform(train=False)


def load_teachers(cfg: DistillConfig, device: torch.device) -> list[Teacher]:
    """Load ``cfg.teachers`` in eval mode on ``device``, every parameter frozen."""
    teachers = []
    for entry in cfg.teachers:
        model = load_model(entry.model, pretrained=entry.pretrained, device=device).eval()
        model.requires_grad_(False)
        scale = entry.logit_scale if entry.logit_scale is not None else \
            math.exp(float(model.logit_scale))
        own_bias = model.logit_bias
        bias = entry.logit_bias if entry.logit_bias is not None else \
            (float(own_bias) if own_bias is not None else 0.0)
        teachers.append(Teacher(entry.model, model, float(scale), float(bias), entry.weight))
    return teachers


@torch.no_grad()
def embed_batch(teachers: Sequence[Teacher], images: Sequence[torch.Tensor], texts: list[str],
                batch_size: int = 256) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each teacher's normalised (image [N, d_k], text [M, d_k]) float32 embeddings.

    ``images[k]`` [N, 3, H_k, W_k] is the batch in teacher k's preprocessing; ``texts`` the M
    captions. Encoded ``batch_size`` at a time, without gradients.
    """
    out = []
    for teacher, pixels in zip(teachers, images):
        image_parts = [teacher.model.encode_image(pixels[i:i + batch_size])
                       for i in range(0, pixels.shape[0], batch_size)]
        text_parts = [teacher.model.encode_text(texts[i:i + batch_size])
                      for i in range(0, len(texts), batch_size)]
        out.append((torch.cat(image_parts).float(), torch.cat(text_parts).float()))
    return out
