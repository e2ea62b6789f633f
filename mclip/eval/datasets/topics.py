"""Topic-matching data: a few images per topic, and sentences about the topics in many languages.

Two layouts are read (:func:`open_topics` tells them apart):

**MVL-SIB** (arXiv:2502.12852; the Hugging Face dataset ``WueNLP/mvl-sib``). The sentences are
SIB-200's: one folder per language named by its Flores-200 code, holding ``train.tsv``,
``dev.tsv`` and ``test.tsv`` with the columns ``index_id``, ``category`` (the topic) and ``text``.
The images are 10 per topic, all in one folder, named ``{topic}_{n}.jpg``
(``entertainment_0.jpg`` ... ``travel_9.jpg``). In the published repository the two sit at
``data/sib200/{flores_code}/`` and ``data/images/sib200/``; the path given may be the
repository root, its ``data`` folder, or the folder of language folders, and the images are
looked for at ``data/images/sib200``, ``images/sib200`` and ``images`` beside them (or given).
SIB-200 writes the topic ``science/technology`` where the image files say ``science``: the one
alias :data:`MVL_SIB_TOPIC_ALIASES` maps it. MVL-SIB uses every sentence of the three splits
(1004 per language); so does this reader unless ``split`` names some (``test``, ``dev,test``).
Flores-200 codes become mclip codes by the explicit table
:data:`~mclip.eval.datasets.codes.FLORES_200`; a code not in it is kept as written and listed
by :meth:`TopicSet.unmapped_codes`. ``index_id`` identifies a sentence across languages (the
sentences are translations of each other), which the text-only metric uses.

**Folder + TSV**: ``ROOT/<topic>/<image>`` (a folder of images per topic) and
``ROOT/sentences.tsv`` with rows ``topic<TAB>language<TAB>sentence`` (mclip language codes; an
optional header row ``topic  language  sentence``). The TSV may also be given as the path, with
the images in its folder or in ``images``.

Either layout's image folder may hold one sub-folder per topic or flat ``{topic}_{n}.{ext}``
files. Topics are the sorted topic names found in the images, and topic ``i`` is the ``i``-th;
a topic with no image is an error (nothing to match its sentences against). Bad rows never stop
a run and are never dropped silently: an empty sentence (``empty_sentence``), a topic with no
images (``unknown_topic``) and an SIB-200 row without the three columns (``bad_row``) are
counted in their language's :attr:`TopicSentences.skipped`; a TSV row whose language is not known
(no language: ``missing_language``; not three tab-separated fields: ``bad_row``) in
:attr:`TopicSet.skipped`.
"""

from __future__ import annotations

import abc
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from mclip.config import ConfigError
from mclip.data.shards import SkipCounter

from .base import ImageItem, file_fingerprint
from .codes import FLORES, CodeTable, LanguageIndex
from .imagefolder import IMAGE_EXTENSIONS
from .sib_layout import (
    SIB_SPLITS,
    is_sib_language_folder,
    mvl_sib_images,
    sib_languages_root,
    sib_rows,
)
from .textfiles import find_file, read_lines, strip_gz

TOPIC_TSV = "sentences.tsv"
MVL_SIB_TOPIC_ALIASES = {"science/technology": "science"}
TOPIC_TSV_CODES = CodeTable("topic TSV")
_FLAT_IMAGE = re.compile(r"^(?P<topic>.+)_(?P<n>\d+)$")

TOPIC_LAYOUTS = """\
  - MVL-SIB: {flores_code}/{train,dev,test}.tsv (columns index_id, category, text) under the path,
    its sib200/ or data/sib200/, with the images {topic}_{n}.jpg in data/images/sib200/,
    images/sib200/ or images/ (or give images)
  - a folder with one sub-folder of images per topic and sentences.tsv
    (rows topic<TAB>language<TAB>sentence), or that .tsv file itself"""


@dataclass
class TopicSentences:
    """The sentences of one language: ``texts[j]`` is about topic ``topics[j]`` (an index into
    :attr:`TopicSet.topics`); ``items[j]`` identifies the sentence across languages (MVL-SIB's
    ``index_id``) or is None where the data has no such id. Rows that were dropped are counted in
    ``skipped`` by reason."""

    language: str
    texts: list[str]
    topics: list[int]
    items: list[str | None]
    source: str = ""
    skipped: SkipCounter = field(default_factory=SkipCounter)


