"""SIB-200 sentences as Flores-200 lays them out (and MVL-SIB ships them): one folder per language,
named by its Flores-200 code (``deu_Latn``), holding ``train.tsv``, ``dev.tsv`` and ``test.tsv``
with the columns ``index_id``, ``category`` and ``text``. Read by the topic-matching reader
(:mod:`.topics`, which finds MVL-SIB's images with :func:`mvl_sib_images`) and the bitext reader
(:mod:`.bitext`)."""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path
from typing import Iterator

from mclip.config import ConfigError
from mclip.data.shards import SkipCounter

from .textfiles import read_text

SIB_SPLITS = ("train", "dev", "test")
SIB_COLUMNS = ("index_id", "category", "text")
_FLORES_FOLDER = re.compile(r"^[a-z]{3}_[A-Z][a-z]{3}$")


def sib_rows(path: Path, what: str, skipped: SkipCounter) -> Iterator[dict[str, str]]:
    """The rows of a SIB-200 TSV (quoted fields as pandas writes them); a row without the three
    columns is counted as ``bad_row``."""
    reader = csv.reader(io.StringIO(read_text(path, what)), delimiter="\t")
    header = next(reader, None)
    if header is None:
        return
    columns = [c.strip() for c in header]
    missing = [c for c in SIB_COLUMNS if c not in columns]
    if missing:
        raise ConfigError(
            f"{what}: '{path}' has no column(s) {', '.join(missing)}; SIB-200 TSVs "
            f"have the header {chr(9).join(SIB_COLUMNS)} (found: "
            f"{', '.join(columns) or 'nothing'})"
        )
    where = {name: columns.index(name) for name in SIB_COLUMNS}
    for row in reader:
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) < len(columns):
            skipped["bad_row"] += 1
            continue
        yield {name: row[i] for name, i in where.items()}


def is_sib_language_folder(path: str | Path) -> bool:
    """True when ``path`` is a folder named by a Flores-200 code (``deu_Latn``) holding a SIB-200
    split file (``train.tsv``, ``dev.tsv`` or ``test.tsv``, or its .gz)."""
    path = Path(path)
    return (
        path.is_dir()
        and _FLORES_FOLDER.match(path.name) is not None
        and any((path / f"{s}.tsv{gz}").is_file() for s in SIB_SPLITS for gz in ("", ".gz"))
    )


def sib_languages_root(path: Path) -> Path | None:
    """The folder of Flores-coded language folders at ``path``, ``path/sib200`` or
    ``path/data/sib200`` (the published MVL-SIB repository), or None."""
    for candidate in (path, path / "sib200", path / "data" / "sib200"):
        if candidate.is_dir() and any(
            is_sib_language_folder(entry.path) for entry in os.scandir(candidate)
        ):
            return candidate
    return None


def mvl_sib_images(path: Path, languages_root: Path) -> Path | None:
    """MVL-SIB's images folder near ``path``: ``data/images/sib200``, ``images/sib200`` or
    ``images`` under ``path`` or beside the language folders, the first that exists."""
    bases = list(dict.fromkeys([path, path / "data", languages_root.parent, languages_root]))
    for base in bases:
        for candidate in (base / "images" / "sib200", base / "images"):
            if candidate.is_dir():
                return candidate
    return None
