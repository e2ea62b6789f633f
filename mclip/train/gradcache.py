"""Gradient cache: a contrastive step over a batch too large for activations in memory.

GradCache (Gao et al. 2021, arXiv:2101.06983): (1) run the encoders on K micro-batches without
building a graph and keep only the embeddings; (2) evaluate the loss once on all embeddings and
back-propagate into them (and into the logit scale and bias, once); (3) re-run each micro-batch
with a graph and back-propagate its slice of the cached embedding gradient. The RNG state
before each micro-batch forward is recorded in (1) and replayed in (3), so dropout and
drop-path masks match and the result is exactly the gradient of the micro-batched forward.

BatchNorm in training mode normalises with each micro-batch's statistics, so with K > 1 a
BatchNorm tower does not see full-batch statistics (the same holds for plain accumulation).
Set ``train.freeze_batchnorm`` to run BatchNorm layers in eval mode, which makes the step exact
for any tower. Running statistics are the caller's business (:mod:`mclip.train.batchnorm`):
``record`` wraps the no-graph pass, the one pass that sees every micro-batch exactly once.
"""

from __future__ import annotations

import contextlib
from typing import Callable, cast

import torch

Embeddings = tuple[torch.Tensor, torch.Tensor]


def _rng_state(device: torch.device) -> tuple:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple, device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def _split(batch: dict[str, torch.Tensor], parts: int) -> list[dict[str, torch.Tensor]]:
    pieces = {k: torch.tensor_split(v, parts) for k, v in batch.items()}
    return [{k: pieces[k][i] for k in batch} for i in range(parts)]


def _row_slices(parts: list[torch.Tensor]) -> list[slice]:
    """The rows of each part in their concatenation."""
    ends = torch.tensor([p.shape[0] for p in parts]).cumsum(0).tolist()
    return [slice(end - p.shape[0], end) for p, end in zip(parts, ends)]


def gradient_cache_backward(
    encode: Callable[[dict], Embeddings],
    batch: dict[str, torch.Tensor],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    micro_batches: int,
    device: torch.device,
    record: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> torch.Tensor:
    """One contrastive step's backward pass in ``micro_batches`` pieces; returns the loss.

    ``encode(piece)`` maps a slice of ``batch`` (every tensor split along dim 0 into
    ``micro_batches`` near-equal parts, each tensor on its own: images [N] and texts [M] may
    differ in length, as with several captions per image) to (image_emb [n_i, d],
    text_emb [m_i, d]); ``loss_fn(image_emb [N, d], text_emb [M, d])`` returns
    the scalar to back-propagate (it may use the logit scale / bias, which then receive their
    gradient exactly once). Parameter gradients are accumulated into ``.grad`` as one backward
    over the whole batch would; the caller zeroes them before and steps after. ``record()`` is
    entered around the no-graph pass (to collect BatchNorm statistics once per step).
    """
    pieces = _split(batch, micro_batches)
    states, image_parts, text_parts = [], [], []
    with torch.no_grad(), record():
        for piece in pieces:
            states.append(_rng_state(device))
            image_emb, text_emb = encode(piece)
            image_parts.append(image_emb)
            text_parts.append(text_emb)
    end_state = _rng_state(device)

    image_all = torch.cat(image_parts).detach().requires_grad_()
    text_all = torch.cat(text_parts).detach().requires_grad_()
    loss = loss_fn(image_all, text_all)
    loss.backward()

    image_rows, text_rows = _row_slices(image_parts), _row_slices(text_parts)
    for i, piece in enumerate(pieces):
        _set_rng_state(states[i], device)
        image_emb, text_emb = encode(piece)
        pairs = [
            (emb, cast(torch.Tensor, cached.grad)[rows].to(emb.dtype))  # set by loss.backward()
            for emb, cached, rows in (
                (image_emb, image_all, image_rows[i]),
                (text_emb, text_all, text_rows[i]),
            )
            if emb.requires_grad
        ]  # a fully frozen tower has nothing to back-propagate
        if pairs:
            torch.autograd.backward([p[0] for p in pairs], [p[1] for p in pairs])
    _set_rng_state(end_state, device)
    return loss.detach()
