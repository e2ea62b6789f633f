"""The training mix of a config: its shard sets (``data.sources``), each with its language policy.

A config names either ``data.train_shards`` (one source, ``train``) or several sources, each with
a weight (its share of the samples), an optional language restriction and its own index. The
language temperature (``data.language_temperature``) applies within each source, from that
source's per-language counts (``mclip data index``).
"""

from __future__ import annotations

import hashlib
from typing import cast

from mclip.config import DataConfig, SourceConfig
from mclip.data.index import language_sampling
from mclip.data.languages import LanguagePolicy
from mclip.data.pipeline import Source
from mclip.data.shards import check_shard_count, expand_shards


def source_configs(data: DataConfig) -> list[tuple[str, SourceConfig]]:
    """(config key of its shards, source) for every source; ``train_shards`` is one source."""
    if data.sources:
        return [(f"data.sources[{i}].shards", s) for i, s in enumerate(data.sources)]
    return [
        (
            "data.train_shards",
            SourceConfig(shards=data.train_shards, name="train", index=data.index),
        )
    ]


def build_sources(data: DataConfig, world_size: int) -> tuple[list[Source], dict]:
    """The sources a training run reads, and a log record per source name.

    Every source's shards must exist and give each of the ``world_size`` x ``data.num_workers``
    readers one shard (ConfigError naming the key otherwise). The record holds the source's
    shard count, weight, share of the samples and its language sampling
    (:func:`mclip.data.index.language_sampling`), with the mix of caption languages the
    source's policy draws (``target_mix``: only languages it can draw).
    """
    sources, records = [], {}
    specs = source_configs(data)
    total_weight = sum(spec.weight for _, spec in specs)
    for key, spec in specs:
        shards = expand_shards(spec.shards, key)
        workers = cast(int, data.num_workers)  # resolved from "auto" by the trainer before
        check_shard_count(len(shards), world_size, workers, key)
        factors, sampling, language_sets = language_sampling(
            shards, data.language_temperature, spec.index
        )
        policy = LanguagePolicy(
            data.language_policy, spec.languages or data.languages, data.language_weights, factors
        )
        if language_sets is not None:  # what this source's policy draws from this data
            sampling["target_mix"] = policy.expected_mix(language_sets, data.captions_per_image)
        sources.append(Source(spec.name, shards, policy, spec.weight))
        records[spec.name] = {
            "shards": len(shards),
            "weight": spec.weight,
            "share": round(spec.weight / total_weight, 4),
            "languages": spec.languages or data.languages or "all",
            "sampling": sampling,
        }
    return sources, records


def sources_digest(sources: list[Source]) -> str:
    """A short digest of the sources' names, weights, language restrictions and shard lists:
    a resumed run replays the saved data position only when it is unchanged."""
    text = "\n".join(
        f"{s.name}|{s.weight}|{sorted(s.policy.languages)}|{','.join(s.shards)}" for s in sources
    )
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
