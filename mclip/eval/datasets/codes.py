"""Language codes: each published format's codes mapped to mclip's, by an explicit table.

mclip names languages by lowercase ISO 639-1 codes where one exists (``de``, ``zh``, ``ja``), and
otherwise by the lowercase code the data uses (``fil``, ``quz``, Babel-ImageNet's ``acw``). A
format's code becomes mclip's by lower-casing it, unless the format's table says otherwise:

=================  =====================================
CLIP_benchmark     ``cn`` -> ``zh``, ``jp`` -> ``ja``
XTD10              ``jp`` -> ``ja``
Babel-ImageNet     upper case -> lower case (``DE`` -> ``de``, ``ZH`` -> ``zh``)
Multi30K, XM3600,  already lowercase ISO codes: unchanged
CSV, shards,
Babel retrieval
Flores-200         the explicit table :data:`FLORES_200` (``deu_Latn`` -> ``de``, ``zho_Hant`` ->
(SIB-200,          ``zh-hant``); an unknown code is kept as written (``xyz_Latn``), not
MVL-SIB)           lower-cased
=================  =====================================

A language that is not there raises :class:`~mclip.config.ConfigError` naming the language, the
file and the languages it has; nothing is guessed (asking CLIP_benchmark data for ``cn`` is an
error that says to ask for ``zh``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

from mclip.config import ConfigError
from mclip.data.language_codes import FLORES_200


@dataclass(frozen=True)
class CodeTable:
    """How one format writes language codes: ``aliases`` maps the format's codes that differ from
    mclip's by more than letter case to mclip's."""

    format: str
    aliases: Mapping[str, str] = field(default_factory=dict)

    def to_mclip(self, code: str) -> str:
        """The mclip code for the format's ``code``."""
        return self.aliases.get(code, self.aliases.get(code.lower(), code.lower()))


CLIP_BENCHMARK = CodeTable("CLIP_benchmark", {"cn": "zh", "jp": "ja"})
XTD10 = CodeTable("XTD10", {"jp": "ja"})
BABEL_IMAGENET = CodeTable("Babel-ImageNet")
BABEL_RETRIEVAL = CodeTable("Babel-ImageNet retrieval")
MULTI30K = CodeTable("Multi30K")
XM3600 = CodeTable("XM3600")
CSV = CodeTable("CSV")
SHARDS = CodeTable("shards")


class LanguageIndex:
    """The languages one file (or folder) has: mclip code -> the code as the file writes it."""

    def __init__(self, codes: Iterable[str], table: CodeTable, where: str):
        self.table, self.where = table, where
        self.native: dict[str, str] = {}
        for code in codes:
            mclip = table.to_mclip(code)
            if mclip in self.native and self.native[mclip] != code:
                raise ConfigError(
                    f"{where} has both '{self.native[mclip]}' and '{code}', which "
                    f"are one language ('{mclip}') for mclip; keep one of them"
                )
            self.native[mclip] = code

    def languages(self) -> list[str]:
        """The mclip codes present, sorted."""
        return sorted(self.native)

    def lookup(self, language: str) -> str:
        """The file's own code for the mclip code ``language``; ConfigError naming the language,
        the file and the languages there when it is absent."""
        if language in self.native:
            return self.native[language]
        hint = ""
        alias = self.table.aliases.get(language)
        if alias is not None:
            hint = f" ('{language}' is {self.table.format}'s code; mclip calls it '{alias}')"
        elif language.lower() in self.native:
            hint = f" (mclip codes are lowercase: use '{language.lower()}')"
        shown = ", ".join(self.languages()) or "none"
        raise ConfigError(
            f"language '{language}' is not in {self.where}{hint}; languages there: {shown}"
        )


# --- Flores-200 (SIB-200, MVL-SIB) ---------------------------------------------------------------
#
# The table FLORES_200 (deu_Latn -> de, zho_Hant -> zh-hant, ...) lives in
# mclip.data.language_codes, which also normalises training-data codes by it; the rules are there.


@dataclass(frozen=True)
class FloresTable(CodeTable):
    """Flores-200 codes: mapped by :data:`FLORES_200` (letter case of the code as published, or
    any case); a code not in the table is kept exactly as written, never guessed."""

    def to_mclip(self, code: str) -> str:
        """The mclip code for the Flores-200 ``code``, or ``code`` itself when it is unknown."""
        if code in self.aliases:
            return self.aliases[code]
        return _FLORES_LOWER.get(code.lower(), code)

    def knows(self, code: str) -> bool:
        """True when ``code`` is in the table (in any letter case)."""
        return code in self.aliases or code.lower() in _FLORES_LOWER


_FLORES_LOWER = {code.lower(): mclip for code, mclip in FLORES_200.items()}
FLORES = FloresTable("Flores-200", FLORES_200)
