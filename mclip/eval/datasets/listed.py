"""Retrieval sets whose images are named in a list and live in a folder the user gives.

Shared by the file-based caption formats (Multi30K, XTD10, XM3600, Babel-ImageNet retrieval
JSON, CSV). A listed image that is missing or unreadable is still yielded (with a path that may
not exist): the consumer counts it when it fails to open, so one absent file never stops a run.
An image listed twice is one image; its captions all refer to it.

Captions: surrounding white space is stripped, and an empty caption is dropped and counted as
``empty_caption`` in :attr:`Captions.skipped <mclip.eval.datasets.base.Captions.skipped>`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from mclip.config import ConfigError
from mclip.data.shards import SkipCounter

from .base import Captions, ImageItem, listed_fingerprint
from .textfiles import read_lines


def images_folder(images_dir: str | Path | None, what: str, hint: str) -> Path:
    """``images_dir`` as a Path; ConfigError when it is not given or is not a folder. ``hint``
    says which images belong there (e.g. "the Flickr30k images")."""
    if images_dir is None:
        raise ConfigError(f"{what} needs the folder of its images ({hint}): pass images_dir")
    path = Path(images_dir)
    if not path.is_dir():
        raise ConfigError(f"{what}: images folder '{path}' does not exist (it should hold {hint})")
    return path


def read_image_list(path: Path, what: str) -> list[str]:
    """The image names of a list file, one a line; trailing blank lines are ignored and a blank
    line inside the list is a ConfigError naming the file and line."""
    lines = [line.strip() for line in read_lines(path, what)]
    while lines and not lines[-1]:
        lines.pop()
    for number, line in enumerate(lines, 1):
        if not line:
            raise ConfigError(
                f"{what}: image list '{path}' has an empty line {number}; every line "
                f"must name an image"
            )
    if not lines:
        raise ConfigError(f"{what}: image list '{path}' is empty")
    return lines


def collect_captions(language: str, pairs: Iterable[tuple[str, object]], source: str) -> Captions:
    """Captions from (image key, caption) pairs; a caption that is not a string or is empty after
    stripping is dropped and counted (``bad_caption`` / ``empty_caption``)."""
    captions = Captions(language=language, texts=[], image_keys=[], source=source)
    for key, text in pairs:
        if not isinstance(text, str):
            captions.skipped["bad_caption"] += 1
        elif not text.strip():
            captions.skipped["empty_caption"] += 1
        else:
            captions.texts.append(text.strip())
            captions.image_keys.append(key)
    return captions


def line_aligned_captions(
    language: str, keys: Sequence[str], list_file: Path, caption_files: Sequence[Path], what: str
) -> Captions:
    """Captions from files line-aligned with the image list: line j of each file describes image
    ``keys[j]``. Each file must have exactly ``len(keys)`` lines, else a ConfigError names both
    files and both counts. Captions are ordered image by image, files in the given order."""
    columns = []
    for path in caption_files:
        lines = read_lines(path, what)
        if len(lines) != len(keys):
            raise ConfigError(
                f"{what}: caption file '{path}' has {len(lines)} lines but "
                f"image list "
                f"'{list_file}' has {len(keys)}; they must be line-aligned"
            )
        columns.append(lines)
    pairs = ((key, column[j]) for j, key in enumerate(keys) for column in columns)
    return collect_captions(language, pairs, ", ".join(str(p) for p in caption_files))


class ListedImageSet:
    """An ImageSet of listed images in ``images_dir``; ``file_of(key)`` is the file of a key,
    relative to ``images_dir`` (the key itself by default)."""

    def __init__(
        self,
        images_dir: Path,
        keys: Sequence[str],
        description: str,
        file_of: Callable[[str], str] | None = None,
    ):
        self.images_dir = images_dir
        self.keys: list[str] = list(dict.fromkeys(keys))
        self.description = description
        self._file_of = file_of or (lambda key: key)

    def items(self, skipped: SkipCounter) -> Iterator[ImageItem]:
        """Every listed image once, in list order, as an ImageItem with ``path`` (which may not
        exist: the consumer counts it when it cannot open it)."""
        for key in self.keys:
            yield ImageItem(key=key, path=self.images_dir / self._file_of(key))

    def fingerprint(self, state: bool = False) -> str:
        """A hash of the listed files' names and sizes (-1 for the missing ones; ``state``: and
        the others' mtimes and contents)."""
        return listed_fingerprint(
            self.images_dir, [self._file_of(k) for k in self.keys], state=state
        )
