"""Exact contrastive losses computed tile by tile, with O(chunk * M) memory for the logits.

Both losses only need per-row / per-column reductions of the logit matrix s_ij = t <x_i, y_j>
(+ b), so the matrix is never held whole: forward visits ``chunk`` x M tiles, and backward
recomputes each tile to form its gradient (the idea of Inf-CL, Cheng et al. 2024,
arXiv:2410.17243, and of memory-efficient attention). The gradient is the full-batch gradient.

- :class:`TiledLogSumExp` returns the row and column log-sum-exps of the logits; InfoNCE is
  assembled from them and the positive logits with ordinary autograd ops.
- :class:`TiledSoftplusSum` returns sum_ij softplus(s_ij); the sigmoid loss is that sum minus
  the positive logits (because -log sigmoid(-s) = softplus(s) and log sigmoid(s) - log sigmoid(-s) = s).

Embeddings may be bf16 / fp16; tiles and reductions are then fp32 (fp64 inputs stay fp64).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mclip.losses.reference import compute_dtype, positive_index


def scalar_parameter(value: torch.Tensor, name: str) -> torch.Tensor:
    """A one-number tensor (shape [], [1], [1, 1], ...) as a 0-d view; anything else is an error.

    Gradients for it are reshaped back to ``value.shape`` by the autograd functions below.
    """
    if value.numel() != 1:
        raise ValueError(f"{name} must hold one number (shape [] or [1]), got shape "
                         f"{list(value.shape)}; pass the model's scalar parameter")
    return value.reshape(())


def _tiles(n: int, chunk: int):
    for start in range(0, n, chunk):
        yield slice(start, min(start + chunk, n))


class TiledLogSumExp(torch.autograd.Function):
    """(x [N, d], y [M, d], logit_scale [] or [1]) -> (row_lse [N], col_lse [M]) of
    s = exp(logit_scale) x y^T.

    Backward: ds_ij = g_row_i softmax_row_ij + g_col_j softmax_col_ij, recomputed per tile.
    With ``need_cols=False`` only rows are computed (col_lse is returned as zeros).
    """

    @staticmethod
    def forward(ctx, x, y, logit_scale, chunk: int, need_cols: bool = True):
        dtype = compute_dtype(x)
        scale = scalar_parameter(logit_scale, "logit_scale").to(dtype).exp()
        xf, yf = x.to(dtype), y.to(dtype)
        row_lse = torch.empty(x.shape[0], device=x.device, dtype=dtype)
        col_max = torch.full((y.shape[0],), -torch.inf, device=x.device, dtype=dtype)
        col_sum = torch.zeros(y.shape[0], device=x.device, dtype=dtype)
        for rows in _tiles(x.shape[0], chunk):
            logits = (xf[rows] * scale) @ yf.T
            row_lse[rows] = torch.logsumexp(logits, dim=1)
            if need_cols:  # online log-sum-exp down the columns: running max and rescaled sum
                new_max = torch.maximum(col_max, logits.amax(dim=0))
                col_sum = col_sum * torch.exp(col_max - new_max) + torch.exp(logits - new_max).sum(0)
                col_max = new_max
        col_lse = col_max + col_sum.log() if need_cols else torch.zeros_like(col_sum)
        ctx.save_for_backward(x, y, logit_scale, row_lse, col_lse)
        ctx.chunk, ctx.need_cols = chunk, need_cols
        return row_lse, col_lse

    @staticmethod
    def backward(ctx, grad_row, grad_col):
        x, y, logit_scale, row_lse, col_lse = ctx.saved_tensors
        dtype = row_lse.dtype
        scale = logit_scale.reshape(()).to(dtype).exp()
        xf, yf = x.to(dtype), y.to(dtype)
        grad_row = torch.zeros_like(row_lse) if grad_row is None else grad_row.to(dtype)
        grad_col = torch.zeros_like(col_lse) if grad_col is None else grad_col.to(dtype)
        grad_x = torch.empty_like(xf)
        grad_y = torch.zeros_like(yf)
        grad_scale = torch.zeros((), device=x.device, dtype=dtype)
        for rows in _tiles(x.shape[0], ctx.chunk):
            logits = (xf[rows] * scale) @ yf.T
            g = torch.exp(logits - row_lse[rows, None]).mul_(grad_row[rows, None])
            if ctx.need_cols:
                g += torch.exp(logits - col_lse[None, :]).mul_(grad_col[None, :])
            grad_scale += torch.dot(g.view(-1), logits.view(-1))
            grad_x[rows] = (g @ yf) * scale
            grad_y += (g.T @ xf[rows]) * scale
        return (grad_x.to(x.dtype), grad_y.to(y.dtype),
                grad_scale.to(logit_scale.dtype).reshape(logit_scale.shape), None, None)


class TiledSoftplusSum(torch.autograd.Function):
    """(x [N, d], y [M, d], logit_scale, logit_bias) -> sum_ij softplus(t x_i.y_j + b).

    logit_scale and logit_bias each have shape [] or [1].

    The loss is a plain sum over tiles, so each tile's gradient is known as soon as the tile is
    computed: when a gradient is needed, forward accumulates it (O((N + M) d) memory) and
    backward only scales it, saving the recomputation pass.
    """

    @staticmethod
    def forward(ctx, x, y, logit_scale, logit_bias, chunk: int):
        dtype = compute_dtype(x)
        scale = scalar_parameter(logit_scale, "logit_scale").to(dtype).exp()
        bias = scalar_parameter(logit_bias, "logit_bias").to(dtype)
        xf, yf = x.to(dtype), y.to(dtype)
        total = torch.zeros((), device=x.device, dtype=dtype)
        want_grad = any(ctx.needs_input_grad[:4])
        if want_grad:
            grad_x = torch.empty_like(xf)
            grad_y = torch.zeros_like(yf)
            grad_scale = torch.zeros((), device=x.device, dtype=dtype)
            grad_bias = torch.zeros((), device=x.device, dtype=dtype)
        for rows in _tiles(x.shape[0], chunk):
            logits = ((xf[rows] * scale) @ yf.T).add_(bias)
            total += F.softplus(logits).sum()
            if want_grad:
                g = torch.sigmoid(logits)  # d softplus(s) / ds
                g_sum = g.sum()
                grad_bias += g_sum
                grad_scale += torch.dot(g.view(-1), logits.view(-1)) - bias * g_sum  # sum g (s - b)
                g.mul_(scale)
                grad_x[rows] = g @ yf
                grad_y += g.T @ xf[rows]
        if want_grad:
            ctx.save_for_backward(grad_x.to(x.dtype), grad_y.to(y.dtype),
                                  grad_scale.to(logit_scale.dtype).reshape(logit_scale.shape),
                                  grad_bias.to(logit_bias.dtype).reshape(logit_bias.shape))
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grad_x, grad_y, grad_scale, grad_bias = ctx.saved_tensors
        return (grad_x * grad_total.to(grad_x.dtype), grad_y * grad_total.to(grad_y.dtype),
                grad_scale * grad_total, grad_bias * grad_total, None)


def positive_logits(x: torch.Tensor, y: torch.Tensor, logit_scale: torch.Tensor,
                    pos: torch.Tensor) -> torch.Tensor:
    """t <x[pos[j]], y[j]> for every text j: [M], in the compute dtype (logit_scale [] or [1])."""
    dtype = compute_dtype(x)
    scale = scalar_parameter(logit_scale, "logit_scale").to(dtype).exp()
    return scale * (x[pos].to(dtype) * y.to(dtype)).sum(-1)


def tiled_infonce(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor,
                  text_to_image: torch.Tensor | None = None, chunk: int = 1024) -> torch.Tensor:
    """Symmetric InfoNCE, equal to :func:`mclip.losses.reference.infonce_reference`.

    image_emb [N, d], text_emb [M, d], logit_scale the log temperature inverse (shape [] or [1]),
    text_to_image LongTensor [M] (None: diagonal). Peak extra memory O(chunk * M + (N + M) * d).
    Returns a 0-d tensor; the gradient of logit_scale has logit_scale's shape.
    """
    pos = positive_index(text_to_image, image_emb.shape[0], text_emb.shape[0], image_emb.device)
    row_lse, col_lse = TiledLogSumExp.apply(image_emb, text_emb, logit_scale, chunk)
    positive = positive_logits(image_emb, text_emb, logit_scale, pos)
    return ((row_lse[pos] - positive) + (col_lse - positive)).mean() / 2


def tiled_sigmoid(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor,
                  logit_bias: torch.Tensor, text_to_image: torch.Tensor | None = None,
                  chunk: int = 1024) -> torch.Tensor:
    """Sigmoid loss, equal to :func:`mclip.losses.reference.sigmoid_reference`.

    -1/N [sum_ij log sigmoid(-s_ij) + sum_(i,j) in P s_ij] = 1/N [sum_ij softplus(s_ij) - sum_P s_ij].
    logit_scale and logit_bias have shape [] or [1]; returns a 0-d tensor.
    """
    pos = positive_index(text_to_image, image_emb.shape[0], text_emb.shape[0], image_emb.device)
    total = TiledSoftplusSum.apply(image_emb, text_emb, logit_scale, logit_bias, chunk)
    bias = scalar_parameter(logit_bias, "logit_bias").to(total.dtype)
    positive = positive_logits(image_emb, text_emb, logit_scale, pos) + bias
    return (total - positive.sum()) / image_emb.shape[0]
