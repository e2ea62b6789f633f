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
    return next(
        name
        for low, high, name in FREQUENCY_BINS
        if count >= low and (high is None or count <= high)
    )


def load_concept_counts(path: str | Path) -> dict:
    """The ``languages`` block of a counts file ({lang: {"names", "counts", "captions"}}, each
    language's names and counts lists of one length); ConfigError naming the file and the
    command that writes one when it is not one."""
    fix = "write one with 'mclip data concepts SHARDS --class-texts FILE --out counts.json'"
    try:
        languages = json.loads(Path(path).read_text("utf-8"))["languages"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigError(
            f"concept counts '{path}' cannot be read as a counts file ({error}); {fix}"
        ) from None
    bad = [
        lang
        for lang, entry in (languages.items() if isinstance(languages, dict) else [])
        if not isinstance(entry, dict)
        or not isinstance(entry.get("names"), list)
        or not isinstance(entry.get("counts"), list)
        or len(entry["names"]) != len(entry["counts"])
    ]
    if not isinstance(languages, dict) or bad:
        raise ConfigError(
            f"concept counts '{path}': language(s) {', '.join(bad) or '?'} lack "
            f"'names' and 'counts' lists of one length; {fix}"
        )
    return languages


def class_counts(
    languages: dict, lang: str, names: list[str | None], where: str, path: str = ""
) -> list[int] | None:
    """The training count of each of ``names`` (class order) in ``lang``, or None when the file
    has no such language; ConfigError naming the file when its class names differ."""
    entry = languages.get(lang)
    if entry is None:
        return None
    if entry["names"] != list(names):
        raise ConfigError(
            f"{where}: the concept counts of '{lang}' in '{path}' were made for "
            f"other class names ({len(entry['names'])} classes, first "
            f"{entry['names'][:2]}; the task has {len(names)}, first "
            f"{list(names)[:2]}); count again with 'mclip data concepts SHARDS "
            f"--class-texts' the task's class texts"
        )
    return [int(n) for n in entry["counts"]]


def frequency_recall(
    ranks: torch.Tensor, labels: torch.Tensor, counts: list[int], identities: list[str]
) -> tuple[dict, dict[str, SampleRanks]]:
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
        metrics[f"recall_freq_{name}"] = per_class_recall(
            ranks[members] == 0, labels[members], len(counts)
        )
        views[f"images_freq_{name}"] = SampleRanks.build(
            (identities[i] for i in members.tolist()), ranks[members], labels[members]
        )
    return metrics, views
