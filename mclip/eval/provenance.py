"""Provenance of a task's texts per language: written by people, machine-translated, or a lexicon.

A per-language number means different things by where its texts came from: Babel-ImageNet's
labels are BabelNet lexicon entries (not translations of sentences), XTD10's captions were
translated by people, some CLIP_benchmark class-name files and Multi30K task-1 languages beyond
the published four were machine-translated. Each language of each task carries one tag of
:data:`PROVENANCES` under the metric key ``provenance``:

1. the suite's ``provenance`` key, a tag for every language or a mapping ``{lang: tag}`` (with
   ``default: tag`` for the others), wins;
2. otherwise the reader's own knowledge of its format (:data:`READER_PROVENANCE`, by the reader's
   class name);
3. otherwise ``unknown``.

Reports mean each task's headline metrics per tag (:func:`provenance_means`), and
``mclip report --provenance TAG[,TAG]`` keeps only the languages with those tags
(:func:`filter_report`).
"""

from __future__ import annotations

from mclip.config import ConfigError
from mclip.eval.metric_names import TEXT_FREE_KINDS

PROVENANCES = ("human", "machine_translated", "lexicon", "unknown")
ALL_LANGUAGES = "*"

# What each reader knows of its format's texts: {reader class: {language or "*": tag}}.
READER_PROVENANCE: dict[str, dict[str, str]] = {
    # the English labels are ImageNet's; every other language's are BabelNet synset lemmas
    "BabelImageNetTexts": {"en": "human", ALL_LANGUAGES: "lexicon"},
    # English CLIP_benchmark class names are written by people; other files vary by source
    "ClipBenchmarkTexts": {"en": "human", ALL_LANGUAGES: "unknown"},
    # XTD10: COCO captions translated by people (arXiv:2012.05107)
    "XTD10Set": {ALL_LANGUAGES: "human"},
    # XM3600: captions written by native speakers of each language (arXiv:2205.12522)
    "XM3600Set": {ALL_LANGUAGES: "human"},
    # Multi30K task 2: independent descriptions; task 1: English and its professional / crowd
    # translations into German, French and Czech; languages added by others are not known here
    "Multi30kTask2": {ALL_LANGUAGES: "human"},
    "Multi30kTask1": {
        "en": "human",
        "de": "human",
        "fr": "human",
        "cs": "human",
        ALL_LANGUAGES: "unknown",
    },
    # Flores-200 (SIB-200, MVL-SIB): professional translations; Tatoeba: volunteers' translations
    "MvlSibTopics": {ALL_LANGUAGES: "human"},
    "FloresBitext": {ALL_LANGUAGES: "human"},
    "TatoebaBitext": {ALL_LANGUAGES: "human"},
}


def check_provenance(value, where: str) -> str | dict[str, str] | None:
    """A suite's ``provenance`` value checked: None, a tag, or {language | "default": tag};
    ConfigError naming ``where`` and the valid tags otherwise."""
    if value is None:
        return None
    tags = value.values() if isinstance(value, dict) else [value]
    bad = [str(t) for t in tags if t not in PROVENANCES]
    if bad or not (isinstance(value, (str, dict))):
        raise ConfigError(
            f"{where}: provenance must be one of {', '.join(PROVENANCES)}, or a "
            f"mapping of languages (and 'default') to them; got {value!r}"
        )
    return value


def provenance_of(task, reader, language: str) -> str:
    """The tag of ``language`` in ``task`` (a suite task) read by ``reader`` (rules 1-3 of the
    module docstring)."""
    given = getattr(task, "provenance", None)
    if isinstance(given, str):
        return given
    if isinstance(given, dict) and (language in given or "default" in given):
        return str(given.get(language, given.get("default")))
    known = READER_PROVENANCE.get(type(reader).__name__, {})
    return known.get(language, known.get(ALL_LANGUAGES, "unknown"))


def tag_languages(per_language: dict[str, dict], task, reader) -> None:
    """Set ``provenance`` in every language's metrics (in place)."""
    for lang, metrics in per_language.items():
        metrics["provenance"] = provenance_of(task, reader, lang)


def provenance_means(task: dict, keys: list[str]) -> dict[str, dict]:
    """{tag: {"languages": n, metric: mean}} over the task's languages of each tag, for the
    ``keys`` they have; {} when the task's languages have no tags."""
    by_tag: dict[str, list[dict]] = {}
    for metrics in task["languages"].values():
        if "provenance" in metrics:
            by_tag.setdefault(metrics["provenance"], []).append(metrics)
    out = {}
    for tag in sorted(by_tag, key=lambda t: PROVENANCES.index(t) if t in PROVENANCES else 99):
        rows = by_tag[tag]
        out[tag] = {"languages": len(rows)}
        for key in keys:
            values = [m[key] for m in rows if m.get(key) is not None]
            if values:
                out[tag][key] = sum(values) / len(values)
    return out


def parse_tags(spec: str) -> list[str]:
    """``human,lexicon`` -> ["human", "lexicon"]; ConfigError naming a tag that is not one."""
    tags = [t.strip() for t in spec.split(",") if t.strip()]
    bad = [t for t in tags if t not in PROVENANCES]
    if bad or not tags:
        raise ConfigError(
            f"--provenance {spec!r}: use one or more of {', '.join(PROVENANCES)}, comma-separated"
        )
    return tags


def filter_report(report: dict, tags: list[str]) -> dict:
    """The report with only the languages whose provenance is in ``tags`` (a language without a
    tag counts as ``unknown``); tasks left with no language are dropped, tasks without texts
    (:data:`TEXT_FREE_KINDS`) are kept whole. Modifies and returns ``report``;
    the caller recomputes the means (:func:`mclip.eval.results.add_means`)."""
    kept = {}
    for name, task in report["tasks"].items():
        if task["kind"] not in TEXT_FREE_KINDS:
            task["languages"] = {
                lang: m
                for lang, m in task["languages"].items()
                if m.get("provenance", "unknown") in tags
            }
        if task["languages"]:
            kept[name] = task
    report["tasks"] = kept
    report["provenance_filter"] = list(tags)
    return report
