"""Crossmodal-3600 (XM3600): 3600 images with captions in 36 languages.

``captions.jsonl`` has one line per image: ``{"image/key": "<16 hex>", "image/locale": "<lang>",
"<lang>": {"caption": [...], "caption/tokenized": [...], ...}, ...}``; the image is
``{image/key}.jpg`` in a folder the user gives. Codes are used as the file writes them
(ISO 639-1, plus ``fil`` and ``quz`` which have none; :data:`~mclip.eval.datasets.codes.XM3600`).

Every caption of a language is kept (about two per image, one for ``bn``). CLIP_benchmark's
XM3600 loader keeps only the first caption per image and language, so its recalls are over
fewer, different queries; mclip's numbers on XM3600 are not directly comparable to its numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

from mclip.config import ConfigError

from .base import Captions
from .codes import XM3600, LanguageIndex
from .listed import ListedImageSet, collect_captions, images_folder
from .textfiles import read_lines

KEY = "image/key"


def _parse(path: Path) -> list[dict]:
    records = []
    for number, line in enumerate(read_lines(path, "XM3600 captions"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as error:
            raise ConfigError(
                f"XM3600 captions '{path}', line {number}: not JSON ({error})"
            ) from None
        if not isinstance(record, dict) or not isinstance(record.get(KEY), str):
            raise ConfigError(
                f"XM3600 captions '{path}', line {number}: expected an object with '{KEY}'"
            )
        records.append(record)
    if not records:
        raise ConfigError(f"XM3600 captions '{path}' holds no image")
    return records


def _language_entries(record: dict) -> dict[str, list]:
    return {
        code: value["caption"]
        for code, value in record.items()
        if isinstance(value, dict) and isinstance(value.get("caption"), list)
    }


class XM3600Set(ListedImageSet):
    """The XM3600 images (``{image/key}.jpg`` in ``images_dir``) and all their captions."""

    def __init__(self, captions_file: str | Path, images_dir: str | Path):
        self.path = Path(captions_file)
        what = f"XM3600 '{self.path}'"
        self._records = _parse(self.path)
        super().__init__(
            images_folder(images_dir, what, "the XM3600 images, {image/key}.jpg"),
            [r[KEY] for r in self._records],
            what,
            file_of=lambda key: f"{key}.jpg",
        )
        codes = dict.fromkeys(code for r in self._records for code in _language_entries(r))
        self.index = LanguageIndex(codes, XM3600, f"'{self.path}'")

    def languages(self) -> list[str]:
        """The mclip codes of every language with captions in the file, sorted."""
        return self.index.languages()

    def captions(self, language: str) -> Captions:
        """Every non-empty caption in ``language`` (all of them, not just the first per image);
        empty ones are counted in ``skipped``."""
        code = self.index.lookup(language)
        pairs = (
            (r[KEY], text) for r in self._records for text in _language_entries(r).get(code, [])
        )
        return collect_captions(language, pairs, str(self.path))
