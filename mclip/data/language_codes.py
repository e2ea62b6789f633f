"""Language codes found in training data and configs, mapped to mclip's codes.

mclip names a language by its ISO 639-1 code where one exists (``de``, ``zh``, ``pt``), and
otherwise by its ISO 639-3 code (``fil``, ``yue``, ``ceb``), always lowercase.
:func:`normalise_language` turns a tag written by a dataset, a language detector or a user into
that code, following BCP 47 (RFC 5646) for the tag's shape and ISO 639 for the language:

* letter case is ignored and ``_`` separates subtags like ``-`` (``EN_us`` -> ``en``);
* script, region and variant subtags are dropped: one caption language per language, whatever
  the script (``zh-Hans``, ``zh_Hant_TW`` -> ``zh``; ``pt-BR`` -> ``pt``; ``sr-Latn`` -> ``sr``);
  a registered extended language form names its language (``zh-yue`` -> ``yue``);
* a three-letter code becomes the two-letter one where ISO 639-1 has it, from ISO 639-2/T and
  ISO 639-2/B alike (``deu``, ``ger`` -> ``de``; ``zho``, ``chi`` -> ``zh``; ``fre`` -> ``fr``);
* ISO 639-1 codes withdrawn in favour of another one are replaced (``iw`` -> ``he``, ``in`` ->
  ``id``, ``ji`` -> ``yi``, ``mo`` -> ``ro``, and ``jw`` -> ``jv``, which CLD3 writes);
* an individual language of a macrolanguage takes the macrolanguage's ISO 639-1 code only where
  it is that language's standard written form, as in :data:`FLORES_200` (``arb`` -> ``ar``,
  ``cmn`` -> ``zh``, ``swh`` -> ``sw``, ``zsm`` -> ``ms``, ``pes`` -> ``fa``, ``ekk`` -> ``et``,
  ...); other varieties keep their own code (``arz``, ``prs``, ``yue``, ``quy``). So ``swh`` (the
  Swahili of Flores-200 and of most corpora) and ``swa`` (the macrolanguage) are both ``sw``;
* Flores-200 codes are BCP 47 tags with a script subtag, so ``eng_Latn``, ``zho_Hans``,
  ``zho_Hant`` and ``arb_Arab`` are ``en``, ``zh``, ``zh`` and ``ar`` by the rules above, which
  agree with :data:`FLORES_200` once its script suffixes are dropped;
* values that say "unknown" or "no language" (:data:`UNKNOWN_VALUES`: ``und``, ``unk``, ``xx``,
  ``mul``, ``zxx``, ``mis``, ``''`` ...) and anything that is not a registered language
  (``englsh``, ``xyz``, private-use ``qaa``-``qtz``, ``x-...``) give None.

The IANA language subtag registry and the ISO 639-2 code pairs come from the ``langcodes``
library; what it does differently is written here: it follows CLDR, which folds Tagalog into
Filipino (``tl`` -> ``fil``), Dari into Persian (``prs`` -> ``fa-AF``) and every Arabic, Quechua or
Chinese variety into its macrolanguage; mclip keeps ISO 639's distinctions, as its evaluation
readers do (:mod:`mclip.eval.datasets.codes`).

:func:`validate_languages` checks the codes a config lists (``data.languages``, the keys of
``data.language_weights``) and raises one clear :class:`~mclip.config.ConfigError` for a code that
is not a language, with close valid codes as suggestions.
"""

from __future__ import annotations

import difflib
import functools
import itertools
import string
from typing import Iterable

from langcodes import Language, LanguageTagError, tag_is_valid

from mclip.data.flores_codes import FLORES_200

UNKNOWN_LANGUAGE = "und"
"""mclip's code for a caption whose metadata names a language that is unknown or not a language
(the BCP 47 / ISO 639-2 code for "undetermined")."""

UNKNOWN_VALUES = frozenset({"", "und", "unk", "unknown", "xx", "null", "none", "mul", "zxx", "mis"})
"""Values that name no particular language, compared lowercase: ISO 639-2's ``und``
(undetermined), ``mul`` (multiple languages), ``zxx`` (no linguistic content) and ``mis``
(uncoded languages), and the placeholders datasets and language detectors write (``unk``,
``unknown``, ``xx``, ``null``, ``none``, empty). Note that ``nan`` is Min Nan Chinese, not a
missing value."""

