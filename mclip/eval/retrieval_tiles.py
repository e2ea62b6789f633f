"""Score tiles for :mod:`mclip.eval.retrieval`: each pair of distinct embeddings scored in exactly
one tile (:class:`ScoreTiles`), the positives read from those tiles, and what each positive must
beat (:class:`Targets`, :class:`Side`). See that module's docstring for the counting rule."""

from __future__ import annotations

from typing import NamedTuple

import torch

from mclip.eval.distinct_rows import DistinctRows

POSITIVE_TILE_CACHE_BYTES = 256 * 2**20
"""Bytes of positive-holding tiles kept from the first pass for the second (the rest is
recomputed, bit-identically)."""


# --- tiles -----------------------------------------------------------------------------------


class ScoreTiles:
    """Computes the score tile of distinct image block ``a`` x distinct text block ``b``.

    The only place scores are computed: a tile is always the product of the same operands (the
    image block a view of one matrix, the text block a view or a fresh gather), so it gives the
    same floats in every pass.
    """

    def __init__(
        self,
        image_emb: torch.Tensor,
        images: DistinctRows,
        text_emb: torch.Tensor,
        texts: DistinctRows,
        chunk: int,
    ):
        self.image_rows = image_emb if images.all_distinct else image_emb[images.rep]
        self.text_emb, self.texts, self.chunk = text_emb, texts, chunk
        self._text_block: tuple[int, torch.Tensor] | None = None

    def text_block(self, b: int) -> torch.Tensor:
        """Distinct text rows of block b [<= chunk, d] (the last block asked for is kept)."""
        if self._text_block is None or self._text_block[0] != b:
            c = self.chunk
            rows = (
                self.text_emb[b * c : (b + 1) * c]
                if self.texts.all_distinct
                else self.text_emb[self.texts.rep[b * c : (b + 1) * c]]
            )
            self._text_block = (b, rows)
        return self._text_block[1]

    def tile(self, a: int, b: int) -> torch.Tensor:
        """Scores [<= chunk, <= chunk] of distinct image block a against distinct text block b."""
        c = self.chunk
        return self.image_rows[a * c : (a + 1) * c] @ self.text_block(b).T


# --- positives and what they must beat ----------------------------------------------------------


def positive_scores(
    tiles: ScoreTiles, images: DistinctRows, texts: DistinctRows, text_to_image: torch.Tensor
) -> tuple[torch.Tensor, dict[tuple[int, int], torch.Tensor]]:
    """Score of each text with its own image [M], read from the tiles that rank it.

    Only tiles that hold a positive pair are computed; they are returned too, keyed (a, b), as
    many as fit in :data:`POSITIVE_TILE_CACHE_BYTES`, for the counting pass.
    """
    c, device = tiles.chunk, text_to_image.device
    owner_slot, text_slot = images.slot[text_to_image], texts.slot
    n_image_blocks = (images.rep.shape[0] + c - 1) // c
    key = (text_slot // c) * n_image_blocks + owner_slot // c
    order = torch.argsort(key, stable=True)
    keys, counts = torch.unique_consecutive(key[order], return_counts=True)
    positive = torch.empty(text_to_image.shape[0], device=device)
    cache: dict[tuple[int, int], torch.Tensor] = {}
    cached_bytes = 0
    for k, j in zip(keys.tolist(), torch.split(order, counts.tolist())):
        b, a = divmod(k, n_image_blocks)
        scores = tiles.tile(a, b)
        positive[j] = scores[owner_slot[j] - a * c, text_slot[j] - b * c]
        size = scores.numel() * scores.element_size()
        if cached_bytes + size <= POSITIVE_TILE_CACHE_BYTES:
            cache[(a, b)] = scores
            cached_bytes += size
    return positive, cache


class Targets(NamedTuple):
    """What each positive must beat: a text's own image score [M], and each image's best caption:
    its score [N] and text index [N] (ties to the lower index; (-inf, M) without a caption)."""

    positive: torch.Tensor
    best: torch.Tensor
    best_index: torch.Tensor


def targets_of(positive: torch.Tensor, text_to_image: torch.Tensor, n_images: int) -> Targets:
    """The :class:`Targets` of positive scores [M] with text_to_image [M]."""
    n_texts, device = positive.shape[0], positive.device
    best = torch.full((n_images,), -torch.inf, device=device)
    best.scatter_reduce_(0, text_to_image, positive, reduce="amax")
    is_best = positive == best[text_to_image]
    best_index = torch.full((n_images,), n_texts, dtype=torch.long, device=device)
    text_ids = torch.arange(n_texts, device=device)
    best_index.scatter_reduce_(0, text_to_image[is_best], text_ids[is_best], reduce="amin")
    return Targets(positive, best, best_index)


class Side(NamedTuple):
    """One side of the counting (the images, or the texts), for its distinct rows in slot order.

    origin [K]: original index of each distinct row (its first occurrence); threshold [K]: the
    score its positive must not be beaten by (an image's best caption score, a text's own image
    score); tie_below [K]: a tie ranks above it when the other side's index is lower than this
    (the best caption's index, the text's own image); threshold_ge [K]: threshold one ulp lower,
    so that ``>`` it means ``>=`` threshold. Per block of ``chunk`` slots: bounds, the first and
    last original index; tie_bounds, the least and greatest tie_below; extras, the duplicate
    members that are not first occurrences (original indices, local slot in the block) or None.
    """

    origin: torch.Tensor
    threshold: torch.Tensor
    tie_below: torch.Tensor
    threshold_ge: torch.Tensor
    bounds: list[tuple[int, int]]
    tie_bounds: list[tuple[int, int]]
    extras: list[tuple[torch.Tensor, torch.Tensor] | None]


def side_of(
    rows: DistinctRows, threshold: torch.Tensor, tie_below: torch.Tensor, chunk: int
) -> Side:
    """The :class:`Side` of grouped rows with per-original-row threshold [n] and tie index [n]."""
    index = rows.rep
    t, below = threshold[index], tie_below[index]
    bounds = [(int(x[0]), int(x[-1])) for x in torch.split(index, chunk)]
    tie_bounds = [(int(x.min()), int(x.max())) for x in torch.split(below, chunk)]
    extras: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(bounds)
    if not rows.all_distinct:
        extra = torch.ones_like(rows.slot, dtype=torch.bool)
        extra[index] = False
        extra_index = extra.nonzero().flatten()
        block = rows.slot[extra_index] // chunk
        order = torch.argsort(block, stable=True)
        sizes = torch.bincount(block, minlength=len(bounds)).tolist()
        for b, (members, size) in enumerate(zip(torch.split(extra_index[order], sizes), sizes)):
            if size:
                extras[b] = (members, rows.slot[members] - b * chunk)
    return Side(
        index,
        t,
        below,
        torch.nextafter(t, torch.full_like(t, -torch.inf)),
        bounds,
        tie_bounds,
        extras,
    )
