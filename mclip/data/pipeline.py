"""The training stream: shards -> shuffled, decoded samples with one caption each -> batches.

Runs inside DataLoader workers (or in the main process with ``num_workers=0``). Each
(rank, worker) reader owns a disjoint slice of the shards and loops over it forever,
reshuffling the shard order every pass. Bad samples are skipped and counted; every batch
carries the counts of what its reader skipped since its previous batch, so the trainer can log
exact totals across workers.

Guarantees:
- a sample is never placed twice in one batch: a batch never spans two passes (the partial
  batch at the end of a pass is dropped) and a key already in the batch is skipped;
- a reader whose slice cannot fill one batch (a slice of bad shards, say) reads the whole shard
  list instead, so one bad shard never stops a healthy run; only when the whole list cannot
  fill one batch does the stream stop, with the numbers;
- randomness comes from generators seeded by (seed, reader, pass) for the shard order and the
  shuffle, and by (seed, reader, pass, sample index) for caption choice and flips, never from
  torch's global RNG, which the trainer owns; so the stream is a pure function of the seed and
  a reader's :data:`START_POSITION`-style position, and a resumed run sees exactly the batches
  the uninterrupted run would have seen.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Callable, Iterator

import torch
from torch.utils.data import IterableDataset, get_worker_info

from mclip.data.languages import LanguagePolicy
from mclip.data.shards import DataError, SkipCounter, decode_captions, decode_image, iter_raw_samples


START_POSITION = {"pass": 0, "consumed": 0, "all_shards": False}
"""A reader's place in its stream: the pass over its shards, how many shuffled samples of that
pass it has taken, and whether it reads every shard (its own slice could not fill a batch)."""


def shuffle_buffer(items: Iterator, size: int, rng: random.Random) -> Iterator:
    """Approximate shuffle with a reservoir of ``size`` items (size <= 1: no shuffle)."""
    if size <= 1:
        yield from items
        return
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
    reason -> count of samples this reader dropped since its previous batch, ``reader`` the id
    of the reader that made it and ``position`` that reader's :data:`ReaderPosition` after it.
    ``transform`` maps a PIL image to [3, S, S]; with ``augment`` a horizontal flip is drawn
    per sample.

    The order is a pure function of ``seed``, the reader id and the shards, so a run resumes
    exactly: pass the ``positions`` ({reader: position}) of the batches consumed so far and
    ``batches_done``, the number of batches this rank has consumed (a DataLoader hands out its
    workers' batches in turn, so the worker whose turn comes first plays the reader whose turn
    was next). A reader replays its current pass up to its position without decoding images.
    """

    def __init__(self, shards: list[str], transform: Callable, policy: LanguagePolicy,
                 batch_size: int, shuffle_size: int = 1000, seed: int = 0, rank: int = 0,
                 world_size: int = 1, augment: bool = False, default_language: str = "en",
                 language_key: str = "", positions: dict[int, dict] | None = None,
                 batches_done: int = 0):
        super().__init__()
        self.shards, self.transform, self.policy = list(shards), transform, policy
        self.batch_size, self.shuffle_size, self.seed = batch_size, shuffle_size, seed
        self.rank, self.world_size, self.augment = rank, world_size, augment
        self.default_language, self.language_key = default_language, language_key
        self.positions = dict(positions or {})
        self.batches_done = batches_done

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        reader = self.rank * n_workers + (worker + self.batches_done) % n_workers
        position = {**START_POSITION, **self.positions.get(reader, {})}
        own = self.shards[reader::self.world_size * n_workers]
        counter, total = SkipCounter(), Counter()
        while True:
            shards = list(self.shards) if position["all_shards"] else own
            produced, tally = False, Counter()
            start = position["consumed"]
            for batch, consumed in self._one_pass(shards, counter, reader, position["pass"],
                                                  start, tally):
                produced = True
                total.update(counter)
                skipped = dict(counter)
                counter.clear()
                position = {**position, "consumed": consumed}
                yield self._collate(batch, skipped, reader, position)
            position = {**position, "pass": position["pass"] + 1, "consumed": 0}
            if produced or start > 0:
                continue
            if not position["all_shards"] and len(own) < len(self.shards):
                counter["reader_fell_back_to_all_shards"] += 1  # this slice cannot fill a batch
                position["all_shards"] = True
                continue
            total.update(counter)
            raise DataError(
                f"the {len(shards)} training shard(s) ({', '.join(shards[:3])}"
                f"{', ...' if len(shards) > 3 else ''}) hold {tally['usable']} usable sample(s), fewer "
                f"than one per-rank batch of {self.batch_size}; skipped: {dict(total)}. Check the shards' "
                f"contents (KEY.jpg + KEY.txt / KEY.json), the caption languages "
                f"(data.languages), or lower train.batch_size.")

    def _one_pass(self, shards: list[str], counter: SkipCounter, reader: int, pass_index: int,
                  start: int, tally: Counter) -> Iterator[tuple[list[tuple], int]]:
        """Full batches from one pass over ``shards`` in this pass's random order, each with the
        number of shuffled samples taken so far; the first ``start`` are passed over undecoded
        (a resumed pass). The partial batch at the end of the pass is dropped, so no batch holds
        a sample twice. ``tally['usable']`` counts the usable samples seen."""
        rng = random.Random(f"{self.seed}/{reader}/{pass_index}")
        order = list(shards)
        rng.shuffle(order)
        batch: list[tuple] = []
        keys: set[str] = set()
        samples = shuffle_buffer(iter_raw_samples(order, counter), self.shuffle_size, rng)
        for index, sample in enumerate(samples):
            if index < start:
                if index == start - 1:  # the original run reported what was read up to here
                    counter.clear()
                continue
            key = sample.get("__key__", "")
            if key in keys:
                counter["duplicate_key_in_batch"] += 1
                continue
            item = self._decode(sample, counter,
                                random.Random(f"{self.seed}/{reader}/{pass_index}/{index}"))
            if item is None:
                continue
            tally["usable"] += 1
            batch.append(item)
            keys.add(key)
            if len(batch) == self.batch_size:
                yield batch, index + 1
                batch, keys = [], set()

    def _decode(self, sample: dict, counter: SkipCounter, rng: random.Random):
        captions = decode_captions(sample, counter, self.default_language, self.language_key)
        if not captions:
            return None
        language = self.policy.choose(list(captions), rng)
        if language is None:
            counter["no_caption_in_selected_languages"] += 1
            return None
        if not self.policy.keep(language, rng):
            counter["downsampled_by_language_temperature"] += 1
            return None
        image = decode_image(sample, counter)
        if image is None:
            return None
        caption = rng.choice(captions[language])
        tensor = self.transform(image)
        if self.augment and rng.random() < 0.5:
            tensor = tensor.flip(-1)
        return tensor, caption, language, sample.get("__key__", "")

    @staticmethod
    def _collate(batch: list[tuple], skipped: dict, reader: int, position: dict) -> dict:
        images, texts, languages, keys = zip(*batch)
        return {"images": torch.stack(images), "texts": list(texts), "languages": list(languages),
                "keys": list(keys), "skipped": skipped, "reader": reader,
                "position": dict(position)}