WITHDRAWN_639_1 = {"iw": "he", "in": "id", "ji": "yi", "jw": "jv", "mo": "ro"}
"""Two-letter codes replaced by another ISO 639-1 code (``jw`` was never ISO 639-1 but is what
CLD3, and so LAION-2B-multi, writes for Javanese)."""

MACROLANGUAGE_CHOICES = {"cmn": "zh", "ekk": "et"}
"""Individual languages that take their macrolanguage's ISO 639-1 code, besides those that
:data:`FLORES_200` maps that way (Flores-200 writes Mandarin as ``zho`` and Estonian as ``est``)."""

COUNTRY_CODE_HINTS = {"cn": "zh", "jp": "ja", "cz": "cs", "dk": "da", "gr": "el", "ua": "uk"}
"""Country codes often written for a language; not language codes (they normalise to None), but
:func:`validate_languages` suggests the language."""


def normalise_language(code: str) -> str | None:
    """mclip's code for a language tag found in data or a config, or None.

    Input: any string: an ISO 639-1 / 639-2 (T or B) / 639-3 code or a BCP 47 tag, in any letter
    case, with ``-`` or ``_`` between subtags (``de``, ``DEU``, ``ger``, ``zh-Hans``,
    ``zh_Hant_TW``, ``pt-BR``, ``eng_Latn``). Output: the lowercase ISO 639-1 code where one
    exists, else the lowercase ISO 639-3 code (``de``, ``zh``, ``pt``, ``en``, ``fil``); None for
    a value that names no particular language (:data:`UNKNOWN_VALUES`), for anything that is not
    a registered language, and for a non-string. The rules are in the module docstring.
    """
    if not isinstance(code, str):
        return None
    return _normalise(code.strip())


@functools.lru_cache(maxsize=4096)
def _normalise(text: str) -> str | None:
    if text.lower() in UNKNOWN_VALUES:
        return None
    try:
        tag = Language.get(text, normalize=False)
        language = tag.language
        if tag.extlangs or (language is not None and not _is_iso_639(language)):
            # a registered extlang form ('zh-yue') or grandfathered tag ('zh-min-nan') names its
            # language once langcodes normalises it; any other extlang ('en-USA') is ignored
            resolved = Language.get(text, normalize=True)
            if not resolved.extlangs:
                language = resolved.language
    except LanguageTagError:
        return None
    if language is None or not _is_iso_639(language):  # 'und-Latn', 'x-private'
        return None
    language = language.lower()
    if language in UNKNOWN_VALUES or _is_private_use(language):
        return None
    if len(language) == 2:
        language = WITHDRAWN_639_1.get(language, language)
    else:
        language = _three_letter_choices().get(language, language)
    return language if tag_is_valid(language) else None


def validate_languages(codes: Iterable[str], key: str) -> list[str]:
    """The mclip codes for the language codes a config lists under ``key``.

    Input: ``codes``, e.g. ``data.languages`` or the keys of ``data.language_weights`` (a single
    string counts as a list of one), and ``key``, the config key they come from (for the error).
    Output: their :func:`normalise_language` codes, in the same order (so weights can be zipped
    with them). A value that names no particular language (``und``, ``unk``, ``xx``, ...) is
    :data:`UNKNOWN_LANGUAGE`, the code of captions whose language is unknown.

    Raises :class:`~mclip.config.ConfigError` naming ``key`` for a code that is not a language
    (with close valid codes as suggestions), for an empty or non-string code (a YAML ``no``
    unquoted is the boolean False), and for two codes that are one language (``de``, ``deu``).
    """
    from mclip.errors import ConfigError

    if isinstance(codes, str):
        codes = [codes]
    normalised: list[str] = []
    first: dict[str, object] = {}
    for code in codes:
        if isinstance(code, bool):
            raise ConfigError(
                f"config key '{key}': {code!r} is not a language code (YAML reads "
                f"an unquoted no / yes / on / off as a boolean; quote it: 'no')"
            )
        if not isinstance(code, str) or not code.strip():
            raise ConfigError(
                f"config key '{key}': {code!r} is not a language code; use ISO "
                f"639-1 (de) or 639-3 (fil) codes"
            )
        mclip = normalise_language(code)
        if mclip is None and code.strip().lower() in UNKNOWN_VALUES:
            mclip = UNKNOWN_LANGUAGE
        if mclip is None:
            raise ConfigError(
                f"config key '{key}': {code!r} is not a language code"
                f"{_did_you_mean(code)}Use ISO 639-1 (de) or 639-3 (fil) codes"
            )
        if mclip in first:
            raise ConfigError(
                f"config key '{key}': {first[mclip]!r} and {code!r} are one "
                f"language ({mclip!r}); list it once"
            )
        first[mclip] = code
        normalised.append(mclip)
    return normalised


