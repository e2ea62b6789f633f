"""Exact contrastive losses computed tile by tile, with O(chunk * M) memory for the logits.

Both losses only need per-row / per-column reductions of the logit matrix s_ij = t <x_i, y_j>
(+ b), so the matrix is never held whole: forward visits ``chunk`` x M tiles, and backward
recomputes each tile to form its gradient (the idea of Inf-CL, Cheng et al. 2024,
arXiv:2410.17243, and of memory-efficient attention). The gradient is the full-batch gradient.

- :class:`TiledLogSumExp` returns the row and column log-sum-exps of the logits; InfoNCE is
  assembled from them and the positive logits with ordinary autograd ops.
- :class:`TiledSoftplusSum` returns sum_ij softplus(s_ij); the sigmoid loss is that sum minus
  the positive logits (because -log sigmoid(-s) = softplus(s) and
  log sigmoid(s) - log sigmoid(-s) = s).

Embeddings may be bf16 / fp16; tiles and reductions are then fp32 (fp64 inputs stay fp64).
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import torch
import torch.nn.functional as F

from mclip.losses.reference import compute_dtype, positive_index


def scalar_parameter(value: torch.Tensor, name: str) -> torch.Tensor:
    """A one-number tensor (shape [], [1], [1, 1], ...) as a 0-d view; anything else is an error.

    Gradients for it are reshaped back to ``value.shape`` by the autograd functions below.
    """
    if value.numel() != 1:
        raise ValueError(
            f"{name} must hold one number (shape [] or [1]), got shape "
            f"{list(value.shape)}; pass the model's scalar parameter"
        )
    return value.reshape(())


def _tiles(n: int, chunk: int) -> Iterator[slice]:
    for start in range(0, n, chunk):
        yield slice(start, min(start + chunk, n))


# a tile's column sums are taken relative to its largest row maximum c; a column whose largest
# logit in the tile is more than ~87 below c would underflow there, so a column sum under
# exp(-SHIFT_LIMIT) sends the tile to the two-pass form (SHIFT_LIMIT leaves a margin of e^27)
SHIFT_LIMIT = 60.0


class TiledLogSumExp(torch.autograd.Function):
    """(x [N, d], y [M, d], logit_scale [] or [1]) -> (row_lse [N], col_lse [M]) of
    s = exp(logit_scale) x y^T.

    Each tile's logits are exponentiated once in forward and once in backward (in place):

    - forward: E = exp(s - m_row) gives the row sums; the column sums are the matrix-vector
      product exp(m_row - c)^T E, c the tile's largest row maximum (exact while no column of the
      tile lies ~87 below c, checked; otherwise that tile's columns take a second exp pass);
    - backward: ds_ij = P_ij (g_row_i + exp(row_lse_i - col_lse_j) g_col_j) with
      P = exp(s - row_lse), the column softmax written through the row softmax (when the tile's
      log-sum-exps lie within :data:`SHIFT_LIMIT` of each other, else two exp passes); the
      logit_scale gradient is sum_ij ds_ij s_ij = sum_i <grad_x_i, x_i>, which needs no pass over
      the tile.

    With ``need_cols=False`` only rows are computed (col_lse is returned as zeros).
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        y: torch.Tensor,
        logit_scale: torch.Tensor,
        chunk: int,
        need_cols: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = compute_dtype(x)
        scale = scalar_parameter(logit_scale, "logit_scale").to(dtype).exp()
        xf, yf = x.to(dtype), y.to(dtype)
        row_lse = torch.empty(x.shape[0], device=x.device, dtype=dtype)
        col_lse = torch.full((y.shape[0],), -torch.inf, device=x.device, dtype=dtype)
        floor = torch.tensor(-SHIFT_LIMIT, dtype=dtype).exp()
        buffer = _tile_buffer(x.shape[0], chunk, y.shape[0], xf)
        scaled = xf * scale
        for rows in _tiles(x.shape[0], chunk):
            logits = torch.mm(scaled[rows], yf.T, out=buffer[: rows.stop - rows.start])
            row_max = logits.amax(dim=1)
            top = row_max.max()
            exps = logits.sub_(row_max[:, None]).exp_()  # the logits are not needed again
            row_lse[rows] = row_max + exps.sum(dim=1).log()
            if not need_cols:
                continue
            col_sum = (row_max - top).exp() @ exps
            if bool((col_sum < floor).any()):  # rare: recompute this tile's columns in two passes
                logits = scaled[rows] @ yf.T
                col_max = logits.amax(dim=0)
                tile_lse = col_max + (logits - col_max).exp_().sum(0).log()
            else:
                tile_lse = top + col_sum.log()
            col_lse = torch.logaddexp(col_lse, tile_lse)
        if not need_cols:
            col_lse = torch.zeros_like(col_lse)
        ctx.save_for_backward(x, y, logit_scale, row_lse, col_lse)
        ctx.chunk, ctx.need_cols = chunk, need_cols
        return row_lse, col_lse

    @staticmethod
    def backward(
        ctx: Any, grad_row: torch.Tensor | None, grad_col: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, None, None]:
        x, y, logit_scale, row_lse, col_lse = ctx.saved_tensors
        dtype = row_lse.dtype
        scale = logit_scale.reshape(()).to(dtype).exp()
        xf, yf = x.to(dtype), y.to(dtype)
        grad_row = torch.zeros_like(row_lse) if grad_row is None else grad_row.to(dtype)
        grad_col = torch.zeros_like(col_lse) if grad_col is None else grad_col.to(dtype)
        use_cols = ctx.need_cols and bool(grad_col.any())
        grad_x = torch.empty_like(xf, memory_format=torch.contiguous_format)
        grad_y = torch.zeros_like(yf)
        buffer = _tile_buffer(x.shape[0], ctx.chunk, y.shape[0], xf)
        weighted = _tile_buffer(x.shape[0], ctx.chunk, y.shape[0], xf) if use_cols else buffer
        scaled, alpha = xf * scale, float(scale)
        for rows in _tiles(x.shape[0], ctx.chunk):
            n = rows.stop - rows.start
            logits = torch.mm(scaled[rows], yf.T, out=buffer[:n])
            lse = row_lse[rows]
            row_weight = None
            if use_cols and _one_exp_fits(lse, col_lse, grad_row[rows]):
                # ds = P (g_row + a b^T), a_i = exp(lse_i - top), b_j = exp(top - col_lse_j)
                # g_col_j; computed as a_i * [P (g_row / a + b^T)], a_i applied to the products
                top = lse.max()
                row_weight = (lse - top).exp()
                col_weight = (top - col_lse).exp() * grad_col
                probs = logits.sub_(lse[:, None]).exp_()
                g = torch.mul(probs, col_weight, out=weighted[:n]).addcmul_(
                    probs, (grad_row[rows] / row_weight)[:, None]
                )
            elif use_cols:
                g = torch.sub(logits, col_lse, out=weighted[:n]).exp_().mul_(grad_col)
                g += logits.sub_(lse[:, None]).exp_().mul_(grad_row[rows, None])
            else:
                g = logits.sub_(lse[:, None]).exp_().mul_(grad_row[rows, None])
            x_rows = xf[rows] if row_weight is None else xf[rows] * row_weight[:, None]
            grad_x[rows] = torch.mm(g, yf).mul_(
                scale if row_weight is None else scale * row_weight[:, None]
            )
            grad_y.addmm_(g.T, x_rows, alpha=alpha)
        grad_scale = torch.dot(grad_x.reshape(-1), xf.reshape(-1))
        return (
            grad_x.to(x.dtype),
            grad_y.to(y.dtype),
            grad_scale.to(logit_scale.dtype).reshape(logit_scale.shape),
            None,
            None,
        )


