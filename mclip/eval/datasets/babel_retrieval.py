"""Babel-ImageNet's retrieval JSON (its xtd, xflickrco and xm3600 files).

``{"images": [file, ...], "captions": {lang: [[captions of image 0], [captions of image 1],
...]}}`` with lowercase codes; the image files are in a folder the user gives. Each language's
list must have one entry per image (an empty entry: an image without captions in it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mclip.config import ConfigError

from .base import Captions
from .codes import BABEL_RETRIEVAL, LanguageIndex
from .listed import ListedImageSet, collect_captions, images_folder
from .textfiles import read_json


def looks_like_babel_retrieval(data: Any) -> bool:
    """True when ``data`` (parsed JSON) has an ``images`` list and a ``captions`` mapping."""
    return (
        isinstance(data, dict)
        and isinstance(data.get("images"), list)
        and isinstance(data.get("captions"), dict)
    )


class BabelRetrievalSet(ListedImageSet):
    """The images of a Babel-ImageNet retrieval JSON and their captions by language."""

    def __init__(self, path: str | Path, images_dir: str | Path):
        self.path = Path(path)
        what = f"Babel-ImageNet retrieval '{self.path}'"
        data = read_json(self.path, what)
        if not looks_like_babel_retrieval(data):
            raise ConfigError(
                f'{what}: expected {{"images": [...], "captions": {{lang: [[...], ...]}}}}'
            )
        images = data["images"]
        if not images or not all(isinstance(i, str) and i.strip() for i in images):
            raise ConfigError(f"{what}: 'images' must be a non-empty list of file names")
        super().__init__(images_folder(images_dir, what, "the images the JSON lists"), images, what)
        self._images = list(images)
        self._captions: dict[str, list] = data["captions"]
        for code, entries in self._captions.items():
            if not isinstance(entries, list) or len(entries) != len(images):
                count = len(entries) if isinstance(entries, list) else "no list of"
                raise ConfigError(
                    f"{what}: language '{code}' has {count} caption entries but "
                    f"there are {len(images)} images; they must be aligned"
                )
        self.index = LanguageIndex(self._captions, BABEL_RETRIEVAL, f"'{self.path}'")

    def languages(self) -> list[str]:
        """The mclip codes of the languages with captions, sorted."""
        return self.index.languages()

    def captions(self, language: str) -> Captions:
        """Every non-empty caption in ``language``; empty ones are counted in ``skipped``."""
        entries = self._captions[self.index.lookup(language)]
        pairs = (
            (image, text)
            for image, entry in zip(self._images, entries)
            for text in (entry if isinstance(entry, list) else [entry])
        )
        return collect_captions(language, pairs, str(self.path))
