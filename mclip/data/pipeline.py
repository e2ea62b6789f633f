"""The training stream: shards -> shuffled, decoded samples with k captions each -> batches.

Runs inside DataLoader workers (or in the main process with ``num_workers=0``). Each
(rank, worker) reader owns a disjoint slice of every source's shards and loops over it forever,
reshuffling the shard order every pass. Several sources (``data.sources``) are mixed per
batch slot by weight. Bad samples are skipped and counted; every batch carries the counts of
what its reader skipped since its previous batch, so the trainer can log exact totals across
workers.

Guarantees:
- a sample is never placed twice in one batch: a batch may run from the end of one pass into
  the next, and a key already in the batch is skipped (counted as ``duplicate_key_in_batch``);
- a reader whose slice cannot fill its part of a batch (a slice of bad shards, say) reads the
  source's whole shard list instead, so one bad shard never stops a healthy run; only when the
  whole list cannot does the stream stop, with the numbers;
- randomness comes from generators seeded by (seed, reader, source, pass) for the shard order
  and the shuffle, by (seed, reader, source, pass, sample index) for caption choice and flips,
  and by (seed, reader, batch) for the sources of a batch's slots, never from torch's global
  RNG, which the trainer owns; so the stream is a pure function of the seed and a reader's
  position (:data:`START_POSITION`), and a resumed run sees exactly the batches the
  uninterrupted run would have seen.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterator, cast

import torch
from torch.utils.data import IterableDataset, get_worker_info

from mclip.data.languages import LanguagePolicy
from mclip.data.remote import RetryPolicy, redact
from mclip.data.shards import (
    DataError,
    SkipCounter,
    content_hash,
    decode_captions,
    decode_image,
    image_bytes,
    iter_raw_samples,
)


START_POSITION = {"pass": 0, "consumed": 0, "all_shards": False}
"""One source's place in one reader's stream: the pass over its shards, how many shuffled samples
of that pass it has taken, and whether it reads every shard of the source (its own slice could
not fill its part of a batch). A reader's position is
``{"batches": n, "sources": {name: this}}``."""


@dataclass
class Source:
    """One shard set of the training mix: its shards, how its caption languages are chosen, and
    its relative share of the samples."""

    name: str
    shards: list[str]
    policy: LanguagePolicy
    weight: float = 1.0


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

    ``shards``: a list of shard paths read with ``policy`` (one source), or a list of
    :class:`Source` (``policy`` unused): each batch slot is drawn from a source with probability
    proportional to its weight.

    Each batch is a dict: ``images`` float [B, 3, S, S], ``texts`` list of B * k captions
    (k = ``captions_per_image``; image i's captions at rows i*k .. i*k + k - 1, in k different
    languages where the sample has them), ``languages`` their language codes, ``text_to_image``
    LongTensor [B * k] the image of each text, ``keys`` list of B sample keys, ``sources`` the
    source name of each image, ``skipped`` a dict
    reason -> count of samples this reader dropped since its previous batch, ``reader`` the id
    of the reader that made it and ``position`` that reader's position after it
    (:data:`START_POSITION`). ``transform`` maps a PIL image to [3, S, S]; with ``augment`` a
    horizontal flip is drawn per sample. ``teacher_images`` holds one stacked batch [B, 3, H_k,
    W_k] per entry of ``teacher_transforms`` (each teacher's own preprocessing of the same
    decoded image, flipped with the student's when it is); ``shards``, ``image_hashes`` and
    ``flipped`` say which shard and image bytes each row came from and whether it was flipped
    (for teacher embeddings stored offline).

    The order is a pure function of ``seed``, the reader id and the shards, so a run resumes
    exactly: pass the ``positions`` ({reader: position}) of the batches consumed so far and
    ``batches_done``, the number of batches this rank has consumed (a DataLoader hands out its
    workers' batches in turn, so the worker whose turn comes first plays the reader whose turn
    was next). A reader replays each source's current pass up to its position without decoding
    images.
    """

    def __init__(
        self,
        shards: list[str] | list[Source],
        transform: Callable,
        policy: LanguagePolicy | None,
        batch_size: int,
        shuffle_size: int = 1000,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        augment: bool = False,
        default_language: str = "en",
        language_key: str = "",
        positions: dict[int, dict] | None = None,
        batches_done: int = 0,
        captions_per_image: int = 1,
        teacher_transforms: list[Callable] | None = None,
        retries: int = 5,
        score_filter=None,
    ):
        super().__init__()
        self.sources = (
            list(shards)
            if shards and isinstance(shards[0], Source)
            else [Source("train", list(cast("list[str]", shards)), policy or LanguagePolicy())]
        )
        self.transform = transform
        self.batch_size, self.shuffle_size, self.seed = batch_size, shuffle_size, seed
        self.rank, self.world_size, self.augment = rank, world_size, augment
        self.default_language, self.language_key = default_language, language_key
        self.positions = dict(positions or {})
        self.batches_done = batches_done
        self.captions_per_image = captions_per_image
        self.teacher_transforms = list(teacher_transforms or [])
        self.retry_policy = RetryPolicy(retries=retries)
        self.score_filter = score_filter  # mclip.data.curation.ScoreFilter (data.min_score)

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        reader = self.rank * n_workers + (worker + self.batches_done) % n_workers
        saved = self.positions.get(reader, {})
        batches = saved.get("batches", 0)
        feeds = [
            _SourceFeed(
                self,
                index,
                reader,
                self.world_size * n_workers,
                saved.get("sources", {}).get(source.name),
            )
            for index, source in enumerate(self.sources)
        ]
        counter = SkipCounter()
        while True:
            slots = self._slots(reader, batches)
            items, keys = [], set[tuple]()
            for feed in feeds:
                feed.begin_batch(slots.count(feed.index))
            for index in slots:
                items.append(feeds[index].next_distinct(keys, counter))
            batches += 1
            position = {
                "batches": batches,
                "sources": {f.source.name: dict(f.position) for f in feeds},
            }
            yield self._collate(items, dict(counter), reader, position)
            counter.clear()

    def _slots(self, reader: int, batch: int) -> list[int]:
        """The source of each of the batch's samples, drawn by weight (sorted: one source's
        samples together)."""
        if len(self.sources) == 1:
            return [0] * self.batch_size
        rng = random.Random(f"{self.seed}/{reader}/slots/{batch}")
        weights = [source.weight for source in self.sources]
        return sorted(rng.choices(range(len(self.sources)), weights=weights, k=self.batch_size))

    def _decode(
        self, sample: dict, counter: SkipCounter, policy: LanguagePolicy, rng: random.Random
    ):
        """(image [3, S, S], [(language, caption)] * k, key, teacher images, (image content
        hash, flipped, shard)) of one raw sample, or None (counted)."""
        captions = decode_captions(sample, counter, self.default_language, self.language_key)
        if captions and self.score_filter is not None:
            captions = self.score_filter.keep(
                sample.get("__url__", ""),
                sample.get("__key__", ""),
                captions,
                counter,
                set(policy.candidates(captions)),
            )
        if not captions:
            return None
        languages = policy.choose_several(list(captions), self.captions_per_image, rng)
        if not languages:
            counter["no_caption_in_selected_languages"] += 1
            return None
        if not policy.keep(languages[0], rng):
            counter["downsampled_by_language_temperature"] += 1
            return None
        image = decode_image(sample, counter)
        if image is None:
            return None
        texts = self._pick_captions(captions, languages, counter, rng)
        tensors = [self.transform(image)] + [t(image) for t in self.teacher_transforms]
        flipped = self.augment and rng.random() < 0.5
        if flipped:  # one draw: teachers see the student's flip
            tensors = [tensor.flip(-1) for tensor in tensors]
        data = image_bytes(sample)
        assert data is not None  # the image decoded from these bytes
        view = (content_hash(data), flipped, sample.get("__url__", ""))
        return tensors[0], texts, sample.get("__key__", ""), tuple(tensors[1:]), view

    def _pick_captions(
        self,
        captions: dict[str, list[str]],
        languages: list[str],
        counter: SkipCounter,
        rng: random.Random,
    ) -> list[tuple[str, str]]:
        """``captions_per_image`` (language, caption) pairs: one caption in each chosen language;
        when the sample has fewer allowed languages, further captions of those languages that
        are not yet used, and only when there are none, a caption again (counted)."""
        picks = [(language, rng.choice(captions[language])) for language in languages]
        while len(picks) < self.captions_per_image:
            unused = [
                (language, text)
                for language in languages
                for text in captions[language]
                if (language, text) not in picks
            ]
            if not unused:
                counter["caption_repeated_to_fill_captions_per_image"] += 1
            picks.append(rng.choice(unused or picks))
        return picks

    @staticmethod
    def _collate(batch: list[tuple], skipped: dict, reader: int, position: dict) -> dict:
        images, picks, keys, teacher_images, views, sources = zip(*batch)
        pairs = [pair for sample in picks for pair in sample]
        return {
            "images": torch.stack(images),
            "texts": [text for _, text in pairs],
            "teacher_images": [torch.stack(t) for t in zip(*teacher_images)],
            "image_hashes": [h for h, _, _ in views],
            "flipped": [f for _, f, _ in views],
            "shards": [url for _, _, url in views],
            "languages": [language for language, _ in pairs],
            "text_to_image": torch.arange(len(images)).repeat_interleave(len(picks[0])),
            "keys": list(keys),
            "sources": list(sources),
            "skipped": skipped,
            "reader": reader,
            "position": position,
        }


