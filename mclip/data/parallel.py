"""Parallel text for teacher learning: (English source, translation, language) triples.

The file format is a UTF-8 TSV with a header line ``source<TAB>translation<TAB>language``, one
pair per line (the layout Multilingual-CLIP's machine-translated caption sets are easily put
in). :func:`parallel_from_shards` makes such pairs from multilingual caption shards: the
captions of one image in two languages describe the same thing, so each non-source caption is
paired with a source-language caption of the same sample.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Callable

from mclip.data.language_codes import normalise_language
from mclip.data.shards import DataError, SkipCounter, decode_captions, iter_raw_samples
from mclip.outputs import write_text_atomically

HEADER = "source\ttranslation\tlanguage"


def read_parallel_tsv(path: str | Path) -> tuple[list[tuple[str, str, str]], dict[str, int]]:
    """(pairs, skipped) from a parallel TSV: pairs are (source, translation, language code);
    lines with an empty field or the wrong number of fields are skipped and counted."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"parallel text file '{path}' does not exist; write one with "
            f"'mclip data parallel SHARDS --out {path}' or give a TSV with the header "
            f"'{HEADER.expandtabs(1)}'"
        )
    lines = path.read_text("utf-8").splitlines()
    if not lines or lines[0].strip().split("\t") != HEADER.split("\t"):
        raise DataError(
            f"'{path}' does not start with the header line 'source<TAB>translation<TAB>language'"
        )
    pairs, skipped = [], SkipCounter()
    for line in lines[1:]:
        fields = line.split("\t")
        if len(fields) != 3 or not all(f.strip() for f in fields):
            skipped["malformed_parallel_line"] += 1
            continue
        source, translation, language = (f.strip() for f in fields)
        code = normalise_language(language)
        if code is None:
            skipped["unknown_language"] += 1
            continue
        pairs.append((source, translation, code))
    if not pairs:
        raise DataError(f"'{path}' holds no usable pair (skipped: {dict(skipped)})")
    return pairs, dict(skipped)


def parallel_from_shards(
    shards: list[str],
    source_language: str = "en",
    languages: list[str] | None = None,
    per_language: int = 1,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[tuple[str, str, str]], dict[str, int]]:
    """Pairs (source caption, caption in another language, language) from caption shards.

    For every sample with captions in ``source_language`` and other languages (``languages``,
    None: all), ``per_language`` captions of each other language are each paired with a random
    source caption of the same sample (seeded). Images are not decoded. Returns (pairs, skipped).
    """
    rng, counter, pairs = random.Random(seed), SkipCounter(), []
    allowed = set(languages or [])
    for sample in iter_raw_samples(shards, counter):
        captions = decode_captions(sample, counter)
        sources = captions.get(source_language)
        if not sources:
            counter["no_source_language_caption"] += 1
            continue
        for lang in sorted(captions):
            if lang == source_language or (allowed and lang not in allowed):
                continue
            for text in rng.sample(captions[lang], min(per_language, len(captions[lang]))):
                pairs.append((rng.choice(sources), text, lang))
        if progress is not None:
            progress(1)
    return pairs, dict(counter)


def write_parallel_tsv(pairs: list[tuple[str, str, str]], path: str | Path) -> Path:
    """Write pairs as a parallel TSV (tabs and newlines inside a text become spaces), whole or
    not at all (:mod:`mclip.outputs`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def clean(text: str) -> str:
        return " ".join(text.replace("\t", " ").split())

    rows = [HEADER] + ["\t".join(clean(f) for f in pair) for pair in pairs]
    return write_text_atomically(path, "\n".join(rows) + "\n")
