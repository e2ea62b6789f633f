"""Parallel sentences for text-only cross-lingual alignment (bitext retrieval).

Three layouts are read (:func:`open_bitext` tells them apart):

**Flores-200 / SIB-200 as MVL-SIB lays them out**: one folder per language named by its Flores-200
code, holding ``train.tsv``, ``dev.tsv``, ``test.tsv`` with the columns ``index_id``, ``category``,
``text`` (the topic-matching data of :mod:`mclip.eval.datasets.topics`; no images needed). The
sentences are translations of each other: ``index_id`` matches them across languages. All three
splits are read unless ``split`` names some.

**Tatoeba** (as distributed with LASER and XTREME): pairs of line-aligned files
``tatoeba.{xxx}-{yyy}.{xxx}`` and ``tatoeba.{xxx}-{yyy}.{yyy}`` (ISO 639-3 codes, usually ``yyy`` =
``eng``). Line ``i`` of one is the translation of line ``i`` of the other. Each pair has its own
pivot-side sentences, so a language is matched against the pivot file of its own pair.

**TSV**: rows ``id<TAB>language<TAB>sentence`` (mclip or ISO codes; an optional header row
``id  language  sentence``); sentences with the same ``id`` translate each other.

Codes become mclip codes: Flores codes by the explicit table, Tatoeba's and the TSV's by
:func:`~mclip.data.language_codes.normalise_language` (``deu`` -> ``de``, ``cmn`` -> ``zh``); a code
it does not know is kept as written. Bad rows are counted, never dropped silently: an empty
sentence (``empty_sentence``), a second sentence with an id already seen in that language
(``duplicate_id``), a row without its fields (``bad_row``); Tatoeba files of unequal length are an
error (the alignment is lost).
"""

from __future__ import annotations

import abc
import csv
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from mclip.config import ConfigError
from mclip.data.language_codes import normalise_language
from mclip.data.shards import SkipCounter

from .base import file_fingerprint
from .codes import FLORES, LanguageIndex
from .textfiles import find_file, read_lines, read_text, strip_gz
from .sib_layout import SIB_SPLITS, is_sib_language_folder, sib_languages_root, sib_rows

_TATOEBA = re.compile(r"^tatoeba\.(?P<src>[^.\-]+)-(?P<tgt>[^.\-]+)\.(?P<side>[^.]+)$")
BITEXT_LAYOUTS = """\
  - Flores-200 / SIB-200 as in MVL-SIB: {flores_code}/{train,dev,test}.tsv (columns index_id,
    category, text) under the path, its sib200/ or data/sib200/
  - Tatoeba: tatoeba.{xxx}-{yyy}.{xxx} and tatoeba.{xxx}-{yyy}.{yyy} (line-aligned) in a folder
  - a TSV of rows id<TAB>language<TAB>sentence"""


@dataclass
class Bitext:
    """Sentences of one language: ``texts[j]`` has the cross-language id ``ids[j]`` (ids are
    distinct). Rows dropped are counted in ``skipped`` by reason."""

    language: str
    ids: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    source: str = ""
    skipped: SkipCounter = field(default_factory=SkipCounter)
    _seen: set[str] = field(default_factory=set, init=False, repr=False)

    def add(self, sentence_id: str, text: str | None) -> None:
        """Keep one row unless its sentence is empty or its id was seen (counted)."""
        if not text or not text.strip():
            self.skipped["empty_sentence"] += 1
        elif sentence_id in self._seen:
            self.skipped["duplicate_id"] += 1
        else:
            self._seen.add(sentence_id)
            self.ids.append(sentence_id)
            self.texts.append(text.strip())


class BitextSet(abc.ABC):
    """Parallel sentences in several languages: ``pair(language, pivot)`` gives the two sides
    whose ids match; ``description`` and ``fingerprint()`` identify the data."""

    layout = ""
    description = ""

    @abc.abstractmethod
    def languages(self) -> list[str]:
        """Every mclip language code with sentences, sorted."""

    @abc.abstractmethod
    def pair(self, language: str, pivot: str) -> tuple[Bitext, Bitext]:
        """(sentences of ``language``, the ``pivot`` sentences they are matched against)."""

    @abc.abstractmethod
    def fingerprint(self) -> str:
        """A hash of the files read (names and sizes)."""


