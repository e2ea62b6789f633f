"""Evaluation at several embedding sizes in one run (``mclip eval --embed-dims 32,64,full``).

A Matryoshka-trained model (:mod:`mclip.losses.matryoshka`) is meant to be cut to the first d
dimensions of its embedding. Every task is scored again on those prefixes, re-normalised, of the
same image and text embeddings: nothing is encoded twice. A task ``shapes`` scored at 32 and 64
dimensions and in full gives the tasks ``shapes@32d``, ``shapes@64d`` and ``shapes`` in
``results.json`` (each with ``embed_dim`` and ``base_task``), so tables, CSV, charts, intervals
and paired comparisons treat them as any task, and the report puts accuracy against
dimension side by side (:func:`mclip.eval.report.dims_table`, ``results_dims.png``).
"""

from __future__ import annotations

import torch

from mclip.errors import ConfigError
from mclip.losses.matryoshka import prefix


def parse_embed_dims(spec: str) -> list[int | None]:
    """``"32,64,full"`` -> [32, 64, None] (None: the full embedding), sorted, without repeats."""
    dims: set[int | None] = set()
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        if part == "full":
            dims.add(None)
            continue
        try:
            value = int(part)
        except ValueError:
            raise ConfigError(
                f"--embed-dims: '{part}' is neither a number nor 'full'; give e.g. 32,64,full"
            ) from None
        if value < 1:
            raise ConfigError(f"--embed-dims: {value} is not a size >= 1")
        dims.add(value)
    if not dims:
        raise ConfigError("--embed-dims is empty; give e.g. 32,64,full")
    return sorted(dims, key=_size_order)


def check_dims(dims: list[int | None], embed_dim: int) -> list[int | None]:
    """``dims`` with a size equal to the model's full one turned into None; a size above it is a
    ConfigError naming both."""
    too_big = [d for d in dims if d is not None and d > embed_dim]
    if too_big:
        raise ConfigError(
            f"--embed-dims {too_big[0]} is larger than the model's embedding "
            f"({embed_dim} dimensions)"
        )
    return sorted({None if d == embed_dim else d for d in dims}, key=_size_order)


def task_name(name: str, dim: int | None) -> str:
    """The results' name of task ``name`` scored on the first ``dim`` dimensions."""
    return name if dim is None else f"{name}@{dim}d"


def _prefix(embeddings: torch.Tensor, dim: int | None) -> torch.Tensor:
    return embeddings if dim is None else prefix(embeddings, dim)


def _size_order(dim: int | None) -> float:
    """Sort key of sizes: the full embedding (None) last."""
    return float("inf") if dim is None else dim


class PrefixImages:
    """An ImageEmbeddings seen through its first ``dim`` dimensions (re-normalised)."""

    def __init__(self, images, dim: int | None):
        self.images, self.dim = images, dim

    def get(self, image_set):
        emb, keys, labels, skipped = self.images.get(image_set)
        return _prefix(emb, self.dim), keys, labels, skipped

    def __getattr__(self, name: str):
        return getattr(self.images, name)


class PrefixTexts:
    """A TextEmbeddings seen through its first ``dim`` dimensions (re-normalised)."""

    def __init__(self, texts, dim: int | None):
        self.texts, self.dim = texts, dim

    def encode(self, texts: list[str], language: str | None = None) -> torch.Tensor:
        return _prefix(self.texts.encode(texts, language), self.dim)

    def __getattr__(self, name: str):
        return getattr(self.texts, name)
