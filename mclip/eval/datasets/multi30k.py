"""Multi30K test sets, as published in the multi30k/dataset repository (``data/task1``,
``data/task2``); give the task folder.

* Task 1 (translation): ``image_splits/{split}.txt`` lists the images, and
  ``raw/{split}.{lang}.gz`` holds one caption per image, line-aligned, for each language
  (``test_2016_flickr``: en de fr cs; ``test_2017_flickr``, ``test_2017_mscoco``: en de fr;
  ``test_2018_flickr``: en de fr cs). ``test_2017_mscoco`` lists COCO images as
  ``FILE.jpg#CAPTION_ID``: the key keeps the suffix, the file is ``FILE.jpg``.
* Task 2 (independent descriptions): ``image_splits/{split}_images.txt`` lists the images and
  ``raw/{split}.{i}.{lang}.gz`` (i = 1..5, en and de) holds caption i of image j on line j.

Images (Flickr30k, or COCO 2014 for the mscoco split) are in a folder the user gives.
Codes are ISO 639-1 already (:data:`~mclip.eval.datasets.codes.MULTI30K`).
"""

from __future__ import annotations

import abc

import re
from pathlib import Path

from mclip.config import ConfigError

from .base import Captions
from .codes import MULTI30K, LanguageIndex
from .listed import ListedImageSet, images_folder, line_aligned_captions, read_image_list
from .textfiles import find_file, strip_gz

TASK1_DEFAULT_SPLIT = "test_2016_flickr"
TASK2_DEFAULT_SPLIT = "test_2016"


def _splits(root: Path, suffix: str) -> list[str]:
    folder = root / "image_splits"
    names = [strip_gz(p.name) for p in folder.iterdir()] if folder.is_dir() else []
    return sorted(n[: -len(suffix)] for n in names if n.endswith(suffix))


def multi30k_task(root: str | Path) -> int | None:
    """1 or 2 when ``root`` is a Multi30K task folder (``image_splits/`` and ``raw/``), telling
    the tasks apart by their caption files (task 2 has ``{split}.{i}.{lang}``); else None."""
    root = Path(root)
    if not ((root / "image_splits").is_dir() and (root / "raw").is_dir()):
        return None
    task2 = re.compile(r"^[\w-]+\.\d\.[a-z]+(\.gz)?$")
    return 2 if any(task2.match(p.name) for p in (root / "raw").iterdir()) else 1


class _Multi30k(ListedImageSet, abc.ABC):
    task = 0
    list_suffix = ""

    def __init__(self, root: str | Path, images_dir: str | Path, split: str):
        self.root, self.split = Path(root), split
        what = f"Multi30K task {self.task} '{self.root}'"
        for sub in ("image_splits", "raw"):
            if not (self.root / sub).is_dir():
                raise ConfigError(
                    f"{what}: expected a '{sub}' folder in '{self.root}' (give the "
                    f"task folder of the multi30k dataset, e.g. "
                    f"data/task{self.task})"
                )
        try:
            self.list_file = find_file(
                self.root / "image_splits", f"{split}{self.list_suffix}", f"{what}, split '{split}'"
            )
        except ConfigError as error:
            splits = ", ".join(_splits(self.root, self.list_suffix)) or "none"
            raise ConfigError(f"{error}; splits there: {splits}") from None
        hint = "the COCO 2014 images" if "mscoco" in split else "the Flickr30k images"
        self._listed = read_image_list(self.list_file, what)
        super().__init__(
            images_folder(images_dir, what, hint),
            self._listed,
            f"Multi30K task {self.task} {split} '{self.root}'",
            file_of=lambda key: key.split("#", 1)[0],
        )
        self._what = what
        self._files = self._caption_files()
        if not self._files:
            raise ConfigError(
                f"{what}: no caption files for split '{split}' in "
                f"'{self.root / 'raw'}' (expected {self._pattern_text()})"
            )
        self.index = LanguageIndex(self._files, MULTI30K, f"'{self.root / 'raw'}' (split {split})")

    def _raw_files(self, pattern: str):
        """(match, path) for every file in ``raw/`` whose name matches ``pattern`` (a regex
        applied after ``{split}.``; a trailing ``.gz`` is allowed), in sorted order."""
        regex = re.compile(rf"^{re.escape(self.split)}\.{pattern}(\.gz)?$")
        for path in sorted((self.root / "raw").iterdir()):
            match = regex.match(path.name)
            if match:
                yield match, path

    @abc.abstractmethod
    def _caption_files(self) -> dict[str, list[Path]]:
        """{file language code: caption files of this split, in caption order}."""

    @abc.abstractmethod
    def _pattern_text(self) -> str:
        """The caption file names expected, for error messages."""

    def languages(self) -> list[str]:
        """The mclip codes of the languages with caption files for this split, sorted."""
        return self.index.languages()

    def captions(self, language: str) -> Captions:
        """Every non-empty caption in ``language``; empty ones are counted in ``skipped``."""
        files = self._files[self.index.lookup(language)]
        return line_aligned_captions(language, self._listed, self.list_file, files, self._what)


