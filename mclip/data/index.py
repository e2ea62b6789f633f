"""A one-pass index of training shards: samples and captions per language, per shard.

``mclip data index SHARDS`` reads every shard once (captions and metadata only; images are not
decoded) and writes a small JSON manifest, by default ``mclip_index.json`` beside the first
shard. Training reads it to sample languages by temperature (:func:`temperature_factors`). The
manifest records each shard's size and modification time, so a stale index (shards rewritten,
added or removed since) is detected rather than silently used.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Callable

from mclip.config import ConfigError
from mclip.data.shards import SkipCounter, decode_captions, iter_raw_samples

INDEX_FILE = "mclip_index.json"
INDEX_VERSION = 1


def default_index_path(shards: list[str]) -> Path:
    """Where the index of ``shards`` lives unless a path is given: beside the first shard."""
    return Path(shards[0]).parent / INDEX_FILE


def _stamp(shard: str) -> dict:
    stat = os.stat(shard)
    return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def build_index(shards: list[str], default_language: str = "en", language_key: str = "",
                progress: Callable[[int], None] | None = None) -> dict:
    """Count samples per language over ``shards`` (one pass, no image decoding).

    A sample counts once under every language it has a caption in (after code normalisation);
    ``samples`` counts samples with at least one caption. ``progress(n)`` is called after each
    shard with its number of samples. Returns the manifest (JSON-ready).
    """
    total, per_shard, skipped = Counter(), {}, SkipCounter()
    samples = 0
    for shard in shards:
        counts, n = Counter(), 0
        for sample in iter_raw_samples([shard], skipped):
            captions = decode_captions(sample, skipped, default_language, language_key)
            if captions:
                n += 1
                counts.update(captions.keys())
        per_shard[shard] = {**_stamp(shard), "samples": n, "languages": dict(counts)}
        total.update(counts)
        samples += n
        if progress is not None:
            progress(n)
    return {"version": INDEX_VERSION, "samples": samples,
            "languages": dict(sorted(total.items(), key=lambda kv: -kv[1])),
            "skipped": dict(skipped), "shards": per_shard}


def write_index(index: dict, path: str | Path) -> Path:
    """Write the manifest atomically (temporary file, then rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(index, indent=1, ensure_ascii=False), "utf-8")
    tmp.replace(path)
    return path


def load_index(shards: list[str], path: str | Path | None = None) -> dict | None:
    """The manifest for ``shards`` (at ``path`` or :func:`default_index_path`), or None if there
    is none. An index that does not describe exactly these shards, unchanged, is a ConfigError
    saying which shard differs and how to rebuild it."""
    path = Path(path) if path else default_index_path(shards)
    if not path.is_file():
        return None
    try:
        index = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(f"data index '{path}' cannot be read ({error}); rebuild it with "
                          f"'mclip data index SHARDS --out {path}'") from None
    listed = index.get("shards", {})
    for shard in shards:
        if shard not in listed:
            problem = f"does not list shard '{shard}'"
        elif {k: listed[shard].get(k) for k in ("bytes", "mtime_ns")} != _stamp(shard):
            problem = f"is older than shard '{shard}' (its size or time changed)"
        else:
            continue
        raise ConfigError(f"data index '{path}' {problem}; rebuild it with 'mclip data index "
                          f"<the training shards> --out {path}'")
    if len(listed) != len(shards):  # an index of a superset: count only these shards
        counts = Counter()
        for shard in shards:
            counts.update(listed[shard]["languages"])
        index = {**index, "languages": dict(counts),
                 "samples": sum(listed[s]["samples"] for s in shards)}
    return index


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


def language_sampling(shards: list[str], temperature: float, index_path: str = ""
                      ) -> tuple[dict[str, float], dict]:
    """The keep factors for training on ``shards`` at ``temperature``, and a record for the log.

    With an index (given or beside the first shard): factors from its per-language counts and a
    record with the data's and the resulting mix. Without one: no factors at T = 1 (the record
    says the index is absent), and a ConfigError at T != 1 saying how to build it.
    """
    index = load_index(shards, index_path or None)
    path = str(Path(index_path) if index_path else default_index_path(shards))
    if index is None:
        if temperature != 1.0:
            raise ConfigError(f"config key 'data.language_temperature' is {temperature}, which needs "
                              f"per-language counts, but there is no index at '{path}'. Build it "
                              f"with 'mclip data index <the training shards>' (one pass, no image "
                              f"decoding), or set data.index to where it is")
        return {}, {"index": None, "note": f"no data index at '{path}': the language mix is the "
                                           f"data's own ('mclip data index' writes one)"}
    counts = index["languages"]
    factors = temperature_factors(counts, temperature)
    total = sum(counts.values()) or 1
    mixed = {lang: counts[lang] * factors[lang] for lang in factors}
    mixed_total = sum(mixed.values()) or 1
    return factors, {"index": path, "samples": index["samples"], "temperature": temperature,
                     "data_mix": {lang: round(n / total, 4) for lang, n in counts.items()},
                     "target_mix": {lang: round(v / mixed_total, 4) for lang, v in mixed.items()}}
