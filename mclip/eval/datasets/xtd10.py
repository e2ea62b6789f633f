"""XTD10: 1000 COCO images with one caption each in 11 languages.

The folder holds ``test_image_names.txt`` (the image file names, one a line) and
``test_1kcaptions_{lang}.txt`` line-aligned with it, for en de fr es it ko pl ru tr zh jp.
XTD10 names Japanese ``jp``; mclip calls it ``ja`` (:data:`~mclip.eval.datasets.codes.XTD10`).
The images are COCO ``train2014`` files, in a folder the user gives.
"""

from __future__ import annotations

import re
from pathlib import Path

from mclip.config import ConfigError

from .base import Captions
from .codes import XTD10, LanguageIndex
from .listed import ListedImageSet, images_folder, line_aligned_captions, read_image_list
from .textfiles import find_file

IMAGE_LIST = "test_image_names.txt"
_CAPTIONS = re.compile(r"^test_1kcaptions_(?P<code>[A-Za-z-]+)\.txt(\.gz)?$")


def is_xtd10_folder(path: str | Path) -> bool:
    """True when ``path`` is a folder holding ``test_image_names.txt`` (or its .gz)."""
    path = Path(path)
    return (path / IMAGE_LIST).is_file() or (path / f"{IMAGE_LIST}.gz").is_file()


class XTD10Set(ListedImageSet):
    """The XTD10 images (COCO train2014 files in ``images_dir``) and their captions."""

    def __init__(self, root: str | Path, images_dir: str | Path):
        self.root = Path(root)
        self._what = f"XTD10 '{self.root}'"
        self.list_file = find_file(self.root, IMAGE_LIST, self._what)
        self._listed = read_image_list(self.list_file, self._what)
        super().__init__(
            images_folder(images_dir, self._what, "the COCO train2014 images"),
            self._listed,
            f"XTD10 '{self.root}'",
        )
        self._files: dict[str, Path] = {}
        for path in sorted(self.root.iterdir()):
            match = _CAPTIONS.match(path.name)
            if match:
                self._files.setdefault(match["code"], path)
        if not self._files:
            raise ConfigError(
                f"{self._what}: no caption files 'test_1kcaptions_{{lang}}.txt' in '{self.root}'"
            )
        self.index = LanguageIndex(self._files, XTD10, f"XTD10 folder '{self.root}'")

    def languages(self) -> list[str]:
        """The mclip codes of the caption files present (``jp`` listed as ``ja``), sorted."""
        return self.index.languages()

    def captions(self, language: str) -> Captions:
        """Every non-empty caption in ``language``; empty ones are counted in ``skipped``."""
        path = self._files[self.index.lookup(language)]
        return line_aligned_captions(language, self._listed, self.list_file, [path], self._what)
