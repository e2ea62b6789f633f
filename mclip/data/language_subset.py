"""The data of one language's adapter: a fixed, seeded subset of that language's captions (with
their images) from shards, or of a parallel text file.

Two sources, told apart by the path (:func:`open_language_data`):

- **caption shards** (the training layout, :mod:`mclip.data.shards`): every caption in the
  language, over all given shards, is a candidate (a sample with three captions in it gives three);
  at most ``max_items`` of them are kept by reservoir sampling with ``random.Random(seed)``, so the
  subset depends only on the shards, their order and the seed. Images are decoded only for kept
  captions; a corrupt one drops its captions (counted).
- **parallel text** (``.tsv`` / ``.txt``): English source and translation pairs, as written
  by ``mclip data parallel`` (header ``source<TAB>translation<TAB>language``; the rows of the
  language) or one ``source<TAB>translation`` a line with no header; the same seeded subset of
  at most ``max_items`` pairs.

Every shard or line is read once; nothing is held beyond the kept subset.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from mclip.config import ConfigError
from mclip.data.parallel import HEADER, read_parallel_tsv
from mclip.data.shards import (
    DataError,
    SkipCounter,
    decode_captions,
    decode_image,
    expand_shards,
    image_bytes,
    iter_raw_samples,
)

PARALLEL_SUFFIXES = (".tsv", ".txt")


@dataclass
class CaptionSubset:
    """Captions of one language with their images.

    ``images``: distinct RGB PIL images; ``captions`` [M] strings; ``image_of`` [M]: the index in
    ``images`` of each caption's image; ``candidates``: captions in the language the data had;
    ``languages``: captions per language seen (the language's own included); ``skipped``: counts
    of unusable samples by reason.
    """

    language: str
    images: list[Image.Image]
    captions: list[str]
    image_of: list[int]
    candidates: int
    languages: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)


@dataclass
class ParallelSubset:
    """Pairs of an English ``sources`` [M] line and its ``translations`` [M] into ``language``;
    ``candidates``: usable pairs in the file; ``skipped``: lines dropped by reason."""

    language: str
    sources: list[str]
    translations: list[str]
    candidates: int
    skipped: dict[str, int] = field(default_factory=dict)


def reservoir(items, k: int, rng: random.Random) -> tuple[list, int]:
    """(a uniform sample of at most ``k`` of ``items`` in stream order, how many there were):
    Algorithm R, so each item is kept with probability k / n, drawn from ``rng``."""
    kept: list[tuple[int, object]] = []
    n = 0
    for n, item in enumerate(items, start=1):
        if len(kept) < k:
            kept.append((n, item))
        else:
            slot = rng.randrange(n)
            if slot < k:
                kept[slot] = (n, item)
    return [item for _, item in sorted(kept, key=lambda pair: pair[0])], n


def is_parallel_text(spec: str) -> bool:
    """Whether ``--data`` names a parallel text file (``.tsv`` / ``.txt``) rather than shards."""
    return Path(spec.strip()).suffix.lower() in PARALLEL_SUFFIXES


def open_language_data(
    spec: str, language: str, max_items: int, seed: int = 0, default_language: str = "en"
) -> CaptionSubset | ParallelSubset:
    """At most ``max_items`` training items in ``language`` from ``spec``: a parallel text file
    (:func:`read_parallel_subset`) or a shard spec (:func:`read_caption_subset`)."""
    if max_items < 1:
        raise ConfigError(f"--max-captions {max_items}: give at least 1 (default 500)")
    if is_parallel_text(spec):
        return read_parallel_subset(spec, language, max_items, seed)
    return read_caption_subset(spec, language, max_items, seed, default_language)


def read_caption_subset(
    spec: str, language: str, max_captions: int, seed: int = 0, default_language: str = "en"
) -> CaptionSubset:
    """The seeded subset of at most ``max_captions`` captions in ``language`` (an mclip code)
    from the shards of ``spec`` (brace pattern, glob, directory or comma-separated list), with
    their decoded images. Raises ConfigError when the shards hold no caption in ``language``."""
    shards = expand_shards(spec, key="--data")
    counter = SkipCounter()
    seen: Counter = Counter()

    def candidates():
        for sample in iter_raw_samples(shards, counter):
            captions = decode_captions(sample, counter, default_language)
            for lang, texts in captions.items():
                seen[lang] += len(texts)
            for text in captions.get(language, []):
                yield sample["__key__"], text, image_bytes(sample)

    kept, total = reservoir(candidates(), max_captions, random.Random(seed))
    if not total:
        found = ", ".join(f"{lang} {n}" for lang, n in seen.most_common(15)) or "none"
        raise ConfigError(
            f"--data '{spec}': no caption in '{language}' in {len(shards)} "
            f"shard(s) (captions by language: {found}); give shards with "
            f"'{language}' captions, or a parallel text file (.tsv: English "
            f"source<TAB>{language} translation)"
        )
    images: list[Image.Image] = []
    index: dict[str, int] = {}
    captions, image_of = [], []
    for key, text, data in kept:
        if key not in index:
            image = decode_image({"jpg": data} if data is not None else {}, counter)
            index[key] = len(images) if image is not None else -1
            if image is not None:
                images.append(image)
        if index[key] < 0:
            continue
        captions.append(text)
        image_of.append(index[key])
    if not captions:
        raise DataError(
            f"--data '{spec}': every image of the {len(kept)} '{language}' captions "
            f"drawn is unreadable (skipped: {dict(counter)}); check the shards"
        )
    return CaptionSubset(language, images, captions, image_of, total, dict(seen), dict(counter))


def read_parallel_subset(
    path: str | Path, language: str, max_pairs: int, seed: int = 0
) -> ParallelSubset:
    """The seeded subset of at most ``max_pairs`` (English source, translation) pairs into
    ``language`` from a UTF-8 parallel text file, in either layout:

    - with the header ``source<TAB>translation<TAB>language`` (what ``mclip data parallel``
      writes, :mod:`mclip.data.parallel`): the rows whose language is ``language``;
    - without it: every line ``source<TAB>translation`` is a pair into ``language``.

    Empty lines are ignored; lines with an empty field or the wrong number of fields are counted
    (``malformed_parallel_line``). Raises ConfigError when the file is missing or has no usable
    pair in ``language``.
    """
    path = Path(str(path).strip())
    if not path.is_file():
        raise ConfigError(
            f"--data '{path}': parallel text file does not exist; give a .tsv with "
            f"one 'English source<TAB>{language} translation' a line (or the "
            f"output of 'mclip data parallel'), or caption shards"
        )
    with open(path, encoding="utf-8", errors="replace") as f:
        first = f.readline().rstrip("\r\n")
    if first.split("\t") == HEADER.split("\t"):
        rows, skipped = read_parallel_tsv(path)
        found = Counter(lang for _, _, lang in rows)
        pairs = [(source, text) for source, text, lang in rows if lang == language]
        if not pairs:
            languages = ", ".join(f"{lang} {n}" for lang, n in found.most_common(15))
            raise ConfigError(
                f"--data '{path}': no pair into '{language}' (pairs by language: "
                f"{languages}); write one with 'mclip data parallel SHARDS --out "
                f"FILE --languages {language}'"
            )
        kept, total = reservoir(iter(pairs), max_pairs, random.Random(seed))
        return ParallelSubset(
            language, [s for s, _ in kept], [t for _, t in kept], total, dict(skipped)
        )
    skipped = Counter[str]()

    def two_columns():
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                line = line.rstrip("\n\r")
                if not line.strip():
                    continue
                fields = [part.strip() for part in line.split("\t")]
                if len(fields) != 2 or not all(fields):
                    skipped["malformed_parallel_line"] += 1
                    continue
                yield fields[0], fields[1]

    kept, total = reservoir(two_columns(), max_pairs, random.Random(seed))
    if not kept:
        raise ConfigError(
            f"--data '{path}': no usable line (each line: English source<TAB>"
            f"{language} translation; {skipped['malformed_parallel_line']} "
            f"malformed)"
        )
    return ParallelSubset(
        language, [s for s, _ in kept], [t for _, t in kept], total, dict(skipped)
    )
