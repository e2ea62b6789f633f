"""The training batches of a rank: the shard stream and its DataLoader (:func:`training_batches`),
what a resumed stream depends on besides the seed (:func:`data_layout`), and the next batch with
a worker's DataError made one line (:func:`next_batch`)."""

from __future__ import annotations

from typing import Iterator, cast

from torch.utils.data import DataLoader

from mclip.config import Config
from mclip.data.curation import score_filter
from mclip.data.pipeline import Source, TrainStream
from mclip.data.shards import DataError
from mclip.data.sources import sources_digest
from mclip.models.dual import DualEncoder
from mclip.train.distributed import DistContext
from mclip.train.faults import ignore_stop_signals
from mclip.train.teachers import Teacher


def data_layout(cfg: Config, sources: list[Source], world_size: int) -> dict:
    """What the data order depends on besides the seed: a resumed run replays the stream from
    the saved reader positions only when this is unchanged."""
    return {
        "sources": sources_digest(sources),
        "readers": world_size * max(cfg.data.num_workers, 1),
        "seed": cfg.train.seed,
        "batch": cfg.train.batch_size,
        "shuffle_buffer": cfg.data.shuffle_buffer,
        "language_temperature": cfg.data.language_temperature,
        "captions_per_image": cfg.data.captions_per_image,
        "augment": cfg.data.augment,
        "language_policy": [
            cfg.data.language_policy,
            cfg.data.languages,
            sorted(cfg.data.language_weights.items()),
        ],
    }


def training_batches(
    cfg: Config,
    sources: list[Source],
    model: DualEncoder,
    teachers: list[Teacher],
    ctx: DistContext,
    seed: int,
    positions: dict,
    done: int,
) -> Iterator[dict]:
    """This rank's batches of ``train.batch_size / world_size`` images: a :class:`TrainStream`
    read by ``data.num_workers`` DataLoader workers. ``positions`` (reader -> position, from a
    checkpoint of the same :func:`data_layout`) resume each reader where it stopped after
    ``done`` steps; empty, the stream starts from ``seed``."""
    stream = TrainStream(
        sources,
        model.image_transform(train=False),
        None,
        cfg.train.batch_size // ctx.world_size,
        cfg.data.shuffle_buffer,
        seed=seed,
        rank=ctx.rank,
        world_size=ctx.world_size,
        augment=cfg.data.augment,
        default_language=cfg.data.default_language,
        language_key=cfg.data.language_key,
        positions=positions,
        batches_done=done if positions else 0,
        captions_per_image=cfg.data.captions_per_image,
        teacher_transforms=[t.image_transform() for t in teachers if t.online],
        retries=cfg.data.retries,
        score_filter=score_filter(cfg.data),
    )
    loader = DataLoader(
        stream,
        batch_size=None,
        num_workers=cast(int, cfg.data.num_workers),  # the trainer resolved "auto" before
        worker_init_fn=ignore_stop_signals,
        persistent_workers=False,
        prefetch_factor=4 if cfg.data.num_workers else None,
    )
    return iter(loader)


def next_batch(batches) -> dict:
    """The next batch; a DataError raised in a DataLoader worker comes back as one line."""
    try:
        return next(batches)
    except DataError as error:
        last = str(error).strip().splitlines()[-1]
        raise DataError(last.split("DataError: ", 1)[-1]) from None
