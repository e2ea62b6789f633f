"""Image<->text retrieval recall@k with several captions per image, without the full matrix.

Definitions (the same as CLIP_benchmark's):
- text->image recall@k ("image retrieval"): for each caption, a hit if its image is among the
  k best images; averaged over captions.
- image->text recall@k ("text retrieval"): for each image, a hit if any of its captions is
  among the k best captions; averaged over images that have a caption.

The rank of a positive is the number of negatives that score higher, or equal with a lower
index (ties go to the lower index). Hit@k <=> rank < k. Ranks are counted over tiles of
``chunk`` images x ``chunk`` texts, so memory is O(chunk^2) for any number of images and texts.

Equal embeddings must get bit-identical scores, or exact duplicates (the same image twice, the
same caption for two images) are ranked by rounding noise: a BLAS library rounds a dot product
differently depending on the matrix shape and on where the row sits in it. So scores are computed
once per pair of *distinct* embeddings, each pair in exactly one tile, and every original pair
reads its score from there; the positives come from the same tiles as the negatives.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class _Distinct(NamedTuple):
    """Rows of an embedding matrix [N, d] grouped by exact equality.

    rows [K, d]: the distinct rows, in order of first occurrence; group [N]: the distinct row of
    each original row; members[b]: original indices whose distinct row lies in block b, i.e. in
    [b * chunk, (b + 1) * chunk). Without duplicates, rows equals the input and group is the
    identity.
    """
    rows: torch.Tensor
    group: torch.Tensor
    members: tuple[torch.Tensor, ...]

    @property
    def all_distinct(self) -> bool:
        return self.rows.shape[0] == self.group.shape[0]


def _distinct(emb: torch.Tensor, chunk: int) -> _Distinct:
    """Group the rows of ``emb`` [N, d] by exact equality, blocks of ``chunk`` distinct rows."""
    rows, group = torch.unique(emb, dim=0, return_inverse=True)
    n, n_distinct = emb.shape[0], rows.shape[0]
    first = torch.full((n_distinct,), n, dtype=torch.long, device=emb.device).scatter_reduce_(
        0, group, torch.arange(n, device=emb.device), reduce="amin")
    order = torch.argsort(first)  # keep the input order: positives stay in few tiles
    rank = torch.empty_like(order)
    rank[order] = torch.arange(n_distinct, device=emb.device)
    rows, group = rows[order], rank[group]
    block = group // chunk
    members = torch.argsort(block, stable=True)
    sizes = torch.bincount(block, minlength=(n_distinct + chunk - 1) // chunk).tolist()
    return _Distinct(rows, group, members.split(sizes))


def _tile(images: _Distinct, texts: _Distinct, a: int, b: int, chunk: int) -> torch.Tensor:
    """Scores [<= chunk, <= chunk] of distinct image block ``a`` against distinct text block ``b``.

    The only place scores are computed: the same call gives the same floats in every pass.
    """
    return (images.rows[a * chunk:(a + 1) * chunk]
            @ texts.rows[b * chunk:(b + 1) * chunk].T)


def _positive_scores(images: _Distinct, texts: _Distinct, text_to_image: torch.Tensor,
                     chunk: int) -> torch.Tensor:
    """Score of each text with its own image [M], read from the tiles that rank it.

    Only tiles that hold a positive pair are computed.
    """
    owner = images.group[text_to_image]  # the distinct image of each text's image
    positive = torch.empty(text_to_image.shape[0], device=text_to_image.device)
    for b, j in enumerate(texts.members):
        owner_block = owner[j] // chunk
        for a in torch.unique(owner_block).tolist():
            jj = j[owner_block == a]
            scores = _tile(images, texts, a, b, chunk)
            positive[jj] = scores[owner[jj] - a * chunk, texts.group[jj] - b * chunk]
    return positive


class _Targets(NamedTuple):
    """What each positive must beat: a text's own image score [M], and each image's best caption:
    its score [N] and text index [N] (ties to the lower index; (-inf, M) without a caption)."""
    positive: torch.Tensor
    best: torch.Tensor
    best_index: torch.Tensor


def _targets(positive: torch.Tensor, text_to_image: torch.Tensor, n_images: int) -> _Targets:
    """The :class:`_Targets` of positive scores [M] with text_to_image [M]."""
    n_texts, device = positive.shape[0], positive.device
    best = torch.full((n_images,), -torch.inf, device=device)
    best.scatter_reduce_(0, text_to_image, positive, reduce="amax")
    is_best = positive == best[text_to_image]
    best_index = torch.full((n_images,), n_texts, dtype=torch.long, device=device)
    text_ids = torch.arange(n_texts, device=device)
    best_index.scatter_reduce_(0, text_to_image[is_best], text_ids[is_best], reduce="amin")
    return _Targets(positive, best, best_index)


def _count_piece(scores: torch.Tensor, i: torch.Tensor, j: torch.Tensor,
                 text_to_image: torch.Tensor, targets: _Targets, t2i: torch.Tensor,
                 i2t: torch.Tensor) -> None:
    """Add to t2i [M] / i2t [N] the negatives among images i [p] x texts j [q] (scores [p, q])
    that rank above the positive: a higher score, or an equal one with a lower index."""
    owner = text_to_image[j][None, :]
    negative = owner != i[:, None]
    t = targets.positive[j][None, :]
    above_text = (scores > t) | ((scores == t) & (i[:, None] < owner))
    t2i.index_add_(0, j, (above_text & negative).sum(0))
    b, bi = targets.best[i][:, None], targets.best_index[i][:, None]
    above_image = (scores > b) | ((scores == b) & (j[None, :] < bi))
    i2t.index_add_(0, i, (above_image & negative).sum(1))


def _count_ranks(images: _Distinct, texts: _Distinct, text_to_image: torch.Tensor,
                 targets: _Targets, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Negatives above each positive: (per text [M], per image [N]), visiting every tile once.

    Each original pair reads its score from its distinct pair's tile (a gather, not a new
    product), in pieces of at most ``chunk`` x ``chunk``.
    """
    device = text_to_image.device
    t2i = torch.zeros(texts.group.shape[0], dtype=torch.long, device=device)
    i2t = torch.zeros(images.group.shape[0], dtype=torch.long, device=device)
    for a, image_members in enumerate(images.members):
        for b, text_members in enumerate(texts.members):
            scores = _tile(images, texts, a, b, chunk)
            for i in image_members.split(chunk):
                rows = scores if images.all_distinct else scores[images.group[i] - a * chunk]
                for j in text_members.split(chunk):
                    piece = rows if texts.all_distinct else rows[:, texts.group[j] - b * chunk]
                    _count_piece(piece, i, j, text_to_image, targets, t2i, i2t)
    return t2i, i2t