class FloresBitext(BitextSet):
    """Flores-200 sentences in SIB-200's files, matched by ``index_id``."""

    layout = "Flores-200 / SIB-200"

    def __init__(self, root: Path, split: str | Sequence[str] | None = None):
        self.root = root
        splits = [s.strip() for s in split.split(",")] if isinstance(split, str) else split
        self.splits = tuple(s for s in (splits or SIB_SPLITS) if s)
        unknown = [s for s in self.splits if s not in SIB_SPLITS]
        if unknown:
            raise ConfigError(
                f"bitext '{root}': unknown split(s) {', '.join(unknown)}; SIB-200 "
                f"has {', '.join(SIB_SPLITS)} (none given: all three)"
            )
        self._folders = {
            e.name: Path(e.path)
            for e in sorted(os.scandir(root), key=lambda e: e.name)
            if is_sib_language_folder(e.path)
        }
        self.index = LanguageIndex(self._folders, FLORES, f"Flores/SIB-200 folder '{root}'")
        self.description = f"Flores-200 sentences of SIB-200 in '{root}'"
        self._loaded: dict[str, Bitext] = {}

    def languages(self) -> list[str]:
        return self.index.languages()

    def sentences(self, language: str) -> Bitext:
        """Every sentence of ``language`` in the chosen splits, ids = ``index_id``."""
        if language not in self._loaded:
            folder = self._folders[self.index.lookup(language)]
            what = f"SIB-200 language folder '{folder}'"
            files = [find_file(folder, f"{split}.tsv", what) for split in self.splits]
            out = Bitext(language, source=", ".join(map(str, files)))
            for path in files:
                for row in sib_rows(path, what, out.skipped):
                    sentence_id = row["index_id"].strip()
                    if sentence_id:
                        out.add(sentence_id, row["text"])
                    else:
                        out.skipped["bad_row"] += 1
            self._loaded[language] = out
        return self._loaded[language]

    def pair(self, language: str, pivot: str) -> tuple[Bitext, Bitext]:
        return self.sentences(language), self.sentences(pivot)

    def fingerprint(self) -> str:
        files = [
            find_file(folder, f"{s}.tsv", "")
            for folder in self._folders.values()
            for s in self.splits
            if any((folder / f"{s}.tsv{gz}").is_file() for gz in ("", ".gz"))
        ]
        return file_fingerprint(self.root, files, extra=f"bitext:{','.join(self.splits)}")


def _code(code: str) -> str:
    return normalise_language(code) or code


class TatoebaBitext(BitextSet):
    """Tatoeba's line-aligned pair files; a language is matched within its own pair."""

    layout = "Tatoeba"

    def __init__(self, folder: Path):
        self.folder = folder
        self._pairs: dict[tuple[str, str], dict[str, Path]] = {}
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            match = _TATOEBA.match(strip_gz(entry.name))
            if match and match["side"] in (match["src"], match["tgt"]):
                sides = self._pairs.setdefault((match["src"], match["tgt"]), {})
                sides[match["side"]] = Path(entry.path)
        self._pairs = {k: v for k, v in self._pairs.items() if len(v) == 2}
        if not self._pairs:
            raise ConfigError(
                f"Tatoeba folder '{folder}' has no pair of files "
                f"tatoeba.xxx-yyy.xxx and tatoeba.xxx-yyy.yyy"
            )
        self.description = f"Tatoeba pairs in '{folder}'"

    def languages(self) -> list[str]:
        return sorted({_code(c) for pair in self._pairs for c in pair})

    def pair(self, language: str, pivot: str) -> tuple[Bitext, Bitext]:
        for (src, tgt), files in self._pairs.items():
            for own, other in ((src, tgt), (tgt, src)):
                if _code(own) == language and _code(other) == pivot:
                    return self._read(language, pivot, files[own], files[other])
        have = sorted(f"{_code(s)}-{_code(t)}" for s, t in self._pairs)
        raise ConfigError(
            f"{self.description}: no pair of '{language}' with the pivot '{pivot}' "
            f"(pairs: {', '.join(have)}); choose another --pivot"
        )

    @staticmethod
    def _read(language: str, pivot: str, own: Path, other: Path) -> tuple[Bitext, Bitext]:
        lines = [read_lines(path, f"Tatoeba file '{path}'") for path in (own, other)]
        if len(lines[0]) != len(lines[1]):
            raise ConfigError(
                f"Tatoeba files '{own}' ({len(lines[0])} lines) and '{other}' "
                f"({len(lines[1])} lines) are not line-aligned; fix or remove the "
                f"pair"
            )
        sides = Bitext(language, source=str(own)), Bitext(pivot, source=str(other))
        for side, side_lines in zip(sides, lines):
            for number, line in enumerate(side_lines, 1):
                side.add(str(number), line)
        return sides

    def fingerprint(self) -> str:
        files = [p for sides in self._pairs.values() for p in sides.values()]
        return file_fingerprint(self.folder, files, extra="bitext:tatoeba")


