"""The training stream: shards -> shuffled, decoded samples with one caption each -> batches.

Runs inside DataLoader workers. Each (rank, worker) reader owns a disjoint slice of the shards
and loops over it forever, reshuffling the shard order every pass. Bad samples are skipped and
counted; every batch carries the counts of what its reader skipped since the previous batch,
so the trainer can log exact totals across workers.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Callable, Iterator

import torch
from torch.utils.data import IterableDataset, get_worker_info

from mclip.data.languages import LanguagePolicy
from mclip.data.shards import DataError, SkipCounter, decode_captions, decode_image, iter_raw_samples


def shuffle_buffer(items: Iterator, size: int, rng: random.Random) -> Iterator:
    """Approximate shuffle with a reservoir of ``size`` items (size <= 1: no shuffle)."""
    buffer: list = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        index = rng.randrange(len(buffer))
        buffer[index], item = item, buffer[index]
        yield item
    rng.shuffle(buffer)
    yield from buffer


class TrainStream(IterableDataset):
    """An endless stream of training batches (use with ``DataLoader(batch_size=None)``).

    Each batch is a dict: ``images`` float [B, 3, S, S], ``texts`` list of B captions,
    ``languages`` list of B language codes, ``keys`` list of B sample keys, ``skipped`` a dict
    reason -> count of samples this reader dropped since its previous batch.
    """

    def __init__(self, shards: list[str], transform: Callable, policy: LanguagePolicy,
                 batch_size: int, shuffle_size: int = 1000, seed: int = 0, rank: int = 0,
                 world_size: int = 1):
        super().__init__()
        self.shards, self.transform, self.policy = list(shards), transform, policy
        self.batch_size, self.shuffle_size, self.seed = batch_size, shuffle_size, seed
        self.rank, self.world_size = rank, world_size

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        reader = self.rank * n_workers + worker
        mine = self.shards[reader::self.world_size * n_workers]
        rng = random.Random(self.seed * 1_000_003 + reader)
        torch.manual_seed(self.seed * 1_000_003 + reader)  # augmentation randomness
        counter, reported = SkipCounter(), Counter()
        batch: list[tuple] = []
        while True:
            order = list(mine)
            rng.shuffle(order)
            usable = 0
            for sample in shuffle_buffer(iter_raw_samples(order, counter), self.shuffle_size, rng):
                item = self._decode(sample, counter, rng)
                if item is None:
                    continue
                usable += 1
                batch.append(item)
                if len(batch) == self.batch_size:
                    skipped = dict(counter - reported)
                    reported = Counter(counter)
                    yield self._collate(batch, skipped)
                    batch = []
            if usable == 0:
                raise DataError(f"no usable sample in {len(mine)} shard(s) ({', '.join(mine[:3])}"
                                f"{', ...' if len(mine) > 3 else ''}); skipped: {dict(counter)}. "
                                f"Check the shards' contents (KEY.jpg + KEY.txt / KEY.json).")

    def _decode(self, sample: dict, counter: SkipCounter, rng: random.Random):
        captions = decode_captions(sample, counter)
        if not captions:
            return None
        language = self.policy.choose(list(captions), rng)
        if language is None:
            counter["no_caption_in_selected_languages"] += 1
            return None
        image = decode_image(sample, counter)
        if image is None:
            return None
        caption = rng.choice(captions[language])
        return self.transform(image), caption, language, sample.get("__key__", "")

    @staticmethod
    def _collate(batch: list[tuple], skipped: dict) -> dict:
        images, texts, languages, keys = zip(*batch)
        return {"images": torch.stack(images), "texts": list(texts), "languages": list(languages),
                "keys": list(keys), "skipped": skipped}