def retrieval_ranks(image_emb: torch.Tensor, text_emb: torch.Tensor, text_to_image: torch.Tensor,
                    chunk: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """Ranks of the positives (0 = first).

    image_emb [N, d], text_emb [M, d] (normalised), text_to_image LongTensor [M].
    Returns (text_to_image_rank [M], image_to_text_rank [N]); the rank of an image without any
    caption is -1. Equal embeddings score bit-identically, so exact duplicates tie exactly.
    """
    image_emb, text_emb = image_emb.float(), text_emb.float()
    device = image_emb.device
    text_to_image = text_to_image.to(device).long()
    n_images, n_texts = image_emb.shape[0], text_emb.shape[0]
    if n_images == 0 or n_texts == 0:
        return (torch.zeros(n_texts, dtype=torch.long, device=device),
                torch.full((n_images,), -1, dtype=torch.long, device=device))
    images, texts = _distinct(image_emb, chunk), _distinct(text_emb, chunk)
    positive = _positive_scores(images, texts, text_to_image, chunk)
    targets = _targets(positive, text_to_image, n_images)
    t2i, i2t = _count_ranks(images, texts, text_to_image, targets, chunk)
    i2t[targets.best_index == n_texts] = -1
    return t2i, i2t


def retrieval_metrics(image_emb: torch.Tensor, text_emb: torch.Tensor, text_to_image: torch.Tensor,
                      ks: tuple[int, ...] = (1, 5, 10), chunk: int = 2048) -> dict[str, float]:
    """Recall@k in both directions, as fractions in [0, 1].

    Keys: ``text_to_image_R@k`` (CLIP_benchmark ``image_retrieval_recall@k``) and
    ``image_to_text_R@k`` (``text_retrieval_recall@k``), plus ``n_images`` and ``n_texts``.
    """
    t2i, i2t = retrieval_ranks(image_emb, text_emb, text_to_image, chunk)
    i2t = i2t[i2t >= 0]
    out: dict[str, float] = {}
    for k in ks:
        out[f"text_to_image_R@{k}"] = (t2i < k).float().mean().item()
        out[f"image_to_text_R@{k}"] = (i2t < k).float().mean().item()
    out["n_images"] = int(image_emb.shape[0])
    out["n_texts"] = int(text_emb.shape[0])
    return out
