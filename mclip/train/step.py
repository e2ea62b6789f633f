"""The gradient of one training step: one forward, the gradient cache, or several ranks.

:func:`step_gradients` is what the trainer calls each step (after seeding torch with
:func:`step_seed`); the loss (and so the logit scale's
gradient) is evaluated once per step whatever the number of micro-batches, and BatchNorm's running
statistics are updated once with the whole global batch's statistics.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from mclip.models.dual import DualEncoder
from mclip.train.batchnorm import BatchNormStepStatistics, batchnorm_stats_frozen
from mclip.train.gradcache import gradient_cache_backward
from mclip.train.setup import autocast_context


def step_gradients(
    model: DualEncoder,
    objective: Callable,
    images: torch.Tensor,
    tokens: dict[str, torch.Tensor],
    micro_batches: int,
    device: torch.device,
    precision: str = "fp32",
    world_size: int = 1,
    text_to_image: torch.Tensor | None = None,
) -> torch.Tensor:
    """Accumulate this rank's gradient of one step's loss into ``.grad``; return the loss value.

    ``objective(image_emb, text_emb, logit_scale, logit_bias, text_to_image)`` -> (loss to
    back-propagate, global value): a :class:`ContrastiveObjective`, or a
    :class:`DistillationObjective` with the step's teacher embeddings bound.
    images [n, 3, S, S] and tokens (input_ids / attention_mask [m, L]) are this rank's images
    and texts; ``text_to_image`` LongTensor [m] the image of each text (None: m = n, pairs).
    With ``micro_batches`` > 1 the towers run through the gradient cache; the loss (and so the
    logit scale and bias gradient) is evaluated once either way. The returned value is the
    global loss (identical on every rank). BatchNorm running statistics are updated once, with
    the statistics of the whole global batch: by BatchNorm itself when the step is one forward
    on one process, else by :mod:`mclip.train.batchnorm` (a collective over ``world_size``
    ranks).
    """

    def encode(piece: dict) -> tuple[torch.Tensor, torch.Tensor]:
        with autocast_context(device, precision):
            image_emb = model.encode_image(piece["images"])
            text_emb = model.encode_text(
                {"input_ids": piece["input_ids"], "attention_mask": piece["attention_mask"]}
            )
        return image_emb.float(), text_emb.float()

    value: list[torch.Tensor] = []

    def loss_fn(image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        to_backward, logged = objective(
            image_emb, text_emb, model.logit_scale, model.logit_bias, text_to_image
        )
        value.append(logged)
        return to_backward

    batch = {"images": images, **tokens}
    if micro_batches == 1 and world_size == 1:  # one forward: BatchNorm's own update is the one
        loss_fn(*encode(batch)).backward()
        return value[0]
    batchnorm = BatchNormStepStatistics(model)
    try:
        with batchnorm_stats_frozen(model):
            if micro_batches == 1:
                with batchnorm.recording():
                    embeddings = encode(batch)
                loss_fn(*embeddings).backward()
            else:
                gradient_cache_backward(
                    encode, batch, loss_fn, micro_batches, device, record=batchnorm.recording
                )
        batchnorm.apply(world_size)
    finally:
        batchnorm.remove()
    return value[0]


def step_seed(seed: int, rank: int, step: int) -> int:
    """The torch seed of one rank's step (dropout etc.): a function of the step, not of the
    history, so a resumed run draws what the uninterrupted run drew."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])