def topic_image_files(folder: Path, what: str) -> tuple[list[str], list[tuple[Path, int]]]:
    """(sorted topic names, [(image path, topic index)]) of an image folder holding one
    sub-folder per topic, or flat ``{topic}_{n}.{ext}`` files. Files are sorted within each topic
    (flat files by their number ``n``); ConfigError naming the folder when it fits neither."""
    if not folder.is_dir():
        raise ConfigError(
            f"{what}: images folder '{folder}' does not exist; it should hold a "
            f"folder of images per topic, or files named {{topic}}_{{n}}.jpg"
        )
    entries = sorted(os.scandir(folder), key=lambda e: e.name)
    subfolders = [e.name for e in entries if e.is_dir() and not e.name.startswith(".")]
    flat = [
        Path(e.path) for e in entries if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)
    ]
    if subfolders and not flat:
        files: list[tuple[Path, int]] = []
        for index, topic in enumerate(subfolders):
            found = [
                Path(directory) / name
                for directory, _, names in sorted(os.walk(folder / topic, followlinks=True))
                for name in sorted(names)
                if name.lower().endswith(IMAGE_EXTENSIONS)
            ]
            if not found:
                raise ConfigError(
                    f"{what}: topic folder '{folder / topic}' has no images "
                    f"({', '.join(IMAGE_EXTENSIONS)}); add its images or remove "
                    f"the folder"
                )
            files.extend((path, index) for path in found)
        return subfolders, files
    if flat:
        by_topic: dict[str, list[tuple[int, Path]]] = {}
        for path in flat:
            match = _FLAT_IMAGE.match(path.stem)
            if match is None:
                raise ConfigError(
                    f"{what}: image '{path}' is not named {{topic}}_{{n}}"
                    f"{path.suffix} (as MVL-SIB's 'science_3.jpg'); rename it or "
                    f"put the images in one folder per topic"
                )
            by_topic.setdefault(match["topic"], []).append((int(match["n"]), path))
        topics = sorted(by_topic)
        return topics, [
            (path, index)
            for index, topic in enumerate(topics)
            for _, path in sorted(by_topic[topic])
        ]
    raise ConfigError(
        f"{what}: images folder '{folder}' has neither topic sub-folders nor "
        f"images named {{topic}}_{{n}}.jpg"
    )


class TopicSet(abc.ABC):
    """Topics with their images (an :class:`~mclip.eval.datasets.base.ImageSet` whose items are
    labelled with the topic index) and sentences per language.

    Subclasses read the sentences; this class holds the images: ``topics`` (names, index order),
    ``images_dir``, ``description``, ``items()``, ``fingerprint()``.
    """

    layout = ""
    description: str  # what the data is, for messages (set by the subclass)
    index: LanguageIndex  # the data's language codes by mclip code (set by the subclass)

    def __init__(self, images_dir: Path, what: str):
        self.images_dir = images_dir
        self.topics, self._files = topic_image_files(images_dir, what)
        self._topic_index = {name: i for i, name in enumerate(self.topics)}
        self.skipped = SkipCounter()
        """Rows dropped before their language is known (a TSV row with no language)."""

    def items(self, skipped: SkipCounter) -> Iterator[ImageItem]:
        """Every topic image as an ImageItem: ``key`` its path relative to the images folder,
        ``label`` its topic index; topics in index order, files sorted within each."""
        for path, label in self._files:
            yield ImageItem(
                key=path.relative_to(self.images_dir).as_posix(), path=path, label=label
            )

    def fingerprint(self, state: bool = False) -> str:
        """A hash of the topic names and the image files' relative names and sizes (``state``:
        and their mtimes and contents)."""
        return file_fingerprint(
            self.images_dir,
            [path for path, _ in self._files],
            extra="\n".join(self.topics),
            state=state,
        )

    def topic_of(self, name: str) -> int | None:
        """The index of topic ``name`` (white space stripped, aliases applied), or None."""
        name = name.strip()
        name = self.aliases().get(name, name)
        return self._topic_index.get(name)

    def aliases(self) -> dict[str, str]:
        """Topic names the sentences use for an image topic of another name."""
        return {}

    @abc.abstractmethod
    def languages(self) -> list[str]:
        """The mclip codes of the languages that have sentences, sorted."""

    @abc.abstractmethod
    def sentences(self, language: str) -> TopicSentences:
        """Every usable sentence in ``language`` (mclip code) with its topic index."""

    def source_code(self, language: str) -> str:
        """The code the data writes for the mclip code ``language``."""
        return self.index.lookup(language)

    def unmapped_codes(self) -> list[str]:
        """Codes of the data that mclip's tables do not know (kept as written), sorted."""
        return []


