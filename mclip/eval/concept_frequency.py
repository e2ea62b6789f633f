"""Zero-shot recall by how often the training captions name each class (``--concept-counts``).

With the counts of ``mclip data concepts`` (:mod:`mclip.data.concepts`), each zero-shot language
also reports its classes' recall grouped by training frequency, in the bins of
:data:`FREQUENCY_BINS` (0, 1-9, 10-99, 100+ captions): ``recall_freq_{bin}`` is the mean
per-class recall@1 over the classes of the bin that have images (as ``mean_per_class_recall``,
restricted to them; None when the bin has none) and ``n_classes_freq_{bin}`` their number. Per
bin, the per-image ranks are kept as the view ``images_freq_{bin}`` (intervals, paired tests).

A language's counts are used when the counts file has that language with the same class names
as the task; other names are an error (count with the same ``--class-texts``), and a language
the file lacks gets no bins.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mclip.config import ConfigError
from mclip.eval.samples import SampleRanks
from mclip.eval.zeroshot import per_class_recall

FREQUENCY_BINS = ((0, 0, "0"), (1, 9, "1-9"), (10, 99, "10-99"), (100, None, "100+"))
BIN_NAMES = tuple(name for _, _, name in FREQUENCY_BINS)


def frequency_bin(count: int) -> str:
    """The bin name of a class mentioned in ``count`` training captions."""
    return next(name for low, high, name in FREQUENCY_BINS
                if count >= low and (high is None or count <= high))


def load_concept_counts(path: str | Path) -> dict:
    """The ``languages`` block of a counts file ({lang: {"names", "counts", "captions"}});
    ConfigError naming the file when it is not one."""
    try:
        document = json.loads(Path(path).read_text("utf-8"))
        languages = document["languages"]
        assert isinstance(languages, dict)
    except (OSError, ValueError, KeyError, AssertionError, TypeError) as error:
        raise ConfigError(f"--concept-counts '{path}': not a counts file written by 'mclip data "
                          f"concepts' ({error})") from None
    return languages


def class_counts(languages: dict, lang: str, names: list[str | None], where: str
                 ) -> list[int] | None:
    """The training count of each of ``names`` (class order) in ``lang``, or None when the file
    has no such language; ConfigError when its class names differ."""
    entry = languages.get(lang)
    if entry is None:
        return None
    if entry["names"] != list(names):
        raise ConfigError(f"{where}: the concept counts of '{lang}' were made for other class "
                          f"names ({len(entry['names'])} classes, first "
                          f"{entry['names'][:2]}); count again with the task's class texts")
    return [int(n) for n in entry["counts"]]


def frequency_recall(ranks: torch.Tensor, labels: torch.Tensor, counts: list[int],
                     identities: list[str]) -> tuple[dict, dict[str, SampleRanks]]:
    """(metrics, views) of one language: ranks [N] (rank of each image's true class), labels [N],
    counts [C] (training captions per class), identities [N] (the images view's sample ids)."""
    bins = torch.tensor([BIN_NAMES.index(frequency_bin(n)) for n in counts], dtype=torch.long)
    image_bins = bins[labels]
    metrics: dict = {}
    views: dict[str, SampleRanks] = {}
    for index, name in enumerate(BIN_NAMES):
        members = (image_bins == index).nonzero().flatten()
        metrics[f"n_classes_freq_{name}"] = int(labels[members].unique().numel())
        if not len(members):
            metrics[f"recall_freq_{name}"] = None
            continue
        metrics[f"recall_freq_{name}"] = per_class_recall(ranks[members] == 0, labels[members],
                                                          len(counts))
        views[f"images_freq_{name}"] = SampleRanks.build(
            (identities[i] for i in members.tolist()), ranks[members], labels[members])
    return metrics, views
