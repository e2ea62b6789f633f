"""Shards filtered by image-text score (``mclip data filter``), with thresholds per language.

A caption is kept when its score (:mod:`mclip.data.score`) reaches its language's threshold; a
sample keeps its key and image and loses the captions below it; a sample left without a caption
is dropped. The thresholds come from one global ``min_score`` (LAION-5B: 0.28 English, 0.26
multilingual, for its CLIP model), a file of per-language thresholds, or ``keep_fraction``: per
language the score quantile that keeps that fraction of its captions. A single threshold removes
far more of a language the model scores low (a low-resource language, a script the text tower
knows badly) than of English; a per-language quantile removes the same share of each.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import cast

import numpy as np

from mclip.data.language_codes import validate_languages
from mclip.data.remote import is_remote, redact
from mclip.data.score import all_scores, read_scores
from mclip.data.shards import SkipCounter, content_hash, decode_captions, iter_raw_samples
from mclip.errors import ConfigError


def thresholds(
    scores_dir: str | Path,
    min_score: float | None = None,
    by_language: dict[str, float] | None = None,
    keep_fraction: float | None = None,
) -> dict[str, float]:
    """{language: threshold} for every language scored in ``scores_dir``: ``keep_fraction``'s
    per-language quantile, else ``by_language``'s value for the language, else ``min_score``.
    A language with no threshold is a ConfigError naming it."""
    scores = all_scores(scores_dir)
    if not scores:
        raise ConfigError(f"--scores '{scores_dir}' holds no scores; run 'mclip data score' first")
    if keep_fraction is not None:
        if not 0 < keep_fraction <= 1:
            raise ConfigError(f"--keep-fraction {keep_fraction}: give a fraction in (0, 1]")
        return {
            lang: float(np.quantile(np.asarray(values), 1 - keep_fraction, method="lower"))
            for lang, values in scores.items()
        }
    codes = validate_languages(list(by_language or {}), "--min-score-by-language")
    per_language = {code: float(v) for code, v in zip(codes, (by_language or {}).values())}
    missing = sorted(lang for lang in scores if lang not in per_language and min_score is None)
    if missing:
        raise ConfigError(
            f"no threshold for the scored language(s) {', '.join(missing[:8])}: "
            f"give --min-score, add them to --min-score-by-language, or use "
            f"--keep-fraction"
        )
    # min_score is not None where per_language lacks a language (the check above)
    return {lang: cast(float, per_language.get(lang, min_score)) for lang in scores}


def read_thresholds_file(path: str | Path) -> dict[str, float]:
    """A JSON file {language: threshold}; a ConfigError naming the file when it is not one."""
    try:
        data = json.loads(Path(path).read_text("utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"--min-score-by-language '{path}' cannot be read as JSON ({error})"
        ) from None
    if not isinstance(data, dict) or not all(isinstance(v, (int, float)) for v in data.values()):
        raise ConfigError(
            f"--min-score-by-language '{path}' must map language codes to numbers, "
            f'e.g. {{"en": 0.28, "de": 0.26}}'
        )
    return data


def filter_shards(
    shards: list[str],
    scores_dir: str | Path,
    limits: dict[str, float],
    out_dir: str | Path,
    default_language: str = "en",
    language_key: str = "",
    progress=None,
) -> dict:
    """Write each shard of ``shards`` filtered by ``limits`` into ``out_dir`` under its own file
    name; returns counts: {"samples_in", "samples_kept", "captions": {language: {"in",
    "kept"}}, "skipped"} (``unscored``: captions without a score, dropped)."""
    import webdataset as wds

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = [Path(redact(s) if is_remote(s) else s).name for s in shards]
    if len(set(names)) != len(names):
        raise ConfigError(
            "the shards to filter share file names; filter each set into its own --out folder"
        )
    counts = {"samples_in": 0, "samples_kept": 0}
    per_language: dict[str, Counter] = {}
    skipped = SkipCounter()
    for done, (shard, name) in enumerate(zip(shards, names), 1):
        scores = read_scores(scores_dir, shard)
        tmp = out / f".{name}.tmp"
        with wds.TarWriter(str(tmp)) as sink:
            for sample in iter_raw_samples([shard], skipped):
                counts["samples_in"] += 1
                kept = _kept_captions(
                    sample, scores, limits, skipped, per_language, default_language, language_key
                )
                if kept is None:
                    continue
                counts["samples_kept"] += 1
                sink.write(_with_captions(sample, kept))
        tmp.replace(out / name)
        if progress is not None:
            progress(done)
    return {
        **counts,
        "captions": {lang: dict(c) for lang, c in sorted(per_language.items())},
        "skipped": dict(skipped),
    }


def _kept_captions(
    sample: dict,
    scores: dict,
    limits: dict[str, float],
    skipped: SkipCounter,
    per_language: dict[str, Counter],
    default_language: str,
    language_key: str,
) -> dict[str, list[str]] | None:
    """The sample's captions that reach their language's threshold (None: none does)."""
    captions = decode_captions(sample, skipped, default_language, language_key)
    key, kept = sample["__key__"], dict[str, list[str]]()
    for language, texts in captions.items():
        counter = per_language.setdefault(language, Counter())
        for text in texts:
            counter["in"] += 1
            score = scores.get((key, language, content_hash(text)))
            if score is None:
                skipped["unscored"] += 1
            elif score >= limits.get(language, float("inf")):
                kept.setdefault(language, []).append(text)
                counter["kept"] += 1
    if not kept:
        skipped["no_caption_above_min_score"] += 1
        return None
    return kept


def _with_captions(sample: dict, kept: dict[str, list[str]]) -> dict:
    """The raw sample with its captions replaced by ``kept``: in ``KEY.json``'s ``captions``
    when the sample has that field, else as ``KEY.txt`` (one caption, its language unchanged)."""
    out = {k: v for k, v in sample.items() if k == "__key__" or not k.startswith("__")}
    meta = {}
    if "json" in sample:
        try:
            loaded = json.loads(sample["json"])
            meta = loaded if isinstance(loaded, dict) else {}
        except (ValueError, UnicodeDecodeError):
            meta = {}
    if isinstance(meta.get("captions"), dict):
        out["json"] = json.dumps({**meta, "captions": kept}, ensure_ascii=False).encode("utf-8")
    else:
        out["txt"] = next(iter(kept.values()))[0].encode("utf-8")
    return out


class ScoreFilter:
    """``data.scores`` + ``data.min_score`` applied while training: ``keep(shard, key,
    captions)`` returns the sample's captions that reach their language's threshold, counting
    the others (``below_min_score``, ``unscored``). A shard's scores are read when one of its
    samples first asks (the last few shards' stay in memory)."""

    def __init__(self, scores_dir: str | Path, limits: dict[str, float], cached_shards: int = 4):
        self.scores_dir, self.limits, self.cached_shards = scores_dir, dict(limits), cached_shards
        self._shards: dict[str, dict] = {}

    def _scores(self, shard: str) -> dict:
        if shard not in self._shards:
            if len(self._shards) >= self.cached_shards:
                self._shards.pop(next(iter(self._shards)))
            self._shards[shard] = read_scores(self.scores_dir, shard)
        return self._shards[shard]

    def keep(
        self, shard: str, key: str, captions: dict[str, list[str]], counter: Counter, allowed=None
    ) -> dict[str, list[str]]:
        """The captions of sample ``key`` of ``shard`` at or above their language's threshold;
        languages not in ``allowed`` (those the language policy never draws) pass unscored."""
        scores, kept = self._scores(shard), {}
        for language, texts in captions.items():
            if allowed is not None and language not in allowed:
                kept[language] = texts
                continue
            limit = self.limits.get(language, float("inf"))
            for text in texts:
                score = scores.get((key, language, content_hash(text)))
                if score is None:
                    counter["unscored"] += 1
                elif score < limit:
                    counter["below_min_score"] += 1
                else:
                    kept.setdefault(language, []).append(text)
        return kept


def score_filter(data) -> ScoreFilter | None:
    """The training stream's filter for a :class:`~mclip.config.DataConfig` (None without
    ``data.scores``)."""
    if not data.scores.strip():
        return None
    limits = thresholds(data.scores, data.min_score, data.min_score_by_language)
    return ScoreFilter(data.scores, limits)
