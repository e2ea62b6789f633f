"""Captioned images in WebDataset shards (img2dataset layout), captions by language.

A sample is ``KEY.jpg`` (or jpeg/png/webp) with ``KEY.json`` ``{"captions": {lang: [...]}}``,
or with ``KEY.txt`` whose language is ``KEY.json``'s ``LANGUAGE`` / ``language`` field (as in
LAION-2B-multi), else ``default_language`` (read by :func:`mclip.data.shards.decode_captions`).
Codes are normalised as for training (:func:`mclip.data.language_codes.normalise_language`:
``zh-Hant`` -> ``zh``, ``deu`` -> ``de``; an unknown code becomes ``und``).

Samples without an image (``missing_image``) or repeating a key (``duplicate_key``) are counted
and left out of both the images and the captions. Empty captions are dropped; following
:func:`~mclip.data.shards.decode_captions`, a sample left with no caption at all is counted once
as ``empty_caption`` (``missing_caption`` when it had none), and the image stays in the set.
"""

from __future__ import annotations

from typing import Iterator

from mclip.data.shards import SkipCounter, decode_captions, expand_shards, iter_raw_samples

from .base import Captions, ImageItem
from .codes import SHARDS, LanguageIndex
from .labelled_shards import sample_image, shard_fingerprint


class CaptionShardSet:
    """The images of a set of shards and their captions in each language."""

    def __init__(self, shards: str, default_language: str = "en", language_key: str = ""):
        self.spec = shards
        self.paths = expand_shards(shards, "caption shards")
        self.default_language, self.language_key = default_language, language_key
        self.description = f"shards '{shards}'"
        self._by_language: dict[str, tuple[list[str], list[str]]] | None = None
        self._caption_skips = SkipCounter()
        self._index: LanguageIndex | None = None

    def _samples(self, skipped: SkipCounter) -> Iterator[tuple[dict, bytes]]:
        seen: set[str] = set()
        for sample in iter_raw_samples(self.paths, skipped):
            data = sample_image(sample)
            if data is None:
                skipped["missing_image"] += 1
            elif sample["__key__"] in seen:
                skipped["duplicate_key"] += 1
            else:
                seen.add(sample["__key__"])
                yield sample, data

    def items(self, skipped: SkipCounter) -> Iterator[ImageItem]:
        """Every sample with an image, in shard order, as an ImageItem with ``data`` bytes."""
        for sample, data in self._samples(skipped):
            yield ImageItem(key=sample["__key__"], data=data)

    def fingerprint(self, state: bool = False) -> str:
        """A hash of the shard files' names and sizes (``state``: and their mtimes and ends)."""
        return shard_fingerprint(self.paths, extra="captions", state=state)

    def _scan(self) -> LanguageIndex:
        if self._index is None:
            by_code: dict[str, tuple[list[str], list[str]]] = {}
            for sample, _ in self._samples(self._caption_skips):
                found = decode_captions(
                    sample, self._caption_skips, self.default_language, self.language_key
                )
                for code, texts in found.items():  # "DE" and "de" are one language
                    keys, kept = by_code.setdefault(SHARDS.to_mclip(code), ([], []))
                    keys.extend([sample["__key__"]] * len(texts))
                    kept.extend(texts)
            self._index = LanguageIndex(by_code, SHARDS, self.description)
            self._by_language = by_code
        return self._index

    def languages(self) -> list[str]:
        """The mclip codes of every language with a caption in the shards (one pass), sorted."""
        return self._scan().languages()

    def captions(self, language: str) -> Captions:
        """Every non-empty caption in ``language``; ``skipped`` holds the counts of the pass
        that read the captions (all languages together)."""
        code = self._scan().lookup(language)
        keys, texts = self._by_language[code]  # type: ignore[index]
        return Captions(
            language=language,
            texts=list(texts),
            image_keys=list(keys),
            source=self.description,
            skipped=SkipCounter(self._caption_skips),
        )
