"""The task objects every evaluation reader yields, whatever format it reads.

A reader turns a published layout (an ImageFolder tree, CLIP_benchmark class-text files,
Babel-ImageNet labels, Multi30K / XTD10 caption files, XM3600 jsonl, ...) into these objects;
the suite runner only ever sees them. Images are described, not decoded: an :class:`ImageSet`
yields :class:`ImageItem` records whose bytes are read when the runner embeds them, once per
image set and model, whatever number of languages and tasks use them.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Protocol, Sequence

from PIL import Image

from mclip.data.shards import SkipCounter


@dataclass
class ImageItem:
    """One image of an evaluation set.

    ``key`` is unique within its set (a relative file path or a shard sample key) and is how
    labels and captions refer to the image. ``path`` or ``data`` (encoded bytes) holds the image.
    ``label`` is the class index for classification sets (None otherwise).
    """

    key: str
    path: Path | None = None
    data: bytes | None = None
    label: int | None = None

    def open(self) -> Image.Image:
        """The decoded RGB image; raises OSError / PIL errors when unreadable."""
        source = self.path if self.path is not None else io.BytesIO(self.data or b"")
        with Image.open(source) as image:
            image.load()
            return image.convert("RGB")


class ImageSet(Protocol):
    """A fixed, ordered collection of images (the unit that is embedded once per model)."""

    description: str
    """Where the images come from, for messages (e.g. "ImageFolder '/data/imagenet/val'")."""

    def items(self, skipped: SkipCounter) -> Iterator[ImageItem]:
        """Every image in a fixed order; unreadable entries are counted in ``skipped``."""
        ...

    def fingerprint(self, state: bool = False) -> str:
        """A short hash of what the set contains: its files' names and sizes, equal for two
        copies of one data set (``results.json`` records it). With ``state`` also each file's
        modification time and a hash of its first and last MiB (:func:`file_state`): the key of
        the embedding cache, which changes whenever a file is rewritten."""
        ...


@dataclass
class ClassTexts:
    """Class names and prompt templates of one classification dataset in one language.

    ``names[i]`` is the name of class i, or None where the language has no translation (that
    class and its images are then left out for this language). Templates hold ``{c}`` or ``{}``
    where the name goes; a template list of ``["{}"]`` means "the bare label".
    """

    language: str
    names: list[str | None]
    templates: list[str]
    source: str = ""

    def kept_classes(self) -> list[int]:
        """The indices of the classes this language has a name for (the classes it is scored on)."""
        return [i for i, name in enumerate(self.names) if name is not None]


@dataclass
class Captions:
    """The captions of a retrieval set in one language: ``texts[j]`` describes the image whose
    key is ``image_keys[j]`` (an image may have several captions, or none).

    Empty captions are never in ``texts``: readers drop them and count them in ``skipped``
    (``skipped["empty_caption"]``), so a report can say how many were dropped.
    """

    language: str
    texts: list[str]
    image_keys: list[str]
    source: str = ""
    skipped: SkipCounter = field(default_factory=SkipCounter)


class ClassTextSource(Protocol):
    """A file or folder of class names and templates in several languages."""

    description: str

    def languages(self) -> list[str]:
        """The mclip language codes (lowercase ISO 639-1 where one exists) available, sorted."""
        ...

    def datasets(self) -> list[str]:
        """The dataset names this source has class names for, sorted."""
        ...

    def load(self, language: str, dataset: str | None = None) -> ClassTexts:
        """The class names and templates of ``dataset`` in ``language`` (mclip code)."""
        ...


class RetrievalSet(ImageSet, Protocol):
    """An image set with captions in one or more languages."""

    def languages(self) -> list[str]:
        """The mclip language codes that have captions, sorted."""
        ...

    def captions(self, language: str) -> Captions:
        """Every non-empty caption in ``language``, each with the key of the image it describes."""
        ...


# bytes hashed at each end of a file for the cache key: all of an image, the ends of a shard
STATE_SAMPLE_BYTES = 1 << 20


def file_state(path: Path) -> str:
    """What changes when a file is rewritten: its modification time (ns) and a BLAKE2b hash of
    its first and last ``STATE_SAMPLE_BYTES`` (the whole file when smaller than twice that)."""
    digest = hashlib.blake2b(digest_size=16)
    with path.open("rb") as handle:
        stat = os.fstat(handle.fileno())
        digest.update(handle.read(STATE_SAMPLE_BYTES))
        if stat.st_size > STATE_SAMPLE_BYTES:
            handle.seek(max(STATE_SAMPLE_BYTES, stat.st_size - STATE_SAMPLE_BYTES))
            digest.update(handle.read())
    return f"{stat.st_mtime_ns}:{digest.hexdigest()}"


def file_fingerprint(
    root: Path, paths: Sequence[Path], extra: str = "", state: bool = False
) -> str:
    """A hash of file names (relative to ``root``) and sizes, not contents: cheap on 100k files,
    and equal for two copies of one data set on different machines. ``state`` adds each file's
    :func:`file_state` (mtime and a hash of its ends: reads up to 2 MiB a file)."""
    return listed_fingerprint(
        root, [path.relative_to(root).as_posix() for path in paths], extra, state
    )


def listed_fingerprint(
    root: Path, names: Sequence[str], extra: str = "", state: bool = False
) -> str:
    """A hash of listed file names and their sizes under ``root`` (-1 for a missing file), for
    image lists whose files may be partly absent; ``state`` as in :func:`file_fingerprint`."""
    digest = hashlib.sha256(extra.encode())
    for name in names:
        path = root / name
        found = path.is_file()
        digest.update(f"{name}\0{path.stat().st_size if found else -1}".encode())
        if state and found:
            digest.update(f"\0{file_state(path)}".encode())
        digest.update(b"\n")
    return digest.hexdigest()[:16]
