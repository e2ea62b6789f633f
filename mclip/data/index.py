"""A one-pass index of training shards: samples and captions per language, per shard.

``mclip data index SHARDS`` reads every shard once (captions and metadata only; images are not
decoded) and writes a small JSON manifest, by default ``mclip_index.json`` beside the first
shard. Training reads it to sample languages by temperature (:func:`temperature_factors`) and to
state the language mix it will draw (:meth:`~mclip.data.languages.LanguagePolicy.expected_mix`
over the index's language sets). Only samples training can use are counted: an image member and
at least one non-empty caption (``missing_image`` and the caption skips are counted apart).

Each shard's record holds its real path (symlinks and ``..`` resolved), size and modification
time; a remote shard's (:mod:`mclip.data.remote`) its URL (redacted), size and version (ETag or
Last-Modified). A training run finds a shard's record by that path, however it names the shard
(relative, absolute, from another directory), else by file name, size and modification time (a
copied or moved data set); a shard rewritten since, or not listed, makes the index stale: refused
where the temperature needs it (T != 1), ignored with a warning in the record at T = 1.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Callable

from mclip.config import ConfigError
from mclip.data.remote import ShardUnavailable, redact, shard_identity, shard_stamp, shard_stamps
from mclip.data.shards import IMAGE_KEYS, SkipCounter, decode_captions, iter_raw_samples
from mclip.outputs import write_text_atomically

INDEX_FILE = "mclip_index.json"
INDEX_VERSION = 2  # 2: real paths, language sets, samples without an image not counted


def default_index_path(shards: list[str]) -> Path:
    """Where the index of ``shards`` lives unless a path is given: beside the first shard."""
    return Path(shards[0]).parent / INDEX_FILE


def set_key(languages) -> str:
    """The key of a set of caption languages in an index: sorted codes joined by commas."""
    return ",".join(sorted(languages))


def build_index(
    shards: list[str],
    default_language: str = "en",
    language_key: str = "",
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Count samples per language over ``shards`` (one pass, no image decoding).

    A sample counts once under every language it has a caption in (after code normalisation),
    and once under its set of languages (``language_sets``, keys from :func:`set_key`);
    ``samples`` counts the samples training can use: an image member and a caption.
    ``progress(n)`` is called after each shard with its number of samples. Returns the manifest
    (JSON-ready).
    """
    total, sets_total, per_shard, skipped = Counter[str](), Counter[str](), {}, SkipCounter()
    samples = 0
    for shard in shards:
        counts, sets, n = Counter[str](), Counter[str](), 0
        for sample in iter_raw_samples([shard], skipped):
            captions = decode_captions(sample, skipped, default_language, language_key)
            if not captions:
                continue
            if not any(key in sample for key in IMAGE_KEYS):
                skipped["missing_image"] += 1
                continue
            n += 1
            counts.update(captions.keys())
            sets[set_key(captions)] += 1
        try:
            stamp = shard_stamp(shard)
        except OSError:  # unreadable (counted while reading): no version to record
            stamp = {}
        per_shard[shard] = {
            "path": shard_identity(shard),
            **stamp,
            "samples": n,
            "languages": dict(counts),
            "language_sets": dict(sets),
        }
        total.update(counts)
        sets_total.update(sets)
        samples += n
        if progress is not None:
            progress(n)
    return {
        "version": INDEX_VERSION,
        "samples": samples,
        "languages": dict(sorted(total.items(), key=lambda kv: -kv[1])),
        "language_sets": dict(sorted(sets_total.items(), key=lambda kv: -kv[1])),
        "skipped": dict(skipped),
        "shards": per_shard,
    }


def write_index(index: dict, path: str | Path) -> Path:
    """Write the manifest whole or not at all (:func:`mclip.outputs.write_text_atomically`)."""
    return write_text_atomically(path, json.dumps(index, indent=1, ensure_ascii=False))


class _Records:
    """An index's shard records, found by real path, by the name as listed, or by file name +
    size + modification time (each a dict lookup: a 100,000-shard index stays fast)."""

    def __init__(self, listed: dict, index_dir: Path):
        self.by_path: dict[str, dict] = {}
        self.by_name, self.by_stamp = dict(listed), dict[tuple, dict | None]()
        for name, record in listed.items():
            real = record.get("path") or os.path.realpath(index_dir / name)
            self.by_path.setdefault(real, record)
            stamp = (os.path.basename(name), record.get("bytes"), record.get("mtime_ns"))
            self.by_stamp[stamp] = None if stamp in self.by_stamp else record  # None: ambiguous

    def find(self, shard: str, stamp: dict) -> dict | None:
        """The record of ``shard``, whose :func:`~mclip.data.remote.shard_stamp` is ``stamp``
        (see :func:`load_index`), or None."""
        record = self.by_path.get(shard_identity(shard)) or self.by_name.get(shard)
        if record is None and "mtime_ns" in stamp:  # a local copy of the data set
            record = self.by_stamp.get((os.path.basename(shard), stamp["bytes"], stamp["mtime_ns"]))
        return record