class TsvBitext(BitextSet):
    """Rows ``id<TAB>language<TAB>sentence``."""

    layout = "TSV"

    def __init__(self, path: Path):
        self.path = path
        what = f"bitext TSV '{path}'"
        self.by_language: dict[str, Bitext] = {}
        self.skipped = SkipCounter()
        rows = csv.reader(
            io.StringIO(read_text(path, what)), delimiter="\t", quoting=csv.QUOTE_NONE
        )
        for n, row in enumerate(rows):
            if n == 0 and [c.strip().lower() for c in row[:3]] == ["id", "language", "sentence"]:
                continue
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) < 3 or not row[0].strip() or not row[1].strip():
                self.skipped["bad_row"] += 1
                continue
            language = _code(row[1].strip())
            out = self.by_language.setdefault(language, Bitext(language, source=str(path)))
            out.add(row[0].strip(), "\t".join(row[2:]))
        if not self.by_language:
            raise ConfigError(f"{what} has no row id<TAB>language<TAB>sentence")
        self.description = f"bitext TSV '{path}'"

    def languages(self) -> list[str]:
        return sorted(self.by_language)

    def pair(self, language: str, pivot: str) -> tuple[Bitext, Bitext]:
        return self.by_language[language], self.by_language[pivot]

    def fingerprint(self) -> str:
        return file_fingerprint(self.path.parent, [self.path], extra="bitext:tsv")


def open_bitext(path: str | Path, split: str | Sequence[str] | None = None) -> BitextSet:
    """The bitext reader for ``path`` (see :data:`BITEXT_LAYOUTS`); ``split``: SIB-200 split(s)
    (Flores layout only). ConfigError listing the layouts when the path fits none."""
    path = Path(path)
    if path.is_file():
        if split:
            raise ConfigError(
                f"bitext '{path}': 'split' applies to the Flores/SIB-200 layout only; remove it"
            )
        return TsvBitext(path)
    if not path.is_dir():
        raise ConfigError(
            f"bitext sentences '{path}' do not exist; expected one of:\n{BITEXT_LAYOUTS}"
        )
    root = sib_languages_root(path)
    if root is not None:
        return FloresBitext(root, split)
    if any(_TATOEBA.match(strip_gz(name)) for name in os.listdir(path)):
        return TatoebaBitext(path)
    raise ConfigError(
        f"bitext sentences '{path}' fit no known layout; expected one of:\n{BITEXT_LAYOUTS}"
    )


def matched(query: Bitext, candidates: Bitext) -> tuple[list[int], list[int]]:
    """([index into ``query``], [index of its translation in ``candidates``]) for the query
    sentences whose id the candidates have."""
    where = {sentence_id: i for i, sentence_id in enumerate(candidates.ids)}
    pairs = [(i, where[sid]) for i, sid in enumerate(query.ids) if sid in where]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def all_skipped(sides: Iterable[Bitext]) -> int:
    """Rows dropped over ``sides``."""
    return sum(sum(side.skipped.values()) for side in sides)
