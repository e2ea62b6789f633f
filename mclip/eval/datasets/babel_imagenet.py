"""Babel-ImageNet class labels and translated prompts.

The labels file maps upper-case language codes to ``[[ImageNet class indices], [labels]]``
(``babel_imagenet.json`` has 92 languages + ``EN``; a larger release has about 300, with codes
such as ``ACW``; nothing here assumes a count). Each language covers its own subset of the 1000
classes: :meth:`BabelImageNetTexts.load` gives a name list of length ``n_classes`` with None for
the classes the language lacks, so the language is scored on its own classes only.

The prompts file (``nllb_dist13b_prompts.json``) maps the same codes to the 80 OpenAI templates
machine-translated, ``{}`` marking the label (``EN`` holds the English originals, spaced as the
translations are: ``"a bad photo of a  {} ."``). Languages without an entry (``BR``, ``FY``,
``LA`` in the published file) fall back to the bare label (templates ``["{}"]``);
``extra_templates`` ({mclip code: templates}) supplies or replaces templates for any language.
The English labels are BabelNet's (``"Tinca tinca"``), not OpenAI's class names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from mclip.config import ConfigError

from .base import ClassTexts
from .codes import BABEL_IMAGENET, LanguageIndex
from .textfiles import read_json

BARE_LABEL = ["{}"]


def _is_pair(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(isinstance(v, list) for v in value)


def looks_like_babel_labels(data: Any) -> bool:
    """True when ``data`` (parsed JSON) maps codes to ``[[ints], [strings]]`` pairs."""
    if not isinstance(data, dict) or not data:
        return False
    for value in data.values():
        if not _is_pair(value):
            return False
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in value[0][:5]):
            return False
        if not all(isinstance(s, str) for s in value[1][:5]):
            return False
    return True


class BabelImageNetTexts:
    """Babel-ImageNet class names (and prompts) for every language of a labels file."""

    def __init__(
        self,
        labels: str | Path,
        prompts: str | Path | None = None,
        n_classes: int = 1000,
        extra_templates: Mapping[str, list[str]] | None = None,
        dataset: str = "imagenet1k",
    ):
        self.labels_path = Path(labels)
        self.prompts_path = Path(prompts) if prompts is not None else None
        self.n_classes, self.dataset = n_classes, dataset
        self.description = f"Babel-ImageNet labels '{self.labels_path}'"
        data = read_json(self.labels_path, "Babel-ImageNet labels")
        if not isinstance(data, dict) or not data:
            raise ConfigError(
                f"Babel-ImageNet labels '{self.labels_path}' must map language codes "
                f"to [[class indices], [labels]]"
            )
        self._labels = {code: self._check(code, value) for code, value in data.items()}
        self.index = LanguageIndex(self._labels, BABEL_IMAGENET, f"'{self.labels_path}'")
        self._prompts: dict[str, list[str]] = {}
        self._origin: dict[str, str] = {}
        if self.prompts_path is not None:
            table = read_json(self.prompts_path, "Babel-ImageNet prompts")
            if not isinstance(table, dict):
                raise ConfigError(
                    f"Babel-ImageNet prompts '{self.prompts_path}' must map language "
                    f"codes to lists of templates"
                )
            for code, templates in table.items():
                if not (isinstance(templates, list) and all(isinstance(t, str) for t in templates)):
                    raise ConfigError(
                        f"Babel-ImageNet prompts '{self.prompts_path}': entry "
                        f"'{code}' must be a list of templates (strings with {{}})"
                    )
                if templates:
                    language = BABEL_IMAGENET.to_mclip(code)
                    self._prompts[language] = list(templates)
                    self._origin[language] = f"templates from '{self.prompts_path}'"
        for language, templates in (extra_templates or {}).items():
            self._prompts[language] = list(templates)
            self._origin[language] = "templates given by the caller"

    def _check(self, code: str, value: Any) -> dict[int, str]:
        where = f"Babel-ImageNet labels '{self.labels_path}', language '{code}'"
        if not _is_pair(value):
            raise ConfigError(f"{where}: expected [[class indices], [labels]]")
        indices, labels = value
        if len(indices) != len(labels):
            raise ConfigError(f"{where}: {len(indices)} class indices but {len(labels)} labels")
        out: dict[int, str] = {}
        for index, label in zip(indices, labels):
            is_index = isinstance(index, int) and not isinstance(index, bool)
            if not is_index or not 0 <= index < self.n_classes:
                raise ConfigError(
                    f"{where}: class index {index!r} is not in "
                    f"0..{self.n_classes - 1} (pass n_classes= if the label file "
                    f"is for another class count)"
                )
            if index in out:
                raise ConfigError(f"{where}: class index {index} appears twice")
            if not isinstance(label, str):
                raise ConfigError(f"{where}: label of class {index} is not a string: {label!r}")
            if label.strip():
                out[index] = label.strip()
        return out

    def languages(self) -> list[str]:
        """The mclip codes of every language in the labels file (``DE`` -> ``de``), sorted."""
        return self.index.languages()

    def datasets(self) -> list[str]:
        """``[dataset]``: a Babel-ImageNet file holds one dataset (ImageNet-1k by default)."""
        return [self.dataset]

    def has_prompts(self, language: str) -> bool:
        """True when ``language`` has translated (or extra) templates, False for the bare label."""
        self.index.lookup(language)
        return language in self._prompts

    def load(self, language: str, dataset: str | None = None) -> ClassTexts:
        """The ClassTexts of ``language``: ``n_classes`` names, None for classes it lacks, and its
        translated templates (or ``["{}"]``, the bare label, when it has none)."""
        if dataset is not None and dataset != self.dataset:
            raise ConfigError(f"{self.description} holds dataset '{self.dataset}', not '{dataset}'")
        code = self.index.lookup(language)
        labels = self._labels[code]
        names: list[str | None] = [labels.get(i) for i in range(self.n_classes)]
        templates = self._prompts.get(language, BARE_LABEL)
        origin = self._origin.get(language, "bare label (no templates for this language)")
        return ClassTexts(
            language=language,
            names=names,
            templates=list(templates),
            source=f"Babel-ImageNet '{self.labels_path}' ({code}: {len(labels)} of "
            f"{self.n_classes} classes; {origin})",
        )
