"""Images of an evaluation set decoded and transformed ahead of the forward pass, in workers.

:func:`image_batches` streams one rank's share of an :class:`~mclip.eval.datasets.base.ImageSet`
as batches of transformed images through a ``torch.utils.data.DataLoader``: with ``workers``
> 0 the decoding runs in that many processes while the model embeds the previous batch (pinned
memory on a GPU). What is embedded does not depend on the number of workers: every worker walks
the set in its fixed order and keeps the items the rank owns (``index % world == rank``, the
first ``limit`` items only) in the batches that fall to it: the rank's items in consecutive
groups of ``batch_size``, group g to worker g % workers. A batch is its group's readable images,
the same batches whatever the number of workers, so the embeddings are bitwise equal; each batch
carries the items' positions, so the caller places rows by position.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from mclip.data.shards import SkipCounter
from mclip.eval.datasets.base import ImageSet
from mclip.cpus import usable_cpus


@dataclass
class ImageBatch:
    """Transformed images of one batch: ``images`` float [b, 3, H, W] (None when every item of
    the batch was unreadable), their ``positions`` in the set's order, keys and labels."""

    images: torch.Tensor | None
    positions: list[int] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    labels: list = field(default_factory=list)
    unreadable: int = 0

    def pin_memory(self) -> ImageBatch:
        """Called by the DataLoader's pinning thread on a GPU run."""
        if self.images is not None:
            self.images = self.images.pin_memory()
        return self


@dataclass
class SetListing:
    """Sent once, by the first worker, after its walk: how many items the set has within the
    limit (``total``) and the entries the listing skipped, by reason."""

    total: int
    skipped: dict


def default_image_workers(device_type: str = "cpu", local_ranks: int = 1) -> int:
    """``--workers`` by default, 0 to 8: on a GPU the CPUs this process may use (per local rank)
    less one, which feeds the GPU; on the CPU all of them, as the forward pass waits for decoded
    images anyway (2 CPUs, 64 px ViT, 500 x 375 JPEGs: 309 images/s with one worker, 475 with
    two, 324 with none)."""
    cpus = usable_cpus() // max(local_ranks, 1)
    return max(0, min(8, cpus - 1 if device_type != "cpu" else cpus))


class _RankShare(IterableDataset):
    def __init__(
        self,
        image_set: ImageSet,
        transform: Callable,
        batch_size: int,
        limit: int | None,
        rank: int,
        world: int,
    ):
        self.image_set, self.transform, self.batch_size = image_set, transform, batch_size
        self.limit, self.rank, self.world = limit, rank, world

    def __iter__(self) -> Iterator[ImageBatch | SetListing]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if info is not None:
            torch.set_num_threads(1)  # decoding processes: leave the cores to the forward pass
        listing, batch, pending, owned, total = SkipCounter(), ImageBatch(None), [], 0, 0
        for index, item in enumerate(self.image_set.items(listing)):
            if self.limit is not None and index >= self.limit:
                break
            total = index + 1
            if index % self.world != self.rank:
                continue
            slot, owned = owned, owned + 1
            if (slot // self.batch_size) % workers != worker:
                continue
            try:
                pending.append(self.transform(item.open()))
                batch.positions.append(index)
                batch.keys.append(item.key)
                batch.labels.append(item.label)
            except Exception:  # PIL raises many types for missing / corrupt files
                batch.unreadable += 1
            if slot % self.batch_size == self.batch_size - 1:
                yield _finished(batch, pending)
                batch, pending = ImageBatch(None), []
        if pending or batch.unreadable:
            yield _finished(batch, pending)
        if worker == 0:
            yield SetListing(total, dict(listing))


def _finished(batch: ImageBatch, pending: list[torch.Tensor]) -> ImageBatch:
    batch.images = torch.stack(pending) if pending else None
    return batch


def image_batches(
    image_set: ImageSet,
    transform: Callable,
    batch_size: int,
    limit: int | None,
    rank: int = 0,
    world: int = 1,
    workers: int = 0,
    pin_memory: bool = False,
) -> Iterator[ImageBatch | SetListing]:
    """The batches of this rank's images (any order), then one :class:`SetListing`.

    ``transform``: PIL image -> float [3, H, W]; unreadable images are counted in the batches'
    ``unreadable``. ``workers`` processes decode ahead (0: in this process).
    """
    loader = DataLoader(
        _RankShare(image_set, transform, batch_size, limit, rank, world),
        batch_size=None,
        num_workers=workers,
        pin_memory=pin_memory,
        collate_fn=_as_is,
        persistent_workers=False,
        multiprocessing_context="fork" if workers and _fork_is_safe() else None,
    )
    yield from loader


def _as_is(record):
    return record


def _fork_is_safe() -> bool:
    """Linux: fork (no pickling of the set); elsewhere the platform's default (spawn on macOS,
    where forking a process with threads is unsafe)."""
    return sys.platform.startswith("linux")
