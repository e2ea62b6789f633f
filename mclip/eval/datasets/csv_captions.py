"""Captioned images listed in an open_clip-style CSV or TSV file.

Columns ``filepath`` (the image) and ``title`` (the caption) by default, both configurable, and
optionally a language column; without one every caption is in the language the caller gives
(``en`` by default). The separator is the one (tab or comma) under which the header holds both
named columns, so an open_clip ``.csv`` that is tab-separated (its default) reads as it is.
Relative image paths are relative to ``images_dir`` when given, else to the file's folder. An
image on several rows is one image with several captions. A row whose language cell is empty is
counted as ``missing_language`` in :attr:`Captions.skipped`.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from mclip.config import ConfigError

from .base import Captions
from .codes import CSV, LanguageIndex
from .listed import ListedImageSet, collect_captions, images_folder
from .textfiles import read_text, strip_gz


def _rows(path: Path, separator: str | None, columns: list[str]) -> list[dict[str, str]]:
    text = read_text(path, "caption table")
    header = text.split("\n", 1)[0].rstrip("\r")
    if separator is None:
        preferred = ["\t", ","] if strip_gz(path.name).endswith(".tsv") else [",", "\t"]
        fits = [
            sep
            for sep in preferred
            if set(columns) <= set(next(csv.reader([header], delimiter=sep)))
        ]
        if not fits:
            raise ConfigError(
                f"caption table '{path}': the header '{header[:200]}' lacks the "
                f"column(s) {', '.join(repr(c) for c in columns)} (under a tab or a "
                f"comma separator); name the columns with image_column= / "
                f"caption_column= / language_column="
            )
        separator = fits[0]
    reader = csv.DictReader(io.StringIO(text), delimiter=separator)
    missing = [c for c in columns if c not in (reader.fieldnames or [])]
    if missing:
        raise ConfigError(
            f"caption table '{path}' has no column(s) "
            f"{', '.join(map(repr, missing))}; "
            f"its columns: {', '.join(reader.fieldnames or [])}"
        )
    return list(reader)


class CsvCaptionSet(ListedImageSet):
    """The images and captions of a CSV / TSV caption table (gzipped or not)."""

    def __init__(
        self,
        path: str | Path,
        images_dir: str | Path | None = None,
        image_column: str = "filepath",
        caption_column: str = "title",
        language_column: str | None = None,
        language: str = "en",
        separator: str | None = None,
    ):
        self.path = Path(path)
        what = f"caption table '{self.path}'"
        columns = [image_column, caption_column] + ([language_column] if language_column else [])
        rows = _rows(self.path, separator, columns)
        self._rows: list[tuple[str, str, str]] = []  # (image, caption, language as written)
        self._missing_language = 0
        for row in rows:
            image = (row[image_column] or "").strip()
            if not image:
                raise ConfigError(f"{what}: a row has an empty '{image_column}' cell")
            code = (row[language_column] or "").strip() if language_column else language
            if not code:
                self._missing_language += 1
                continue
            self._rows.append((image, row[caption_column] or "", code))
        if not rows:
            raise ConfigError(f"{what} has no rows")
        folder = (
            images_folder(images_dir, what, "the images it lists")
            if images_dir is not None
            else self.path.parent
        )
        super().__init__(folder, [row[image_column].strip() for row in rows], what)
        self.index = LanguageIndex(
            dict.fromkeys(code for _, _, code in self._rows), CSV, f"'{self.path}'"
        )

    def languages(self) -> list[str]:
        """The mclip codes of the languages in the table (the caller's one without a column)."""
        return self.index.languages()

    def captions(self, language: str) -> Captions:
        """Every non-empty caption in ``language``; empty ones (and rows with no language) are
        counted in ``skipped``."""
        code = self.index.lookup(language)
        captions = collect_captions(
            language, ((image, text) for image, text, c in self._rows if c == code), str(self.path)
        )
        if self._missing_language:
            captions.skipped["missing_language"] += self._missing_language
        return captions