class MvlSibTopics(TopicSet):
    """MVL-SIB / SIB-200: Flores-coded language folders of split TSVs, and the topic images."""

    layout = "MVL-SIB"

    def __init__(
        self,
        languages_root: str | Path,
        images_dir: str | Path,
        split: str | Sequence[str] | None = None,
    ):
        self.root = Path(languages_root)
        what = f"MVL-SIB '{self.root}'"
        if isinstance(split, str):
            split = [s.strip() for s in split.split(",") if s.strip()]
        self.splits = tuple(split) if split else SIB_SPLITS
        unknown = [s for s in self.splits if s not in SIB_SPLITS]
        if unknown:
            raise ConfigError(
                f"{what}: unknown split(s) {', '.join(unknown)}; SIB-200 has "
                f"{', '.join(SIB_SPLITS)} (none given: all three, as MVL-SIB)"
            )
        self._folders = {
            entry.name: Path(entry.path)
            for entry in sorted(os.scandir(self.root), key=lambda e: e.name)
            if is_sib_language_folder(entry.path)
        }
        if not self._folders:
            raise ConfigError(
                f"{what}: no language folder {{flores_code}}/ with "
                f"{'/'.join(f'{s}.tsv' for s in SIB_SPLITS)} in '{self.root}'"
            )
        self.index = LanguageIndex(self._folders, FLORES, f"MVL-SIB folder '{self.root}'")
        super().__init__(Path(images_dir), what)
        self.description = f"MVL-SIB '{self.root}' (images '{self.images_dir}')"
        self._loaded: dict[str, TopicSentences] = {}

    def aliases(self) -> dict[str, str]:
        """SIB-200's ``science/technology`` is MVL-SIB's image topic ``science``."""
        return MVL_SIB_TOPIC_ALIASES

    def languages(self) -> list[str]:
        """The mclip codes of the language folders (Flores codes mapped), sorted."""
        return self.index.languages()

    def unmapped_codes(self) -> list[str]:
        """Flores codes of language folders that are not in the Flores-200 table."""
        return sorted(code for code in self._folders if not FLORES.knows(code))

    def sentences(self, language: str) -> TopicSentences:
        """The sentences of the chosen splits, in split order then file order; ``items`` are the
        ``index_id`` values."""
        if language not in self._loaded:
            folder = self._folders[self.index.lookup(language)]
            what = f"MVL-SIB language folder '{folder}'"
            files = [find_file(folder, f"{split}.tsv", what) for split in self.splits]
            out = TopicSentences(language, [], [], [], ", ".join(map(str, files)))
            for path in files:
                for row in sib_rows(path, what, out.skipped):
                    _add_sentence(
                        self, out, row["category"], row["text"], row["index_id"].strip() or None
                    )
            self._loaded[language] = out
        return self._loaded[language]