def _one_exp_fits(lse: torch.Tensor, col_lse: torch.Tensor, grad_row: torch.Tensor) -> bool:
    """Whether a tile's backward may write the column softmax through the row softmax: its row
    log-sum-exps within SHIFT_LIMIT of each other and of every column's, and g_row / a_i (up to
    |g_row| e^SHIFT_LIMIT) far from overflowing."""
    top = float(lse.max())
    spread = top - float(lse.min())
    return (
        spread < SHIFT_LIMIT
        and top - float(col_lse.min()) < SHIFT_LIMIT
        and float(grad_row.abs().max()) * math.exp(spread) < 1e30
    )


def _tile_buffer(n: int, chunk: int, m: int, like: torch.Tensor) -> torch.Tensor:
    """One [min(chunk, n), m] tile reused by every tile: a fresh large allocation per tile is
    mapped and faulted in page by page each time, which costs as much as an exp pass."""
    return torch.empty(min(chunk, n), m, device=like.device, dtype=like.dtype)


class TiledSoftplusSum(torch.autograd.Function):
    """(x [N, d], y [M, d], logit_scale, logit_bias) -> sum_ij softplus(t x_i.y_j + b).

    logit_scale and logit_bias each have shape [] or [1].

    The loss is a plain sum over tiles, so each tile's gradient is known as soon as the tile is
    computed: when a gradient is needed, forward accumulates it (O((N + M) d) memory) and
    backward only scales it, saving the recomputation pass.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        y: torch.Tensor,
        logit_scale: torch.Tensor,
        logit_bias: torch.Tensor,
        chunk: int,
    ) -> torch.Tensor:
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
        buffer = _tile_buffer(x.shape[0], chunk, y.shape[0], xf)
        slopes = _tile_buffer(x.shape[0], chunk, y.shape[0], xf) if want_grad else buffer
        scaled, alpha = xf * scale, float(scale)
        for rows in _tiles(x.shape[0], chunk):
            n = rows.stop - rows.start
            logits = torch.mm(scaled[rows], yf.T, out=buffer[:n]).add_(bias)
            total += F.softplus(logits).sum()
            if want_grad:
                g = torch.sigmoid(logits, out=slopes[:n])  # d softplus(s) / ds
                g_sum = g.sum()
                grad_bias += g_sum
                grad_scale += torch.dot(g.view(-1), logits.view(-1)) - bias * g_sum  # sum g (s - b)
                torch.mm(g, yf, out=grad_x[rows]).mul_(scale)
                grad_y.addmm_(g.T, xf[rows], alpha=alpha)
        if want_grad:
            ctx.save_for_backward(
                grad_x.to(x.dtype),
                grad_y.to(y.dtype),
                grad_scale.to(logit_scale.dtype).reshape(logit_scale.shape),
                grad_bias.to(logit_bias.dtype).reshape(logit_bias.shape),
            )
        return total

    @staticmethod
    def backward(
        ctx: Any, grad_total: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, None]:
        grad_x, grad_y, grad_scale, grad_bias = ctx.saved_tensors
        return (
            grad_x * grad_total.to(grad_x.dtype),
            grad_y * grad_total.to(grad_y.dtype),
            grad_scale * grad_total,
            grad_bias * grad_total,
            None,
        )


def positive_logits(
    x: torch.Tensor, y: torch.Tensor, logit_scale: torch.Tensor, pos: torch.Tensor
) -> torch.Tensor:
    """t <x[pos[j]], y[j]> for every text j: [M], in the compute dtype (logit_scale [] or [1])."""
    dtype = compute_dtype(x)
    scale = scalar_parameter(logit_scale, "logit_scale").to(dtype).exp()
    return scale * (rows_at(x, pos).to(dtype) * y.to(dtype)).sum(-1)


def rows_at(values: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """``values[pos]``; ``values`` itself when ``pos`` is 0..N-1 (the diagonal: no gather, and no
    scatter of its gradient)."""
    if pos.shape[0] == values.shape[0] and torch.equal(
        pos, torch.arange(pos.shape[0], device=pos.device)
    ):
        return values
    return values[pos]


def tiled_infonce(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    logit_scale: torch.Tensor,
    text_to_image: torch.Tensor | None = None,
    chunk: int = 1024,
) -> torch.Tensor:
    """Symmetric InfoNCE, equal to :func:`mclip.losses.reference.infonce_reference`.

    image_emb [N, d], text_emb [M, d], logit_scale the log temperature inverse (shape [] or [1]),
    text_to_image LongTensor [M] (None: diagonal). Peak extra memory O(chunk * M + (N + M) * d).
    Returns a 0-d tensor; the gradient of logit_scale has logit_scale's shape.
    """
    pos = positive_index(text_to_image, image_emb.shape[0], text_emb.shape[0], image_emb.device)
    row_lse: torch.Tensor
    col_lse: torch.Tensor
    row_lse, col_lse = TiledLogSumExp.apply(image_emb, text_emb, logit_scale, chunk)
    positive = positive_logits(image_emb, text_emb, logit_scale, pos)
    return ((rows_at(row_lse, pos) - positive) + (col_lse - positive)).mean() / 2


def tiled_sigmoid(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    text_to_image: torch.Tensor | None = None,
    chunk: int = 1024,
) -> torch.Tensor:
    """Sigmoid loss, equal to :func:`mclip.losses.reference.sigmoid_reference`.

    -1/N [sum_ij log sigmoid(-s_ij) + sum_(i,j) in P s_ij] =
    1/N [sum_ij softplus(s_ij) - sum_P s_ij].
    logit_scale and logit_bias have shape [] or [1]; returns a 0-d tensor.
    """
    pos = positive_index(text_to_image, image_emb.shape[0], text_emb.shape[0], image_emb.device)
    total: torch.Tensor = TiledSoftplusSum.apply(
        image_emb, text_emb, logit_scale, logit_bias, chunk
    )
    bias = scalar_parameter(logit_bias, "logit_bias").to(total.dtype)
    positive = positive_logits(image_emb, text_emb, logit_scale, pos) + bias
    return (total - positive.sum()) / image_emb.shape[0]
