"""Image and text embeddings of one model, each computed once per run (and cache).

:class:`ImageEmbeddings` embeds an image set once, whatever number of languages and tasks use
it, with the images decoded ahead of the forward pass in DataLoader workers
(:mod:`mclip.eval.image_loading`); :class:`TextEmbeddings` encodes distinct texts once, sorted
by length into full batches (on a GPU the next batch tokenised while one runs)
(:mod:`mclip.eval.encoding`). Under torchrun both split their work over the ranks
(:mod:`mclip.eval.distributed`); with a cache (:mod:`mclip.eval.cache`) they survive between runs.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import torch

from mclip.config import ConfigError
from mclip.eval.cache import EmbeddingCache, text_hashes, transform_fingerprint
from mclip.eval.datasets import ImageSet
from mclip.eval.distributed import EvalRanks
from mclip.eval.encoding import autocast, encode_text_batches, run_or_halve
from mclip.eval.image_loading import SetListing, image_batches

# (emb [N, d] float32, keys [N], labels [N], skip counts) of an image set
ImageResult = tuple[torch.Tensor, list[str], list[Any], dict[str, int]]

# texts kept to measure the text tower's cost per text: FlopCounterMode runs each alone, ~8 ms
# a text for a small open_clip tower (64 of them were half a second of a 10 s evaluation)
SAMPLE_TEXTS = 16


class ImageEmbeddings:
    """Embeds image sets with one model, once each: ``get(image_set)`` -> (emb [N, d] float32,
    keys [N], labels [N], skipped counts). Unreadable images are skipped and counted; ``limit``
    keeps the first N images the set lists (unreadable ones among them are skipped)."""

    def __init__(
        self,
        model,
        device: torch.device,
        batch_size: int = 256,
        limit: int | None = None,
        progress: Callable[[str], None] = lambda m: None,
        cache: EmbeddingCache | None = None,
        ranks: EvalRanks | None = None,
        workers: int = 0,
        precision: str = "fp32",
    ):
        self.model, self.device, self.batch_size, self.limit = model, device, batch_size, limit
        self.workers, self.precision = workers, precision
        self.transform = model.image_transform(train=False)
        self.progress, self.cache, self.ranks = progress, cache, ranks or EvalRanks()
        self.uses_cache = cache is not None
        self._done: dict[str, ImageResult] = {}
        self.embedded, self.seconds = 0, 0.0  # images this run embedded (not read), wall time

    def set_key(self, image_set: ImageSet, state: bool = False) -> str:
        """What the embeddings of ``image_set`` depend on besides the model: the set, its files'
        names and sizes, the transform and the limit; ``state`` adds every file's modification
        time and a hash of its ends (the on-disk cache's key: a rewritten file misses)."""
        return (
            f"{image_set.description}|{image_set.fingerprint(state=state)}|"
            f"{transform_fingerprint(self.transform)}|limit={self.limit}"
        )

    def get(self, image_set: ImageSet) -> ImageResult:
        """(emb [N, d] float32, keys [N], labels [N], skip counts) of ``image_set``."""
        key = self.set_key(image_set)
        if key not in self._done:
            cached: ImageResult | None = None
            cache_key: str | None = None
            if self.uses_cache:  # rank 0 (which holds the cache) reads it and shares what it found
                if self.cache is not None:
                    cache_key = self.set_key(image_set, state=True)
                cached = self.ranks.broadcast(
                    self.cache.load_images(cache_key) if self.cache and cache_key else None
                )
            if cached is not None:
                self.progress(
                    f"{len(cached[1])} image embeddings of {image_set.description} "
                    f"read from the cache"
                )
            else:
                cached = self._embed(image_set)
                if self.cache is not None and cache_key is not None:
                    self.cache.save_images(cache_key, *cached, description=image_set.description)
            self._done[key] = cached
        return self._done[key]

    @torch.no_grad()
    def _embed(self, image_set: ImageSet) -> ImageResult:
        rows: list[torch.Tensor] = []
        positions: list[int] = []
        keys: dict[int, str] = {}
        labels: dict[int, Any] = {}
        unreadable, listing, start = 0, None, time.perf_counter()

        def encode(images: torch.Tensor) -> torch.Tensor:
            with autocast(self.device, self.precision):
                return (
                    self.model.encode_image(images.to(self.device, non_blocking=True)).float().cpu()
                )

        for batch in image_batches(
            image_set,
            self.transform,
            self.batch_size,
            self.limit,
            self.ranks.rank,
            self.ranks.world_size,
            self.workers,
            pin_memory=self.device.type == "cuda",
        ):
            if isinstance(batch, SetListing):
                listing = batch
                continue
            unreadable += batch.unreadable
            if batch.images is None:
                continue
            embedded, fitted = run_or_halve(encode, batch.images, self.progress)
            if fitted is not None:  # an out-of-memory error: later image sets use what fitted
                self.batch_size = min(self.batch_size, fitted)
            rows.append(embedded)
            positions.extend(batch.positions)
            keys.update(zip(batch.positions, batch.keys))
            labels.update(zip(batch.positions, batch.labels))
        total = listing.total if listing is not None else 0
        counts = {"unreadable_image": unreadable} if unreadable else {}
        local = torch.cat(rows) if rows else torch.zeros(0, 0)
        gathered = self.ranks.gather_rows(local, positions, total, width=self.model.embed_dim)
        metadata = self.ranks.gather_objects((keys, labels, counts))
        keys, labels, skipped = {}, {}, dict(listing.skipped if listing is not None else {})
        for part_keys, part_labels, part_skipped in metadata:
            keys.update(part_keys)
            labels.update(part_labels)
            for reason, count in part_skipped.items():
                skipped[reason] = skipped.get(reason, 0) + count
        order = sorted(keys)
        if not order:
            raise ConfigError(
                f"no usable image in {image_set.description} (skipped: "
                f"{skipped}); check the images path"
            )
        seconds = time.perf_counter() - start
        self.embedded, self.seconds = self.embedded + len(order), self.seconds + seconds
        self.progress(f"embedded {len(order)} images of {image_set.description} in {seconds:.1f} s")
        return (
            gathered[torch.tensor(order)],
            [keys[i] for i in order],
            [labels[i] for i in order],
            skipped,
        )


class TextEmbeddings:
    """Encodes texts with one model: distinct texts once, sorted by length into full batches,
    split over the ranks, read from and written to the cache. ``encode(texts)`` -> [len, d].

    ``adapter_languages``: the languages the model has a language adapter for (an mclip model
    with ``adapters/<lang>/``); ``encode(texts, language)`` uses it for those languages only, and
    ``adapted`` collects the languages that were encoded with one.
    """

    def __init__(
        self,
        model,
        batch_size: int = 256,
        cache: EmbeddingCache | None = None,
        ranks: EvalRanks | None = None,
        progress: Callable[[str], None] = lambda m: None,
        remember: bool = False,
        precision: str = "fp32",
    ):
        self.model, self.batch_size, self.cache = model, batch_size, cache
        self.precision = precision
        self.ranks, self.progress = ranks or EvalRanks(), progress
        self.uses_cache = cache is not None
        self.encoded, self.from_cache = 0, 0
        self.seconds = 0.0  # wall time spent encoding
        self.sample: list[str] = []  # the first SAMPLE_TEXTS texts asked for (for their cost)
        self.adapter_languages = tuple(getattr(model, "adapter_languages", ()))
        self.adapted: set[str] = set()
        # with ``remember`` every embedding stays in memory for the run (a task scored again, at
        # another embedding size, encodes nothing twice)
        self._memory: dict[tuple[str | None, str], torch.Tensor] | None = {} if remember else None

    @torch.no_grad()
    def encode(self, texts: list[str], language: str | None = None) -> torch.Tensor:
        """Normalised embeddings float32 [len(texts), d] on the CPU, in the order of ``texts``.

        ``language``: the language of all ``texts``; when the model has an adapter for it they
        are encoded with the adapter on (and cached apart from the base model's), otherwise (and
        for None) by the base model.
        """
        if language is None or language not in self.adapter_languages:
            return self._encode(texts, None)
        self.adapted.add(language)
        with self.model.text_language(language):
            return self._encode(texts, language)

    def _encode(self, texts: list[str], adapter: str | None) -> torch.Tensor:
        memory = self._memory
        if memory is not None and all((adapter, t) in memory for t in texts):
            return (
                torch.stack([memory[adapter, t] for t in texts])
                if texts
                else torch.empty(0, self.model.embed_dim)
            )
        distinct = list(dict.fromkeys(texts))
        self.sample += distinct[: SAMPLE_TEXTS - len(self.sample)]  # cached or not: the same cost
        hashes = None
        if self.cache is not None:  # an adapter's embeddings are cached under their own keys
            hashes = text_hashes(
                [f"\x00adapter:{adapter}\x00{t}" if adapter else t for t in distinct]
            )
        found: dict[int, torch.Tensor] = {}
        missing = list(range(len(distinct)))
        if self.uses_cache:
            found, missing = self.ranks.broadcast(
                self.cache.lookup_texts(hashes)
                if self.cache is not None and hashes is not None
                else None
            )
        out = torch.empty(len(distinct), self.model.embed_dim)
        for position, row in found.items():
            out[position] = row
        if missing:
            start = time.perf_counter()
            new = self._encode_missing([distinct[i] for i in missing])
            seconds = time.perf_counter() - start
            self.seconds += seconds
            self.progress(
                f"encoded {len(missing)} distinct texts in {seconds:.1f} s "
                f"({len(found)} read from the cache)"
            )
            out[torch.tensor(missing)] = new
            if self.cache is not None and hashes is not None and self.ranks.is_main:
                self.cache.save_texts(hashes[missing], new)
        self.encoded += len(missing)
        self.from_cache += len(found)
        if memory is not None:
            memory.update(((adapter, text), out[i]) for i, text in enumerate(distinct))
        where = {text: i for i, text in enumerate(distinct)}
        return out[torch.tensor([where[t] for t in texts], dtype=torch.long)]

    def _encode_missing(self, texts: list[str]) -> torch.Tensor:
        order = sorted(range(len(texts)), key=lambda i: (len(texts[i]), i))
        mine = [p for p in range(len(order)) if self.ranks.mine(p)]
        chunks = encode_text_batches(
            self.model,
            [texts[order[p]] for p in mine],
            self.batch_size,
            self.precision,
            self.progress,
        )
        local = torch.cat(chunks) if chunks else torch.zeros(0, 0)
        by_order = self.ranks.gather_rows(local, mine, len(texts), width=self.model.embed_dim)
        out = torch.empty_like(by_order)
        out[torch.tensor(order)] = by_order
        return out