class TsvTopics(TopicSet):
    """A folder of images per topic and a TSV ``topic<TAB>language<TAB>sentence``."""

    layout = "folder + TSV"

    def __init__(self, tsv: str | Path, images_dir: str | Path | None = None):
        self.tsv = Path(tsv)
        what = f"topic sentences '{self.tsv}'"
        lines = read_lines(self.tsv, what)
        super().__init__(Path(images_dir) if images_dir is not None else self.tsv.parent, what)
        self.description = f"topic folders '{self.images_dir}'"
        by_code: dict[str, list[tuple[str, str]]] = {}
        bad_rows = 0
        for number, line in enumerate(lines):
            if not line.strip():
                continue  # a blank line is no row
            parts = line.split("\t", 2)
            if number == 0 and [p.strip().lower() for p in parts] == [
                "topic",
                "language",
                "sentence",
            ]:
                continue  # the optional header
            if len(parts) != 3:
                bad_rows += 1
                continue
            topic, code, text = parts
            if not code.strip():
                self.skipped["missing_language"] += 1
                continue
            by_code.setdefault(code.strip(), []).append((topic, text))
        if bad_rows:
            self.skipped["bad_row"] += bad_rows
        if not by_code:
            raise ConfigError(
                f"{what} has no row 'topic<TAB>language<TAB>sentence' "
                f"(skipped: {dict(self.skipped) or 'none'})"
            )
        self.index = LanguageIndex(by_code, TOPIC_TSV_CODES, f"'{self.tsv}'")
        self._rows = by_code
        self._loaded: dict[str, TopicSentences] = {}
        known = {t for rows in by_code.values() for t, _ in rows if self.topic_of(t) is not None}
        if not known:
            named = sorted({t.strip() for rows in by_code.values() for t, _ in rows})
            raise ConfigError(
                f"{what}: no row names a topic of the images folder "
                f"'{self.images_dir}' (its topics: {', '.join(self.topics)}; the "
                f"rows name: {', '.join(named[:20])}); topic names must match the "
                f"folder names"
            )

    def languages(self) -> list[str]:
        """The mclip codes (lower-cased) of the TSV's languages, sorted."""
        return self.index.languages()

    def sentences(self, language: str) -> TopicSentences:
        """The sentences of ``language`` in file order (no cross-language ids: ``items`` None)."""
        if language not in self._loaded:
            out = TopicSentences(language, [], [], [], str(self.tsv))
            for topic, text in self._rows[self.index.lookup(language)]:
                _add_sentence(self, out, topic, text, None)
            self._loaded[language] = out
        return self._loaded[language]


def _add_sentence(
    topic_set: TopicSet, out: TopicSentences, topic: str, text: str | None, item: str | None
) -> None:
    if not text or not text.strip():
        out.skipped["empty_sentence"] += 1
        return
    index = topic_set.topic_of(topic or "")
    if index is None:
        out.skipped["unknown_topic"] += 1
        return
    out.texts.append(text.strip())
    out.topics.append(index)
    out.items.append(item)


def open_topics(
    path: str | Path, images: str | Path | None = None, split: str | Sequence[str] | None = None
) -> TopicSet:
    """The topic-matching reader for ``path`` (see :data:`TOPIC_LAYOUTS`).

    ``images``: the images folder (default: found beside the sentences). ``split``: SIB-200
    split(s) to read (MVL-SIB only; default all three). ConfigError listing the layouts when the
    path fits neither.
    """
    path = Path(path)
    images_dir = Path(images) if images else None
    if path.is_file() or (not path.exists() and strip_gz(path.name).endswith(".tsv")):
        if split:
            raise ConfigError(
                f"topic sentences '{path}': 'split' applies to the MVL-SIB layout only; remove it"
            )
        return TsvTopics(path, images_dir)
    if not path.is_dir():
        raise ConfigError(
            f"topic sentences '{path}' do not exist; expected one of:\n{TOPIC_LAYOUTS}"
        )
    for name in (TOPIC_TSV, f"{TOPIC_TSV}.gz"):
        if (path / name).is_file():
            if split:
                raise ConfigError(
                    f"topic folder '{path}': 'split' applies to the MVL-SIB layout only; remove it"
                )
            return TsvTopics(path / name, images_dir or path)
    root = sib_languages_root(path)
    if root is not None:
        if images_dir is None:
            images_dir = mvl_sib_images(path, root)
            if images_dir is None:
                raise ConfigError(
                    f"MVL-SIB '{root}': no images folder found (looked for "
                    f"data/images/sib200, images/sib200 and images under '{path}' "
                    f"and beside '{root}'); give images: the folder of "
                    f"{{topic}}_{{n}}.jpg"
                )
        elif (images_dir / "sib200").is_dir():
            images_dir = images_dir / "sib200"  # the repository's data/images given
        return MvlSibTopics(root, images_dir, split)
    raise ConfigError(
        f"topic sentences '{path}' fit no known layout; expected one of:\n{TOPIC_LAYOUTS}"
    )