class _SourceFeed:
    """One source's decoded samples for one reader: endless, resumable from a position.

    The reader owns every ``readers``-th shard of the source; each pass shuffles that slice's
    order and the samples (generators seeded by seed, reader, source and pass; each sample's
    caption choice and flip by its index too). A slice whose full pass gives no usable sample,
    or too few to fill the source's slots of a batch without a sample twice, is replaced by the
    source's whole shard list (counted as ``reader_fell_back_to_all_shards``); when the whole
    list cannot either, :class:`DataError` says so with the numbers.
    """

    def __init__(
        self, stream: TrainStream, index: int, reader: int, readers: int, position: dict | None
    ):
        self.stream, self.index, self.reader = stream, index, reader
        self.source = source = stream.sources[index]
        self.own = source.shards[reader::readers]
        self.position = {**START_POSITION, **(position or {})}
        self.counter, self.total = SkipCounter(), Counter[str]()
        self.usable = Counter[int]()  # pass -> usable samples
        self.slots, self.batch_first_pass = 0, self.position["pass"]
        self._items = self._passes()

    @property
    def shards(self) -> list[str]:
        return list(self.source.shards if self.position["all_shards"] else self.own)

    def begin_batch(self, slots: int) -> None:
        """A new batch starts in which this source fills ``slots`` samples."""
        self.slots, self.batch_first_pass = slots, self.position["pass"]

    def next_distinct(self, keys: set, counter: Counter) -> tuple:
        """The next usable sample whose key is not in ``keys`` (then added); skips go to
        ``counter``."""
        while True:
            try:
                item, key, pass_index, consumed = next(self._items)
            except StopIteration:  # the slice gave nothing usable: the whole list is read now
                continue
            self.position = {**self.position, "pass": pass_index, "consumed": consumed}
            self._drain(counter)
            if (self.index, key) not in keys:
                keys.add((self.index, key))
                return item
            counter["duplicate_key_in_batch"] += 1
            if pass_index >= self.batch_first_pass + 2:  # a whole pass went by: all in the batch
                self._cannot_fill(self.usable[pass_index - 1], counter, pass_index)

    def _drain(self, counter: Counter) -> None:
        self.total.update(self.counter)
        counter.update(self.counter)
        self.counter.clear()

    def _cannot_fill(self, usable: int, counter: Counter, pass_index: int) -> None:
        """This slice cannot fill its part of a batch: read the whole list, or stop."""
        if not self.position["all_shards"] and len(self.own) < len(self.source.shards):
            counter["reader_fell_back_to_all_shards"] += 1
            self.position = {"pass": pass_index + 1, "consumed": 0, "all_shards": True}
            self.batch_first_pass = self.position["pass"]
            self._items = self._passes()
            return
        self._drain(counter)
        shards = self.shards
        named = "" if len(self.stream.sources) == 1 else f" of source '{self.source.name}'"
        raise DataError(
            f"the {len(shards)} training shard(s){named} ({', '.join(map(redact, shards[:3]))}"
            f"{', ...' if len(shards) > 3 else ''}) hold {usable} usable sample(s), fewer than the "
            f"{self.slots} it must fill in one per-rank batch of {self.stream.batch_size}; "
            f"skipped: "
            f"{dict(self.total)}. Check the shards' contents (KEY.jpg + KEY.txt / KEY.json), the "
            f"caption languages (data.languages), or lower train.batch_size."
        )

    def _passes(self) -> Iterator[tuple]:
        """(item, key, pass, samples of the pass taken) for every usable sample, pass after
        pass; the current pass resumes after ``position['consumed']`` samples."""
        pass_index, start = self.position["pass"], self.position["consumed"]
        while True:
            yield from self._one_pass(pass_index, start)
            if start == 0 and self.usable[pass_index] == 0:  # a full pass with nothing usable
                self._cannot_fill(0, self.counter, pass_index)
                return  # the feed now reads a new generator over the whole list
            pass_index, start = pass_index + 1, 0

    def _one_pass(self, pass_index: int, start: int) -> Iterator[tuple]:
        """One pass over the shards in this pass's random order; the first ``start`` shuffled
        samples are passed over undecoded (a resumed pass)."""
        stream, name = self.stream, self.source.name
        rng = random.Random(f"{stream.seed}/{self.reader}/{name}/{pass_index}")
        order = self.shards
        rng.shuffle(order)
        samples = shuffle_buffer(
            iter_raw_samples(order, self.counter, stream.retry_policy), stream.shuffle_size, rng
        )
        for index, sample in enumerate(samples):
            if index < start:
                if index == start - 1:  # the original run reported what was read up to here
                    self.counter.clear()
                continue
            item = stream._decode(
                sample,
                self.counter,
                self.source.policy,
                random.Random(f"{stream.seed}/{self.reader}/{name}/{pass_index}/{index}"),
            )
            if item is None:
                continue
            self.usable[pass_index] += 1
            key = sample.get("__key__", "")
            yield (*item, name), key, pass_index, index + 1
