"""BatchNorm running statistics updated once per step, from the whole global batch.

A BatchNorm layer in training mode normalises with the statistics of the batch it sees and
moves its running mean / variance towards them. A step made of several forward passes (the
gradient cache's micro-batches) or spread over several ranks would update the running
statistics once per micro-batch, and differently on every rank. mclip instead:

1. runs every training forward with the running statistics frozen (momentum 0);
2. records, during the one recording pass of the step, each layer's per-channel sum, sum of
   squares and count over every micro-batch (one fp32 mean / variance pass per micro-batch,
   pooled as float64 sums);
3. adds those over ranks (one all-reduce) and applies a single update with the pooled
   statistics: ``running = (1 - m) running + m stat`` with the unbiased variance, the update
   one BatchNorm forward over all those inputs at once would make.

So the running statistics (what the model uses at evaluation) move once per step, from every
sample of the global batch, and every rank holds the same buffers. The normalisation inside a
training forward still uses the statistics of the micro-batch (or the rank's share) being
encoded, as with DDP without SyncBatchNorm; layers after the first therefore see inputs that
differ from a single full-batch forward. A BatchNorm tower's step equals the single-process
full-batch step exactly when the step is one micro-batch on one rank, or when BatchNorm runs
in eval mode (``train.freeze_batchnorm``), on any number of micro-batches and ranks.
"""

from __future__ import annotations

import contextlib
from typing import cast

import torch
import torch.distributed as dist
from torch import nn

_BatchNorm = nn.modules.batchnorm._BatchNorm


def batchnorm_layers(model: nn.Module) -> list[_BatchNorm]:
    """BatchNorm layers of ``model`` that keep running statistics."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


@contextlib.contextmanager
def batchnorm_stats_frozen(model: nn.Module):
    """Inside: BatchNorm layers normalise as usual but leave their running statistics and
    ``num_batches_tracked`` unchanged."""
    layers = batchnorm_layers(model)  # tracking running statistics: the buffers are tensors
    saved = [(m.momentum, cast(torch.Tensor, m.num_batches_tracked).clone()) for m in layers]
    for m in layers:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(layers, saved):
            m.momentum = momentum
            cast(torch.Tensor, m.num_batches_tracked).copy_(tracked)


def set_batchnorm_eval(model: nn.Module) -> int:
    """Put every BatchNorm layer in eval mode (normalise with the running statistics, never
    update them); returns how many layers. This makes any step exactly the full-batch step."""
    layers = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    for m in layers:
        m.eval()
    return len(layers)


class BatchNormStepStatistics:
    """Collects the inputs' statistics of every BatchNorm layer during one recording pass and
    applies one running-statistics update per step (see the module docstring).

    Use: ``with stats.recording(): forward passes``, then ``stats.apply(world_size)`` once per
    step on every rank. Layers in eval mode are neither recorded nor updated.
    """

    def __init__(self, model: nn.Module):
        self.layers = batchnorm_layers(model)
        self._active = False
        self._sums: dict[int, list[torch.Tensor]] = {}
        self._handles = [m.register_forward_pre_hook(self._record) for m in self.layers]

    def __bool__(self) -> bool:
        return bool(self.layers)

    @contextlib.contextmanager
    def recording(self):
        """Inside: forward passes add their BatchNorm inputs' statistics to this step's."""
        self._active = True
        try:
            yield
        finally:
            self._active = False

    def _record(self, module: nn.Module, inputs: tuple) -> None:
        if not (self._active and module.training):
            return
        x = inputs[0].detach()
        dims = [0] + list(range(2, x.dim()))
        n = x.numel() // x.shape[1]
        count = torch.tensor([n], dtype=torch.float64, device=x.device)
        # one fp32 pass (as BatchNorm's own statistics), pooled in fp64 as sums
        var, mean = torch.var_mean(x.float(), dims, correction=0)
        mean = mean.double()
        total = mean * n
        squares = (var.double() + mean.square()) * n
        key = id(module)
        if key in self._sums:
            for acc, new in zip(self._sums[key], (count, total, squares)):
                acc += new
        else:
            self._sums[key] = [count, total, squares]

    @torch.no_grad()
    def apply(self, world_size: int = 1) -> None:
        """Update every recorded layer once with the global batch's statistics; a collective
        when ``world_size`` > 1 (every rank must call it, in the same step)."""
        layers = [m for m in self.layers if id(m) in self._sums]
        if not layers:
            return
        parts = [t for m in layers for t in self._sums[id(m)]]
        if world_size > 1:
            flat = torch.cat(parts)
            dist.all_reduce(flat)
            parts = list(torch.split(flat, [t.numel() for t in parts]))
        for i, m in enumerate(layers):
            count, total, squares = parts[3 * i : 3 * i + 3]
            mean = total / count
            var = (squares / count - mean.square()).clamp_min(0) * (
                count / (count - 1).clamp_min(1)
            )
            # self.layers are batchnorm_layers (tracking running statistics): tensors, not None
            assert m.running_mean is not None and m.running_var is not None
            assert m.num_batches_tracked is not None
            m.num_batches_tracked += 1
            factor = 1.0 / float(m.num_batches_tracked) if m.momentum is None else m.momentum
            m.running_mean.mul_(1 - factor).add_(mean.to(m.running_mean.dtype), alpha=factor)
            m.running_var.mul_(1 - factor).add_(var.to(m.running_var.dtype), alpha=factor)
        self._sums.clear()

    def remove(self) -> None:
        """Detach the hooks from the model."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
