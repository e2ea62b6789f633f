"""Distillation losses from frozen teachers, built on the tiles of :mod:`mclip.losses.tiled`.

Notation: student embeddings x [N, d] (images) and y [M, d] (texts), L2-normalised, student
logits s_ij = t <x_i, y_j> (t = exp(logit_scale), + b for the sigmoid form); teacher k has
embeddings a_k [N, d_k], b_k [M, d_k] and logits u^k_ij = t_k <a_ki, b_kj> (+ b_k).

- Similarity KD (CLIP-KD, Yang et al. 2024, arXiv:2307.12732; MobileCLIP, Vasu et al. 2024,
  arXiv:2311.17049): per row i, KL(p_T(i, .) || p_S(i, .)) between the teacher's and the
  student's softmax over the row, and the same per column. An ensemble is averaged after the
  softmax, p_T = sum_k w_k softmax(u^k), each member with its own temperature.
  :class:`TiledSoftmaxKD` computes the per-row KL for ``chunk`` rows at a time (the column
  direction is the same function with the roles of images and texts swapped), so no N x M
  matrix is ever held; dKL_i/ds_ij = p_S_ij - p_T_ij.
- Sigmoid-teacher KD: every pair is its own Bernoulli (SigLIP teachers), KL(sigmoid(u_ij) ||
  sigmoid(s_ij)) summed over pairs, divided by N; d/ds_ij = sigmoid(s_ij) - p_T_ij
  (:class:`TiledSigmoidKD`).
- Feature KD and the cross-modal contrastive loss are per-sample or plain InfoNCE terms
  (:func:`feature_distance`, :mod:`mclip.losses.objective`).

Teacher tensors never receive a gradient. Each function returns per-row values or sums, so a
rank of a distributed step can compute exactly its share (its own rows against the gathered
columns) as :mod:`mclip.losses.objective` does for the contrastive loss.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from mclip.losses.reference import compute_dtype
from mclip.losses.tiled import _tiles, scalar_parameter

FEATURE_KINDS = ("mse", "cosine", "smooth_l1")


def _teacher_log_probs(
    rows: slice,
    teachers: Sequence[torch.Tensor],
    scales: Sequence[float],
    log_weights: Sequence[float],
    dtype: torch.dtype,
) -> torch.Tensor:
    """log p_T [c, M] of a tile: the log of the weighted mean of the teachers' row softmaxes."""
    parts = []
    for k, scale in enumerate(scales):
        a, b = teachers[2 * k], teachers[2 * k + 1]
        u = (a[rows].to(dtype) * scale) @ b.to(dtype).T
        parts.append(torch.log_softmax(u, dim=1) + log_weights[k])
    return parts[0] if len(parts) == 1 else torch.logsumexp(torch.stack(parts), dim=0)


class TiledSoftmaxKD(torch.autograd.Function):
    """Per-row KL(p_T || p_S) [N] of the row softmaxes, ``chunk`` rows at a time.

    forward(x [N, d], y [M, d], logit_scale [] or [1], chunk, scales (t_k floats),
    log_weights (log w_k floats), a_1 [N, d_1], b_1 [M, d_1], a_2, b_2, ...). Gradients go to
    x, y and logit_scale only; backward recomputes each tile (memory O(chunk * M * K)).
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        y: torch.Tensor,
        logit_scale: torch.Tensor,
        chunk: int,
        scales: tuple[float, ...],
        log_weights: tuple[float, ...],
        *teachers: torch.Tensor,
    ) -> torch.Tensor:
        dtype = compute_dtype(x)
        t = scalar_parameter(logit_scale, "logit_scale").to(dtype).exp()
        xf, yf = x.to(dtype), y.to(dtype)
        kl = torch.empty(x.shape[0], device=x.device, dtype=dtype)
        for rows in _tiles(x.shape[0], chunk):
            log_ps = torch.log_softmax((xf[rows] * t) @ yf.T, dim=1)
            log_pt = _teacher_log_probs(rows, teachers, scales, log_weights, dtype)
            kl[rows] = (log_pt.exp() * (log_pt - log_ps)).sum(1)
        ctx.save_for_backward(x, y, logit_scale, *teachers)
        ctx.chunk, ctx.scales, ctx.log_weights = chunk, scales, log_weights
        return kl

    @staticmethod
    def backward(ctx: Any, grad_kl: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, y, logit_scale, *teachers = ctx.saved_tensors
        dtype = compute_dtype(x)
        t = logit_scale.reshape(()).to(dtype).exp()
        xf, yf, grad_kl = x.to(dtype), y.to(dtype), grad_kl.to(dtype)
        grad_x, grad_y = torch.empty_like(xf), torch.zeros_like(yf)
        grad_scale = torch.zeros((), device=x.device, dtype=dtype)
        for rows in _tiles(x.shape[0], ctx.chunk):
            logits = (xf[rows] * t) @ yf.T
            log_pt = _teacher_log_probs(rows, teachers, ctx.scales, ctx.log_weights, dtype)
            g = (torch.softmax(logits, dim=1) - log_pt.exp()).mul_(grad_kl[rows, None])
            grad_scale += torch.dot(g.view(-1), logits.view(-1))
            grad_x[rows] = (g @ yf) * t
            grad_y += (g.T @ xf[rows]) * t
        return (
            grad_x.to(x.dtype),
            grad_y.to(y.dtype),
            grad_scale.to(logit_scale.dtype).reshape(logit_scale.shape),
            None,
            None,
            None,
            *([None] * len(teachers)),
        )


def _teacher_bernoulli(
    rows: slice,
    teachers: Sequence[torch.Tensor],
    scales: Sequence[float],
    biases: Sequence[float],
    weights: Sequence[float],
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p_T, log (1 - p_T)) [c, M] of a tile: p_T the weighted mean of the teachers'
    sigmoids."""
    pos, neg = [], []
    for k, scale in enumerate(scales):
        u = ((teachers[2 * k][rows].to(dtype) * scale) @ teachers[2 * k + 1].to(dtype).T).add_(
            biases[k]
        )
        log_w = torch.log(torch.tensor(weights[k], dtype=dtype))
        pos.append(F.logsigmoid(u) + log_w)
        neg.append(F.logsigmoid(-u) + log_w)
    if len(pos) == 1:
        return pos[0], neg[0]
    return torch.logsumexp(torch.stack(pos), 0), torch.logsumexp(torch.stack(neg), 0)


