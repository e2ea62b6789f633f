"""Class names and templates in CLIP_benchmark's layout.

A folder holds ``{code}_classnames.json`` and ``{code}_zeroshot_classification_templates.json``
(either may be gzipped), each ``{dataset: [...]}``; templates mark the class name with ``{c}``.
CLIP_benchmark names Chinese ``cn`` and Japanese ``jp``; mclip maps them to ``zh`` and ``ja``
(:data:`~mclip.eval.datasets.codes.CLIP_BENCHMARK`). A dataset missing from a classnames file is
one whose class names CLIP_benchmark takes from the dataset itself: mclip cannot, and says so.
"""

from __future__ import annotations

import re
from pathlib import Path

from mclip.config import ConfigError

from .base import ClassTexts
from .codes import CLIP_BENCHMARK, LanguageIndex
from .textfiles import find_file, read_json

CLASSNAMES = "classnames"
TEMPLATES = "zeroshot_classification_templates"
_NAME = re.compile(rf"^(?P<code>[A-Za-z-]+)_(?P<kind>{CLASSNAMES}|{TEMPLATES})\.json(\.gz)?$")


def is_clip_benchmark_folder(path: Path) -> bool:
    """True when ``path`` is a folder holding at least one ``*_classnames.json(.gz)``."""
    return path.is_dir() and any(
        (m := _NAME.match(p.name)) is not None and m["kind"] == CLASSNAMES for p in path.iterdir()
    )


class ClipBenchmarkTexts:
    """The class texts of one CLIP_benchmark-style folder, in every language it has."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise ConfigError(
                f"CLIP_benchmark class texts: '{self.directory}' is not a directory "
                f"(expected a folder with {{code}}_{CLASSNAMES}.json files)"
            )
        codes = []
        for path in sorted(self.directory.iterdir()):
            match = _NAME.match(path.name)
            if match and match["kind"] == CLASSNAMES:
                codes.append(match["code"])
        if not codes:
            raise ConfigError(
                f"CLIP_benchmark class texts: no '{{code}}_{CLASSNAMES}.json' in '{self.directory}'"
            )
        self.index = LanguageIndex(
            codes, CLIP_BENCHMARK, f"CLIP_benchmark folder '{self.directory}'"
        )
        self.description = f"CLIP_benchmark class texts '{self.directory}'"
        self._tables: dict[tuple[str, str], dict] = {}

    def languages(self) -> list[str]:
        """The mclip codes of the languages with a classnames file (``cn`` listed as ``zh``)."""
        return self.index.languages()

    def datasets(self, language: str | None = None) -> list[str]:
        """The datasets with class names in ``language`` (default: in any language), sorted."""
        languages = [language] if language is not None else self.languages()
        return sorted({name for lang in languages for name in self._table(lang, CLASSNAMES)})

    def _file(self, language: str, kind: str) -> Path:
        code = self.index.lookup(language)
        return find_file(
            self.directory,
            f"{code}_{kind}.json",
            f"CLIP_benchmark {kind} for language '{language}'",
        )

    def _table(self, language: str, kind: str) -> dict:
        if (language, kind) not in self._tables:
            path = self._file(language, kind)
            table = read_json(path, f"CLIP_benchmark {kind}")
            if not isinstance(table, dict):
                raise ConfigError(
                    f"'{path}' must map dataset names to lists; it holds a {type(table).__name__}"
                )
            self._tables[language, kind] = table
        return self._tables[language, kind]

    def load(
        self, language: str, dataset: str | None = None, default_templates: list[str] | None = None
    ) -> ClassTexts:
        """The ClassTexts of ``dataset`` in ``language`` (an mclip code: ``zh`` reads ``cn_*``).

        ``default_templates`` is used when the templates file has no entry for ``dataset``;
        without it that is a ConfigError naming the file.
        """
        if dataset is None:
            raise ConfigError(
                f"{self.description} holds several datasets; name one of: "
                f"{', '.join(self.datasets())}"
            )
        names = self._table(language, CLASSNAMES)
        if dataset not in names:
            raise ConfigError(
                f"'{self._file(language, CLASSNAMES)}' has no class names for "
                f"dataset '{dataset}' (CLIP_benchmark then takes them from the "
                f"dataset itself); datasets there: {', '.join(sorted(names))}"
            )
        templates = self._table(language, TEMPLATES).get(dataset, default_templates)
        if templates is None:
            raise ConfigError(
                f"'{self._file(language, TEMPLATES)}' has no templates for dataset "
                f"'{dataset}'; add them there or pass default_templates"
            )
        class_names = names[dataset]
        if not isinstance(class_names, list) or not all(isinstance(n, str) for n in class_names):
            raise ConfigError(
                f"'{self._file(language, CLASSNAMES)}': entry '{dataset}' must be a "
                f"list of class names (strings)"
            )
        if (
            not isinstance(templates, list)
            or not templates
            or not all(isinstance(t, str) for t in templates)
        ):
            where = (
                f"'{self._file(language, TEMPLATES)}'"
                if dataset in self._table(language, TEMPLATES)
                else "default_templates"
            )
            raise ConfigError(
                f"{where}: the templates of '{dataset}' must be a non-empty list of "
                f"strings with {{c}} where the class name goes"
            )
        return ClassTexts(
            language=language,
            names=list(class_names),
            templates=list(templates),
            source=f"CLIP_benchmark '{self.directory}' ({self.index.lookup(language)}, {dataset})",
        )
