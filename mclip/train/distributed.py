"""torch.distributed set-up for training: process group, device, gather groups, gradient averaging.

mclip averages gradients itself (one all-reduce over a flat buffer after the whole step) instead
of wrapping the model in DistributedDataParallel: a gradient-cache step runs several forward /
backward passes and the loss uses the logit scale outside the towers' forward, which DDP's
reducer does not expect. The arithmetic is DDP's: the mean of every rank's gradient
(tests/test_distributed.py checks both against the single-process full batch). Frozen
parameters (``requires_grad=False``) are never communicated, and a parameter without a gradient
on some rank counts as zero (none on every rank: it stays without one), so frozen or unused
parameters cannot hang a rank.
"""

from __future__ import annotations

from collections import Counter

import datetime
import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from mclip.config import Config, ConfigError
from mclip.losses.gather import GatherGroups, make_gather_groups


@dataclass
class DistContext:
    """This process's place in the run (rank 0 of 1 without torch.distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    groups: GatherGroups | None = None
    owns_process_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_distributed() -> bool:
    """True under torchrun / SLURM-style launchers that set WORLD_SIZE > 1."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(cfg: Config, device: torch.device) -> DistContext:
    """Join the process group when launched by torchrun; returns this process's context."""
    if not launched_distributed():
        return DistContext()
    backend = cfg.dist.backend
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise ConfigError(
            "config key 'dist.backend' is 'nccl' but training runs on CPU; use "
            "dist.backend=gloo (or auto)"
        )
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(
            backend, timeout=datetime.timedelta(minutes=cfg.dist.timeout_minutes)
        )
    world, rank = dist.get_world_size(), dist.get_rank()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    group_size = cfg.dist.group_size or int(os.environ.get("LOCAL_WORLD_SIZE", world))
    if world % group_size:
        raise ConfigError(
            f"config key 'dist.group_size' ({group_size}) must divide the number of ranks ({world})"
        )
    if cfg.train.batch_size % world:
        raise ConfigError(
            f"config key 'train.batch_size' ({cfg.train.batch_size}) is the global "
            f"batch and must be divisible by the number of ranks ({world})"
        )
    return DistContext(rank, world, local_rank, make_gather_groups(group_size), owns)


def shutdown_distributed(ctx: DistContext) -> None:
    """Leave the process group this run created, once every rank is done.

    Exiting with a live gloo group aborts a rank at interpreter shutdown ("terminate called
    without an active exception"), which torchrun reports as a failed run.
    """
    if ctx.owns_process_group and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def distributed_device(name: str, local_rank: int) -> str:
    """With several ranks per node, 'auto' / 'cuda' pick this rank's GPU (LOCAL_RANK)."""
    if launched_distributed() and torch.cuda.is_available() and name in ("auto", "cuda"):
        return f"cuda:{local_rank}"
    return name


def broadcast_parameters(model: torch.nn.Module) -> None:
    """Make every rank start from rank 0's weights and buffers."""
    for tensor in model.state_dict().values():
        dist.broadcast(tensor, src=0)


def average_gradients(model: torch.nn.Module, world_size: int) -> None:
    """Replace each trainable parameter's gradient by its mean over ranks (as DDP does).

    A parameter that has no gradient on any rank (an unused pooler, say) keeps ``grad=None``,
    so the optimizer leaves it alone exactly as in a single process; one that has a gradient
    on some ranks only counts as zero on the others. One all-reduce carries both.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return
    present = torch.tensor(
        [p.grad is not None for p in params], dtype=torch.float32, device=params[0].device
    )
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([present] + [g.reshape(-1).float() for g in grads])
    dist.all_reduce(flat)
    present, values = flat[: len(params)], flat[len(params) :] / world_size
    offset = 0
    for p, used in zip(params, present.tolist()):
        n = p.numel()
        # empty_like keeps the parameter's memory layout (channels_last conv weights): the
        # fused AdamW kernel walks parameter, gradient and state as flat memory
        p.grad = (
            torch.empty_like(p).copy_(values[offset : offset + n].view(p.shape))
            if used > 0
            else None
        )
        offset += n


def rank_digests(model: torch.nn.Module, ctx: DistContext) -> list[str]:
    """A hash of every parameter and buffer, one per rank (a collective under torch.distributed).

    Equal digests mean the ranks hold bit-identical models.
    """
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(
            tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes()
        )
    mine = digest.hexdigest()[:16]
    if ctx.world_size == 1:
        return [mine]
    gathered: list = [None] * ctx.world_size
    dist.all_gather_object(gathered, mine)
    return gathered


def _every_rank(mapping: dict, ctx: DistContext) -> list[dict]:
    """Every rank's copy of ``mapping``, in rank order (a collective; no-op on one process)."""
    if ctx.world_size == 1:
        return [dict(mapping)]
    gathered: list = [None] * ctx.world_size
    dist.all_gather_object(gathered, dict(mapping))
    return gathered


def sum_counts(counts: dict, ctx: DistContext) -> dict:
    """Add a {reason: count} dict over ranks (identity on one process)."""
    total: dict = {}
    for part in _every_rank(counts, ctx):
        for key, value in part.items():
            total[key] = total.get(key, 0) + value
    return total


def merge_over_ranks(mapping: dict, ctx: DistContext) -> dict:
    """The union of every rank's dict (keys are disjoint across ranks; identity on one process)."""
    return {key: value for part in _every_rank(mapping, ctx) for key, value in part.items()}


def any_rank(flag: bool, ctx: DistContext, device: torch.device) -> bool:
    """True on every rank if ``flag`` is true on any rank (identity on one process); ``device``
    is where the backend reduces (the rank's GPU under NCCL)."""
    if ctx.world_size == 1:
        return bool(flag)
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def drain_counts(counts: Counter, ctx: DistContext) -> dict:
    """``counts`` summed over ranks (a collective), most frequent first; ``counts`` is cleared."""
    total = sum_counts(counts, ctx)
    counts.clear()
    return dict(sorted(total.items(), key=lambda kv: -kv[1]))
