"""Grouped all-gather of embeddings across ranks, with an exact backward.

Ranks are split into groups of ``group_size`` consecutive ranks (one node's GPUs, typically).
The gather runs inside each group first, then across groups among ranks with the same local
index, so the large transfer crosses the slow inter-node links once per group block.

Backward: rank r's local embeddings were used by every rank's loss. Each rank back-propagates
the gradient of its own loss share with respect to the whole gathered tensor; summing those over
all ranks (inter-group all-reduce, then intra-group all-reduce) and keeping rank r's slice gives
rank r exactly d(sum of all shares)/d(local embeddings). With each rank's share scaled by the
world size, DDP-style gradient averaging then yields the single-process full-batch gradient.

``group_local`` gathers inside the group only (the M2-Encoder trade, arXiv:2401.15896): fewer
negatives and far less communication, and the loss is no longer the full-batch loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.distributed as dist

MODES = ("exact", "group_local")


@dataclass
class GatherGroups:
    """Process groups for the grouped gather; build with :func:`make_gather_groups`."""

    world_size: int
    rank: int
    group_size: int
    intra: dist.ProcessGroup | None  # ranks of my group
    inter: dist.ProcessGroup | None  # ranks with my local index, one per group (None: one group)

    @property
    def group_index(self) -> int:
        """Which group this rank belongs to."""
        return self.rank // self.group_size

    @property
    def local_index(self) -> int:
        """This rank's position inside its group."""
        return self.rank % self.group_size

    @property
    def n_groups(self) -> int:
        """Number of gather groups."""
        return self.world_size // self.group_size


def make_gather_groups(group_size: int) -> GatherGroups:
    """Create the intra- and inter-group process groups. Collective: call on every rank.

    ``group_size`` must divide the world size; 0 means one group of all ranks.
    """
    world, rank = dist.get_world_size(), dist.get_rank()
    group_size = group_size or world
    if world % group_size:
        raise ValueError(
            f"dist.group_size={group_size} does not divide the world size {world}; "
            f"use a divisor such as the number of GPUs per node"
        )
    intra = inter = None
    for g in range(world // group_size):  # every rank must create every group, in order
        ranks = list(range(g * group_size, (g + 1) * group_size))
        group = dist.new_group(ranks) if group_size < world else dist.group.WORLD
        if rank in ranks:  # a member gets the group itself (others get a non-member marker)
            intra = cast(dist.ProcessGroup, group)
    if group_size < world:
        for local in range(group_size):
            ranks = list(range(local, world, group_size))
            group = dist.new_group(ranks) if len(ranks) > 1 else None
            if rank in ranks:
                inter = cast("dist.ProcessGroup | None", group)
    return GatherGroups(world, rank, group_size, intra, inter)


def _all_gather(tensor: torch.Tensor, group: dist.ProcessGroup | None, size: int) -> torch.Tensor:
    parts = [torch.empty_like(tensor) for _ in range(size)]
    dist.all_gather(parts, tensor.contiguous(), group=group)
    return torch.cat(parts)


class GroupedAllGather(torch.autograd.Function):
    """local [n, d] -> gathered [G * n, d] in rank order (G = world, or group size for
    ``group_local``); backward returns each rank the summed gradient of its own rows."""

    @staticmethod
    def forward(ctx: Any, local: torch.Tensor, groups: GatherGroups, mode: str) -> torch.Tensor:
        ctx.groups, ctx.mode, ctx.n = groups, mode, local.shape[0]
        block = _all_gather(local, groups.intra, groups.group_size)
        if mode == "exact" and groups.n_groups > 1:
            return _all_gather(block, groups.inter, groups.n_groups)
        return block

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        groups, n = ctx.groups, ctx.n
        grad = grad.contiguous().clone()
        block_rows = groups.group_size * n
        if ctx.mode == "exact" and groups.n_groups > 1:
            dist.all_reduce(grad, group=groups.inter)
            start = groups.group_index * block_rows
            grad = grad[start : start + block_rows].contiguous()
        dist.all_reduce(grad, group=groups.intra)
        start = groups.local_index * n
        return grad[start : start + n], None, None


def gather_embeddings(
    local: torch.Tensor, groups: GatherGroups, mode: str = "exact"
) -> torch.Tensor:
    """All-gather ``local`` [n, d] over the world (``exact``) or the group (``group_local``)."""
    if mode not in MODES:
        raise ValueError(f"dist.gather is {mode!r}; valid choices: {', '.join(MODES)}")
    gathered: torch.Tensor = GroupedAllGather.apply(local, groups, mode)
    return gathered
