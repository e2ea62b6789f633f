"""Config sections of the training data: the shards or sources (``data``), the caption language
policy, scores; part of :class:`mclip.config.Config`, checked in :mod:`mclip.config_checks`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union


@dataclass
class SourceConfig:
    """One shard set of a training mix (an entry of ``data.sources``)."""

    shards: str = ""
    """Brace pattern, glob, directory of .tar files, or a comma-separated list of those."""
    weight: float = 1.0
    """Relative share of the samples drawn from this source (normalised over the sources)."""
    name: str = ""
    """How the logs name it; empty: source0, source1, ..."""
    languages: list[str] = field(default_factory=list)
    """Caption languages to use from this source; empty: data.languages."""
    index: str = ""
    """This source's index file (``mclip data index``); empty: beside its first shard."""


@dataclass
class DataConfig:
    """Training shards and how a caption language is chosen per sample."""

    train_shards: str = "demo_data/train/shard-{000000..000011}.tar"
    """Brace pattern, glob, directory of .tar files, or a comma-separated list of those.
    Unused when ``sources`` is given."""
    sources: list[SourceConfig] = field(default_factory=list)
    """Several shard sets mixed by weight, e.g. [{name: laion, shards: ..., weight: 3},
    {name: cc3m_mt, shards: ..., weight: 1, languages: [de, fr]}]; empty: train_shards alone."""
    languages: list[str] = field(default_factory=list)
    """Caption languages to sample from; empty: every language present in a sample."""
    language_policy: str = "uniform"
    """'uniform' over the languages a sample has, or 'weighted' by language_weights."""
    language_weights: dict[str, float] = field(default_factory=dict)
    language_temperature: float = 1.0
    """Sample caption languages with p(lang) proportional to n(lang)^(1/T), n from the shards'
    index (``mclip data index``); 1: the data's own mix; larger: flatter (XLM-R uses T ~ 3.3)."""
    index: str = ""
    """The shards' index file; empty: ``mclip_index.json`` beside the first shard, if present."""
    default_language: str = "en"
    """Language of a ``KEY.txt`` caption whose ``KEY.json`` names none."""
    language_key: str = ""
    """``KEY.json`` field holding the language of ``KEY.txt`` (img2dataset writes ``LANGUAGE``
    for LAION-2B-multi). Empty: look for ``LANGUAGE``, then ``language``."""
    scores: str = ""
    """A directory written by ``mclip data score`` for these shards; with ``min_score`` or
    ``min_score_by_language``, captions scored lower are left out while training (counted as
    ``below_min_score``; captions without a score as ``unscored``)."""
    min_score: Union[float, None] = None
    """The lowest image-text score a caption may have (LAION-5B: 0.28 English, 0.26 others)."""
    min_score_by_language: dict[str, float] = field(default_factory=dict)
    """Per-language thresholds, over ``min_score``, e.g. {en: 0.28, de: 0.26}."""
    retries: int = 5
    """Attempts in a row to re-read a remote shard after a transient fault (a dropped
    connection, HTTP 429 / 5xx), with exponential backoff, resuming where the read broke
    (:mod:`mclip.data.remote`); 0: a fault gives the shard up at once (counted)."""
    captions_per_image: int = 1
    """Captions of one image in a batch, as that many texts with one image (in as many different
    languages as the sample has; the losses take each as a positive of its image)."""
    shuffle_buffer: int = 2000
    """Samples in the shuffle reservoir of each reader; 0 or 1: no shuffling."""
    num_workers: Union[int, str] = "auto"
    """DataLoader worker processes per rank, or 'auto': on CPU the cores torch's threads leave
    free (none on a small machine: samples are decoded between steps), on GPU the rank's share
    of the CPUs (:func:`mclip.train.threads.data_workers`). The run's config.yaml records the
    number used."""
    augment: bool = True
    """Random horizontal flip, drawn from the data stream's own RNG (shape and colour classes
    are flip-invariant)."""