def _is_iso_639(subtag: str) -> bool:
    return len(subtag) in (2, 3) and subtag.isascii() and subtag.isalpha()


def _is_private_use(code: str) -> bool:
    """ISO 639-2 reserves qaa-qtz for local use: they name no language anyone else knows."""
    return len(code) == 3 and code[0] == "q" and "a" <= code[1] <= "t"


@functools.lru_cache(maxsize=1)
def _two_letter_codes() -> tuple[str, ...]:
    """Every registered two-letter (ISO 639-1) code, withdrawn ones included."""
    return tuple(
        a + b for a, b in itertools.product(string.ascii_lowercase, repeat=2) if tag_is_valid(a + b)
    )


@functools.lru_cache(maxsize=1)
def _three_letter_choices() -> dict[str, str]:
    """Three-letter code -> mclip code, for codes that are not mclip's own: ISO 639-2/T and /B
    codes of ISO 639-1 languages, then the macrolanguage choices (Flores-200's and ours)."""
    table: dict[str, str] = {}
    for two in _two_letter_codes():
        if two in WITHDRAWN_639_1:
            continue
        language = Language.get(two, normalize=False)
        for variant in ("T", "B"):
            try:
                table.setdefault(language.to_alpha3(variant=variant), two)
            except LookupError:  # a registered two-letter code without an ISO 639-2 code
                pass
    for flores, mclip in FLORES_200.items():
        table[flores.split("_")[0].lower()] = mclip.split("-")[0]
    table.update(MACROLANGUAGE_CHOICES)
    return {three: code for three, code in table.items() if three != code}


def _flores_codes() -> set[str]:
    """mclip's codes for the Flores-200 languages, scripts dropped."""
    return {mclip.split("-")[0] for mclip in FLORES_200.values()}


def _did_you_mean(code: str) -> str:
    """'; did you mean 'en'? ' naming close valid codes, or '. ' when there are none.

    A word whose first three letters are an ISO 639-2 code suggests that code's language (ISO
    639-2 codes mostly begin the language's name: 'english', 'germn', 'chinese' -> en, de, zh);
    otherwise up to three codes spelt alike (difflib).
    """
    word = code.strip().lower()
    vocabulary = {two: two for two in _two_letter_codes() if two not in WITHDRAWN_639_1}
    vocabulary.update((code, code) for code in _flores_codes() if len(code) == 3)
    vocabulary["fil"] = "fil"
    vocabulary.update(_three_letter_choices())
    vocabulary.update(COUNTRY_CODE_HINTS)
    if word in COUNTRY_CODE_HINTS:
        close = [word]
    elif len(word) > 3 and word[:3] in vocabulary:
        close = [word[:3]]
    else:
        close = difflib.get_close_matches(word, vocabulary, n=6, cutoff=0.6)
    suggestions = [f"'{s}'" for s in dict.fromkeys(vocabulary[c] for c in close)][:3]
    if not suggestions:
        return ". "
    listed = (
        suggestions[0]
        if len(suggestions) == 1
        else (", ".join(suggestions[:-1]) + " or " + suggestions[-1])
    )
    return f"; did you mean {listed}? "
