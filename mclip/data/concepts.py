"""How often the training captions mention each class name, per language (``mclip data concepts``).

Zero-shot accuracy on a class follows how often its concept appears in the training data
("No 'Zero-Shot' Without Exponential Data", arXiv:2404.04125). This module counts, per language,
the training captions that mention each class name, so the evaluator can report recall by
training frequency (:mod:`mclip.eval.concept_frequency`).

Matching, after Unicode case folding of both sides:

* spaced scripts: the name's words (runs of letters, digits and combining marks, so Devanagari
  or vowelled Arabic words stay whole) must appear as consecutive words of the caption (a
  word-boundary match; punctuation between the words is ignored, so ``t-shirt`` matches
  ``T shirt``); both sides are NFC-normalised first;
* unspaced scripts (:data:`UNSPACED`: Chinese, Japanese, Thai, Lao, Khmer, Burmese, Tibetan,
  Dzongkha): the name as a substring.

A caption counts once per class it mentions; two classes with one name both count it. Captions
are read as training reads them (:func:`~mclip.data.shards.decode_captions`, the same language
rules); their language must be one the class texts have. The counts are kept per shard with the
shard's stamp, so a run continued with the same ``--out`` skips the shards already counted (a
rewritten shard is counted again).
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Callable

from mclip.data.remote import shard_identity, shard_stamp
from mclip.data.shards import SkipCounter, decode_captions, iter_raw_samples
from mclip.outputs import write_text_atomically

CONCEPTS_VERSION = 1
UNSPACED = frozenset({"zh", "zh-hant", "yue", "ja", "th", "lo", "km", "my", "bo", "dz"})


@functools.lru_cache(maxsize=1)
def _word_pattern() -> re.Pattern:
    """Runs of ``\\w`` and combining marks (categories Mn, Mc, Me, which ``\\w`` leaves out)."""
    marks, start, previous = ["\\U000e0100-\\U000e01ef"], None, None  # + variation selectors
    for code in range(0x20000):  # beyond the first two planes only those selectors are marks
        if unicodedata.category(chr(code)).startswith("M"):
            if start is None:
                start = code
            previous = code
        elif start is not None:
            marks.append(f"\\U{start:08x}-\\U{previous:08x}")
            start = None
    return re.compile(f"[\\w{''.join(marks)}]+")


def words(text: str) -> list[str]:
    """The case-folded, NFC-normalised words of ``text`` (letters, digits and combining marks)."""
    return _word_pattern().findall(unicodedata.normalize("NFC", text).casefold())


class NameMatcher:
    """The class names of one language, matched in captions (rules in the module docstring).

    ``names[i]``: class i's name (None: the language has none; never matched)."""

    def __init__(self, language: str, names: list[str | None]):
        self.spaced = language not in UNSPACED
        self.n_classes = len(names)
        self._by_words: dict[tuple[str, ...], list[int]] = {}
        self._substrings: dict[str, list[int]] = {}
        for index, name in enumerate(names):
            if not name or not name.strip():
                continue
            folded = unicodedata.normalize("NFC", name).casefold()
            if self.spaced:
                parts = tuple(words(name))
                if parts:
                    self._by_words.setdefault(parts, []).append(index)
            else:
                self._substrings.setdefault(folded.strip(), []).append(index)
        self._lengths = sorted({len(w) for w in self._by_words})

    def classes_in(self, caption: str) -> set[int]:
        """The classes whose name ``caption`` mentions."""
        found: set[int] = set()
        if not self.spaced:
            folded = unicodedata.normalize("NFC", caption).casefold()
            for name, classes in self._substrings.items():
                if name in folded:
                    found.update(classes)
            return found
        tokens = words(caption)
        for n in self._lengths:
            for start in range(len(tokens) - n + 1):
                hits = self._by_words.get(tuple(tokens[start : start + n]))
                if hits:
                    found.update(hits)
        return found


