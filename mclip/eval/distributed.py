"""Evaluation across ranks: every rank embeds its share, every rank gets all embeddings.

Under ``torchrun --nproc-per-node N -m mclip.cli eval ...`` each rank encodes every N-th image
and every N-th text, the embeddings are all-gathered back into the single-process order, and
every rank then computes the (cheap) metrics on the full embeddings. So all ranks run the same
collectives in the same order and none waits on rank 0 while it scores (open_clip issues
#1121, #1087: rank-0-only evaluation times the other ranks out); rank 0 alone writes the report.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class EvalRanks:
    """This process's rank and the number of ranks (0 of 1 without torch.distributed)."""

    rank: int = 0
    world_size: int = 1
    owns_process_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def mine(self, index: int) -> bool:
        """Whether item ``index`` (0-based, in the single-process order) is this rank's."""
        return index % self.world_size == self.rank

    def gather_objects(self, obj) -> list:
        """Every rank's ``obj``, in rank order (a collective)."""
        if self.world_size == 1:
            return [obj]
        out: list = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank (a collective)."""
        if self.world_size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather_rows(
        self, rows: torch.Tensor, positions: list[int], total: int, width: int | None = None
    ) -> torch.Tensor:
        """Rows [n_local, d] held at ``positions`` (indices into 0..total-1) -> [total, d] on every
        rank, each row at its position (a collective; float32 on the CPU)."""
        width = rows.shape[1] if rows.numel() else (width or 0)
        if not rows.numel():  # nothing readable here: [0, 0] would not fit a [0, width] slot
            rows = rows.reshape(0, width)
        if self.world_size == 1:
            out = torch.empty(total, width)
            out[torch.tensor(positions, dtype=torch.long)] = rows.float().cpu()
            return out
        all_positions = self.gather_objects(list(positions))
        widths = self.gather_objects(width)
        width = max(widths)
        longest = max(len(p) for p in all_positions)
        device = _collective_device()
        padded = torch.zeros(longest, width, device=device)
        if rows.numel():
            padded[: rows.shape[0]] = rows.float().to(device)
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        out = torch.empty(total, width)
        for part, where in zip(parts, all_positions):
            if where:
                out[torch.tensor(where, dtype=torch.long)] = part[: len(where)].cpu()
        return out

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def init_eval_ranks(device: str) -> EvalRanks:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); else rank 0 of 1.

    The backend is NCCL when ``device`` is a CUDA device, gloo otherwise.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return EvalRanks()
    owns = not dist.is_initialized()
    if owns:
        backend = "nccl" if str(device).startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(torch.device(device))
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=60))
    return EvalRanks(dist.get_rank(), dist.get_world_size(), owns)


def shutdown_eval_ranks(ranks: EvalRanks) -> None:
    """Leave the process group this evaluation created, once every rank is done."""
    if ranks.owns_process_group and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
