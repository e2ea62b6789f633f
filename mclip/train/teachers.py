"""Frozen teachers for distillation: run online beside the student, or read offline.

An online teacher is any model :func:`mclip.models.adapters.load_model` accepts (an mclip run,
an open_clip or a Hugging Face model). The training stream decodes every image once and applies
each online teacher's own preprocessing beside the student's (the same random flip replayed on
both), so a teacher embeds the very image the student sees, at its own resolution and
normalisation. An offline teacher's embeddings were written once by ``mclip distill embed``
(:mod:`mclip.data.teacher_cache`) and are looked up by shard, sample key, language and content
hash; the flipped image's embedding is used when the student's image was flipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from mclip.config import DistillConfig
from mclip.data.teacher_cache import TeacherEmbeddingStore
from mclip.models.adapters import ModelAdapter, load_model
from mclip.train.setup import autocast_context


@dataclass
class Teacher:
    """A frozen teacher (a loaded model, or stored embeddings) and the numbers the losses need."""

    name: str
    model: ModelAdapter | None
    store: TeacherEmbeddingStore | None
    logit_scale: float
    """Temperature inverse t (not its log)."""
    logit_bias: float
    weight: float

    @property
    def embed_dim(self) -> int:
        if self.store is not None:
            return self.store.embed_dim
        assert self.model is not None  # no store: an online teacher, loaded
        return int(self.model.embed_dim)

    @property
    def online(self) -> bool:
        return self.store is None

    def image_transform(self) -> Callable:
        """PIL image -> this online teacher's input tensor [3, H, W] (picklable, for the stream)."""
        assert self.model is not None  # asked of online teachers only
        return self.model.image_transform(train=False)


def load_teachers(cfg: DistillConfig, device: torch.device) -> list[Teacher]:
    """Load ``cfg.teachers``: online ones in eval mode on ``device``, every parameter frozen."""
    teachers = []
    for entry in cfg.teachers:
        model = store = None
        if entry.embeddings:
            store = TeacherEmbeddingStore(entry.embeddings)
            own_scale, own_bias = store.logit_scale, store.logit_bias
        else:
            model = load_model(entry.model, pretrained=entry.pretrained, device=device).eval()
            model.requires_grad_(False)
            own_scale = math.exp(float(model.logit_scale))
            own_bias = float(model.logit_bias) if model.logit_bias is not None else None
        scale = entry.logit_scale if entry.logit_scale is not None else own_scale
        bias = entry.logit_bias if entry.logit_bias is not None else (own_bias or 0.0)
        teachers.append(
            Teacher(
                entry.model or entry.embeddings,
                model,
                store,
                float(scale),
                float(bias),
                entry.weight,
            )
        )
    return teachers


@torch.no_grad()
def embed_batch(
    teachers: Sequence[Teacher],
    batch: dict,
    device: torch.device,
    batch_size: int = 256,
    precision: str = "auto",
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each teacher's normalised (image [N, d_k], text [M, d_k]) float32 embeddings of a
    training-stream batch, on ``device``.

    Online teacher k encodes ``batch["teacher_images"][j]`` (j: its place among the online
    teachers) and the captions ``batch_size`` at a time, under the student's autocast
    (``precision`` as ``train.precision``: bf16 on GPU by default); an offline one looks its
    rows up.
    """
    out, online = [], iter(batch["teacher_images"])
    texts = batch["texts"]
    for teacher in teachers:
        if teacher.store is not None:
            images, text = teacher.store.lookup(
                batch["shards"],
                batch["keys"],
                batch["image_hashes"],
                batch["flipped"],
                texts,
                batch["languages"],
                batch["text_to_image"],
            )
        else:
            assert teacher.model is not None  # no store: an online teacher, loaded
            pixels = next(online).to(device)
            with autocast_context(device, precision):
                images = torch.cat(
                    [
                        teacher.model.encode_image(pixels[i : i + batch_size])
                        for i in range(0, pixels.shape[0], batch_size)
                    ]
                )
                text = torch.cat(
                    [
                        teacher.model.encode_text(texts[i : i + batch_size])
                        for i in range(0, len(texts), batch_size)
                    ]
                )
        out.append((images.float().to(device), text.float().to(device)))
    return out