class TiledSigmoidKD(torch.autograd.Function):
    """sum_ij KL(Bernoulli(p_T_ij) || Bernoulli(sigmoid(s_ij))), ``chunk`` rows at a time.

    forward(x [N, d], y [M, d], logit_scale, logit_bias, chunk, scales, biases, weights,
    a_1, b_1, ...) -> a 0-d tensor. Gradients go to x, y, logit_scale and logit_bias.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        y: torch.Tensor,
        logit_scale: torch.Tensor,
        logit_bias: torch.Tensor,
        chunk: int,
        scales: tuple[float, ...],
        biases: tuple[float, ...],
        weights: tuple[float, ...],
        *teachers: torch.Tensor,
    ) -> torch.Tensor:
        dtype = compute_dtype(x)
        t = scalar_parameter(logit_scale, "logit_scale").to(dtype).exp()
        bias = scalar_parameter(logit_bias, "logit_bias").to(dtype)
        xf, yf = x.to(dtype), y.to(dtype)
        total = torch.zeros((), device=x.device, dtype=dtype)
        for rows in _tiles(x.shape[0], chunk):
            s = ((xf[rows] * t) @ yf.T).add_(bias)
            log_p, log_q = _teacher_bernoulli(rows, teachers, scales, biases, weights, dtype)
            p = log_p.exp()
            total += (p * (log_p - F.logsigmoid(s)) + (1 - p) * (log_q - F.logsigmoid(-s))).sum()
        ctx.save_for_backward(x, y, logit_scale, logit_bias, *teachers)
        ctx.chunk, ctx.scales, ctx.biases, ctx.weights = chunk, scales, biases, weights
        return total

    @staticmethod
    def backward(ctx: Any, grad_total: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, y, logit_scale, logit_bias, *teachers = ctx.saved_tensors
        dtype = compute_dtype(x)
        t = logit_scale.reshape(()).to(dtype).exp()
        bias = logit_bias.reshape(()).to(dtype)
        xf, yf = x.to(dtype), y.to(dtype)
        grad_x, grad_y = torch.empty_like(xf), torch.zeros_like(yf)
        grad_scale = torch.zeros((), device=x.device, dtype=dtype)
        grad_bias = torch.zeros((), device=x.device, dtype=dtype)
        for rows in _tiles(x.shape[0], ctx.chunk):
            s = ((xf[rows] * t) @ yf.T).add_(bias)
            log_p, _ = _teacher_bernoulli(
                rows, teachers, ctx.scales, ctx.biases, ctx.weights, dtype
            )
            g = (torch.sigmoid(s) - log_p.exp()).mul_(grad_total.to(dtype))
            g_sum = g.sum()
            grad_bias += g_sum
            grad_scale += torch.dot(g.view(-1), s.view(-1)) - bias * g_sum
            grad_x[rows] = (g @ yf) * t
            grad_y += (g.T @ xf[rows]) * t
        return (
            grad_x.to(x.dtype),
            grad_y.to(y.dtype),
            grad_scale.to(logit_scale.dtype).reshape(logit_scale.shape),
            grad_bias.to(logit_bias.dtype).reshape(logit_bias.shape),
            None,
            None,
            None,
            None,
            *([None] * len(teachers)),
        )


def _flat_teachers(teachers: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
    return [tensor.detach() for pair in teachers for tensor in pair]


def _normalised_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    weights = [1.0] * n if weights is None else [float(w) for w in weights]
    if len(weights) != n or min(weights) <= 0:
        raise ValueError(f"teacher weights {weights}: give one positive weight per teacher ({n})")
    return [w / sum(weights) for w in weights]


def softmax_kd_rows(
    x: torch.Tensor,
    y: torch.Tensor,
    logit_scale: torch.Tensor,
    teachers: Sequence[tuple[torch.Tensor, torch.Tensor]],
    teacher_scales: Sequence[float],
    weights: Sequence[float] | None = None,
    chunk: int = 1024,
) -> torch.Tensor:
    """KL(p_T(i, .) || p_S(i, .)) for each row i of x [N, d] against all of y [M, d]: [N].

    ``teachers``: one (rows [N, d_k], cols [M, d_k]) pair of normalised embeddings per teacher,
    ``teacher_scales`` their temperature inverses t_k (plain numbers), ``weights`` their ensemble
    weights (None: equal). The column direction is ``softmax_kd_rows(y, x, ...)`` with every
    teacher pair swapped.
    """
    weights = _normalised_weights(weights, len(teachers))
    log_weights = tuple(float(torch.log(torch.tensor(w, dtype=torch.float64))) for w in weights)
    kl: torch.Tensor = TiledSoftmaxKD.apply(
        x,
        y,
        logit_scale,
        chunk,
        tuple(float(t) for t in teacher_scales),
        log_weights,
        *_flat_teachers(teachers),
    )
    return kl


def similarity_kd(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    logit_scale: torch.Tensor,
    teachers: Sequence[tuple[torch.Tensor, torch.Tensor]],
    teacher_scales: Sequence[float],
    weights: Sequence[float] | None = None,
    chunk: int = 1024,
) -> torch.Tensor:
    """Softmax similarity KD of one process's whole batch, both directions: 0-d tensor.

    (mean_i KL_row_i + mean_j KL_col_j) / 2, with image_emb [N, d], text_emb [M, d] the
    student's and ``teachers`` a list of (image [N, d_k], text [M, d_k]) embedding pairs. Zero
    when the student's logits equal the (single) teacher's.
    """
    rows = softmax_kd_rows(
        image_emb, text_emb, logit_scale, teachers, teacher_scales, weights, chunk
    )
    cols = softmax_kd_rows(
        text_emb,
        image_emb,
        logit_scale,
        [(b, a) for a, b in teachers],
        teacher_scales,
        weights,
        chunk,
    )
    return (rows.mean() + cols.mean()) / 2


def sigmoid_kd_sum(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    teachers: Sequence[tuple[torch.Tensor, torch.Tensor]],
    teacher_scales: Sequence[float],
    teacher_biases: Sequence[float],
    weights: Sequence[float] | None = None,
    chunk: int = 1024,
) -> torch.Tensor:
    """sum_ij KL(p_T_ij || sigmoid(s_ij)) over every (image, text) pair: 0-d tensor.

    p_T is the weighted mean of the teachers' sigmoids sigmoid(t_k <a_i, b_j> + b_k). Divide by
    the number of images for the loss (as the sigmoid contrastive loss is normalised).
    """
    weights = _normalised_weights(weights, len(teachers))
    total: torch.Tensor = TiledSigmoidKD.apply(
        image_emb,
        text_emb,
        logit_scale,
        logit_bias,
        chunk,
        tuple(float(t) for t in teacher_scales),
        tuple(float(b) for b in teacher_biases),
        tuple(weights),
        *_flat_teachers(teachers),
    )
    return total


def feature_distance(student: torch.Tensor, teacher: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-sample distance [N] between student [N, d] and teacher [N, d] features.

    ``mse``: sum over dimensions of the squared difference; ``cosine``: 1 - cosine similarity;
    ``smooth_l1``: sum over dimensions of the smooth-L1 (Huber, beta 1) difference. All are 0
    when the features are equal; the teacher gets no gradient.
    """
    teacher = teacher.detach().to(student.dtype)
    if kind == "mse":
        return (student - teacher).pow(2).sum(-1)
    if kind == "cosine":
        return 1 - F.cosine_similarity(student, teacher, dim=-1)
    if kind == "smooth_l1":
        return F.smooth_l1_loss(student, teacher, reduction="none").sum(-1)
    raise ValueError(f"feature distance {kind!r}; valid choices: {', '.join(FEATURE_KINDS)}")