class Multi30kTask1(_Multi30k):
    """Multi30K task 1: one caption per image, line-aligned across languages."""

    task = 1
    list_suffix = ".txt"

    def __init__(self, root: str | Path, images_dir: str | Path, split: str = TASK1_DEFAULT_SPLIT):
        super().__init__(root, images_dir, split)

    def _caption_files(self) -> dict[str, list[Path]]:
        found: dict[str, list[Path]] = {}
        for match, path in self._raw_files(r"(?P<code>[A-Za-z-]+)"):
            found.setdefault(match["code"], [path])
        return found

    def _pattern_text(self) -> str:
        return f"'{self.split}.{{lang}}.gz'"


class Multi30kTask2(_Multi30k):
    """Multi30K task 2: several independent captions per image (file i holds caption i)."""

    task = 2
    list_suffix = "_images.txt"

    def __init__(self, root: str | Path, images_dir: str | Path, split: str = TASK2_DEFAULT_SPLIT):
        super().__init__(root, images_dir, split)

    def _caption_files(self) -> dict[str, list[Path]]:
        numbered: dict[str, dict[int, Path]] = {}
        for match, path in self._raw_files(r"(?P<i>\d+)\.(?P<code>[A-Za-z-]+)"):
            numbered.setdefault(match["code"], {}).setdefault(int(match["i"]), path)
        found = {}
        for code, files in numbered.items():
            expected = list(range(1, max(files) + 1))
            missing = [i for i in expected if i not in files]
            if missing:
                raise ConfigError(
                    f"{self._what}: caption file "
                    f"'{self.split}.{missing[0]}.{code}.gz' "
                    f"is missing from '{self.root / 'raw'}' (there are files up to "
                    f"{max(files)} for '{code}')"
                )
            found[code] = [files[i] for i in expected]
        return found

    def _pattern_text(self) -> str:
        return f"'{self.split}.{{1..5}}.{{lang}}.gz'"


def open_multi30k(root: str | Path, images_dir: str | Path, split: str | None = None) -> _Multi30k:
    """The Multi30K reader for the task folder ``root`` (task 1 or 2, told apart by its files),
    for ``split`` (default: test_2016_flickr for task 1, test_2016 for task 2)."""
    task = multi30k_task(root)
    if task is None:
        raise ConfigError(
            f"'{root}' is not a Multi30K task folder (expected 'image_splits/' and "
            f"'raw/' in it; give data/task1 or data/task2)"
        )
    if task == 1:
        return Multi30kTask1(root, images_dir, split or TASK1_DEFAULT_SPLIT)
    return Multi30kTask2(root, images_dir, split or TASK2_DEFAULT_SPLIT)