def load_index(shards: list[str], path: str | Path | None = None) -> dict | None:
    """The manifest for ``shards`` (at ``path`` or :func:`default_index_path`), restricted to
    them, or None if there is none. An index that does not describe every one of these shards,
    unchanged, is a ConfigError saying which shard differs and how to rebuild it."""
    path = Path(path) if path else default_index_path(shards)
    if not path.is_file():
        return None
    try:
        index = json.loads(path.read_text("utf-8"))
        listed = index["shards"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigError(
            f"data index '{path}' cannot be read ({error}); rebuild it with "
            f"'mclip data index SHARDS --out {path}'"
        ) from None
    records, lookup = [], _Records(listed, path.parent)
    try:
        stamps = shard_stamps(shards)
    except ShardUnavailable as error:
        raise ConfigError(f"data index '{path}' cannot be checked: {error}") from None
    for shard, stamp in zip(shards, stamps):
        record = lookup.find(shard, stamp)
        if record is None:
            problem = f"does not list shard '{redact(shard)}'"
        elif {k: record.get(k) for k in stamp} != stamp:
            problem = (
                f"is older than shard '{redact(shard)}' (its size or "
                f"{'version' if 'version' in stamp else 'time'} changed)"
            )
        else:
            records.append(record)
            continue
        raise ConfigError(
            f"data index '{path}' {problem}; rebuild it with 'mclip data index "
            f"<the training shards> --out {path}'"
        )
    counts, sets = Counter[str](), Counter[str]()
    for record in records:
        counts.update(record["languages"])
        sets.update(record.get("language_sets") or {})
    return {
        **index,
        "languages": dict(counts),
        "samples": sum(r["samples"] for r in records),
        "language_sets": dict(sets) if all("language_sets" in r for r in records) else None,
    }


def temperature_factors(counts: dict[str, int], temperature: float) -> dict[str, float]:
    """Per-language keep factors in (0, 1] that turn the data's language mix n(l) into
    p(l) proportional to n(l)^(1/T) (the XLM-R / mBLIP practice; Conneau et al. 2020, "Unsupervised
    Cross-lingual Representation Learning at Scale", Sec. 3.1 uses exponent alpha = 1/T).

    Keeping a sample of language l with probability f(l) = n(l)^(1/T - 1) / max_k n(k)^(1/T - 1)
    gives exactly that mix for single-caption samples. T = 1: every factor is 1 (the data's own
    mix); T > 1 flattens the mix toward uniform by dropping samples of frequent languages.
    """
    if not temperature > 0:
        raise ConfigError(f"config key 'data.language_temperature' must be > 0, got {temperature}")
    raw = {lang: float(n) ** (1.0 / temperature - 1.0) for lang, n in counts.items() if n > 0}
    if not raw:
        return {}
    top = max(raw.values())
    return {lang: value / top for lang, value in raw.items()}


def language_sampling(
    shards: list[str], temperature: float, index_path: str = ""
) -> tuple[dict[str, float], dict, dict[str, int] | None]:
    """The keep factors for training on ``shards`` at ``temperature``, a record for the log, and
    the index's language sets ({:func:`set_key`: samples}, or None without them).

    With an index (given or beside the first shard): factors from its per-language counts and a
    record with the data's mix (``data_mix``: each language's share of the caption languages the
    samples have); the mix training draws depends on the language policy too, so
    :func:`mclip.data.sources.build_sources` adds it (``target_mix``). Without a usable index: no
    factors at T = 1 (the record says why: none there, or stale, under ``warning``), and a
    ConfigError at T != 1 saying how to build it.
    """
    path = str(Path(index_path) if index_path else default_index_path(shards))
    try:
        index = load_index(shards, index_path or None)
    except ConfigError as error:
        if temperature != 1.0:
            raise
        return (
            {},
            {
                "index": None,
                "warning": f"{error}. Temperature 1 needs no index: training "
                f"goes on with the data's own language mix",
            },
            None,
        )
    if index is None:
        if temperature != 1.0:
            raise ConfigError(
                f"config key 'data.language_temperature' is {temperature}, "
                f"which needs "
                f"per-language counts, but there is no index at '{path}'. Build it "
                f"with 'mclip data index <the training shards>' (one pass, no image "
                f"decoding), or set data.index to where it is"
            )
        return (
            {},
            {
                "index": None,
                "note": f"no data index at '{path}': the language mix is the "
                f"data's own ('mclip data index' writes one)",
            },
            None,
        )
    counts = index["languages"]
    factors = temperature_factors(counts, temperature)
    total = sum(counts.values()) or 1
    record = {
        "index": path,
        "samples": index["samples"],
        "temperature": temperature,
        "data_mix": {lang: round(n / total, 4) for lang, n in counts.items()},
    }
    sets = index["language_sets"]
    if sets is None:  # an index written before language sets: as if every sample had one
        sets = {lang: n for lang, n in counts.items()}
        record["note"] = (
            "the index has no language sets (written by an older mclip): the "
            "target mix assumes one caption language per sample; rebuild it with "
            "'mclip data index' for the exact mix"
        )
    return factors, record, sets