def count_shard(
    shard: str,
    matchers: dict[str, NameMatcher],
    skipped: SkipCounter,
    default_language: str = "en",
    language_key: str = "",
) -> dict:
    """One shard's counts: {"captions": {lang: captions read}, "counts": {lang: {class: n}},
    "other_languages": {lang: captions}} (captions in languages the class texts do not have,
    counted, not matched); unreadable samples are counted in ``skipped``."""
    captions, other = Counter[str](), Counter[str]()
    counts: dict[str, Counter] = {lang: Counter() for lang in matchers}
    for sample in iter_raw_samples([shard], skipped):
        for lang, texts in decode_captions(sample, skipped, default_language, language_key).items():
            matcher = matchers.get(lang)
            if matcher is None:
                other[lang] += len(texts)
                continue
            captions[lang] += len(texts)
            for text in texts:
                counts[lang].update(matcher.classes_in(text))
    return {
        "captions": dict(captions),
        "counts": {
            lang: {str(k): v for k, v in sorted(c.items())} for lang, c in counts.items() if c
        },
        "other_languages": dict(other),
    }


def _totals(names: dict[str, list[str | None]], shards: dict) -> dict:
    out = {}
    for lang, class_names in names.items():
        counts = [0] * len(class_names)
        captions = 0
        for entry in shards.values():
            captions += entry["captions"].get(lang, 0)
            for index, n in entry["counts"].get(lang, {}).items():
                counts[int(index)] += n
        out[lang] = {"captions": captions, "names": class_names, "counts": counts}
    return out


def load_counts(path: str | Path) -> dict:
    """A counts file written by :func:`count_concepts` ({} when ``path`` does not exist)."""
    path = Path(path)
    if not path.exists():
        return {}
    return json.loads(path.read_text("utf-8"))


def _document(source: str, names: dict, shards: dict) -> dict:
    skipped: Counter = Counter()
    other: Counter = Counter()
    for entry in shards.values():
        skipped.update(entry.get("skipped", {}))
        other.update(entry.get("other_languages", {}))
    return {
        "version": CONCEPTS_VERSION,
        "source": source,
        "languages": _totals(names, shards),
        "other_languages": dict(other),
        "shards": shards,
        "skipped": dict(skipped),
    }


def count_concepts(
    shards: list[str],
    names: dict[str, list[str | None]],
    out: str | Path,
    source: str = "",
    default_language: str = "en",
    language_key: str = "",
    progress: Callable[[str, bool], None] | None = None,
) -> dict:
    """Count class-name mentions over ``shards`` into ``out`` (JSON), resuming from it.

    ``names``: {language: class names, index = class}. ``source`` describes where the names came
    from; a file written for other names or another source is replaced, not resumed.
    ``progress(shard, counted)`` after each shard (``counted`` False when the file already had
    it). The file: {"version", "source", "languages": {lang: {"captions", "names", "counts": [n
    per class]}}, "other_languages": {lang: captions without class texts}, "shards": {shard:
    {"path", "stamp", "captions", "counts", "other_languages", "skipped"}}, "skipped"}; written
    after every shard, whole or not at all. Returns it.
    """
    previous = load_counts(out)
    if (
        previous.get("version") != CONCEPTS_VERSION
        or previous.get("source") != source
        or any(
            previous.get("languages", {}).get(lang, {}).get("names") != class_names
            for lang, class_names in names.items()
        )
    ):
        previous = {}
    done = previous.get("shards", {})
    matchers = {lang: NameMatcher(lang, class_names) for lang, class_names in names.items()}
    kept: dict = {}
    for shard in shards:
        try:
            stamp = shard_stamp(shard)
        except OSError:  # unreadable: counted as such while reading, never taken as done
            stamp = {}
        entry = done.get(shard)
        if entry is not None and stamp and entry.get("stamp") == stamp:
            kept[shard] = entry
            if progress is not None:
                progress(shard, False)
            continue
        skipped = SkipCounter()
        kept[shard] = {
            "path": shard_identity(shard),
            "stamp": stamp,
            **count_shard(shard, matchers, skipped, default_language, language_key),
            "skipped": dict(skipped),
        }
        write_text_atomically(out, json.dumps(_document(source, names, kept), ensure_ascii=False))
        if progress is not None:
            progress(shard, True)
    document = _document(source, names, kept)
    write_text_atomically(out, json.dumps(document, ensure_ascii=False))
    return document
