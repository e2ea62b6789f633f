"""Image<->text retrieval recall@k with several captions per image, without the full matrix.

Definitions (the same as CLIP_benchmark's):
- text->image recall@k ("image retrieval"): for each caption, a hit if its image is among the
  k best images; averaged over captions.
- image->text recall@k ("text retrieval"): for each image, a hit if any of its captions is
  among the k best captions; averaged over images that have a caption.

The rank of a positive is the number of negatives that score higher, or equal with a lower
index (ties go to the lower index). Hit@k <=> rank < k. Ranks are counted over tiles of
``chunk`` images x ``chunk`` texts, so memory is O(chunk^2) plus the inputs and a bounded cache
(:data:`POSITIVE_TILE_CACHE_BYTES`) for any number of images and texts.

Equal embeddings must get bit-identical scores, or exact duplicates (the same image twice, the
same caption for two images) are ranked by rounding noise: a BLAS library rounds a dot product
differently depending on the matrix shape and on where the row sits in it. So scores are computed
once per pair of *distinct* embeddings, each pair in exactly one tile, and every original pair
reads its score from there; the positives come from the same tiles as the negatives. Duplicates
are found by hashing the bits of each row (exact integer arithmetic) and comparing only the rows
whose hashes collide.

How a tile is counted. Distinct rows keep the order of their first occurrence, so the rows and
the columns of a tile have ascending original indices. For a caption whose image comes after every
image row of the tile, a tie ranks above it, so it counts scores >= its positive score; for one
whose image comes before every row, it counts scores > it: either way one comparison per score
(``>= t`` is ``> nextafter(t, -inf)``). Only the captions whose image lies inside the tile's index
range (and, the other way, the images whose best caption lies inside it) need the tie test
against the index, on those columns (rows) alone. A positive never counts against itself: its
score equals the threshold and its index is not lower than its own. The tiles that hold positives
are computed first, to read the thresholds, and kept (up to the cache size) for the counting pass.
"""

from __future__ import annotations


import torch

from mclip.eval.distinct_rows import DistinctRows, distinct_rows
from mclip.eval.retrieval_tiles import (
    ScoreTiles,
    Side,
    Targets,
    positive_scores,
    side_of,
    targets_of,
)

# (original indices, their local slots in the tile or None: every slot in order)
_Members = tuple[torch.Tensor, torch.Tensor | None]

DEFAULT_CHUNK = {"cpu": 1024, "cuda": 4096}
"""Tile side by device type (rows): the fastest measured, CPU on 2 cores, CUDA on an H100."""


# --- counting ----------------------------------------------------------------------------------


def _count_main(
    scores: torch.Tensor,
    rows: Side,
    cols: Side,
    a: int,
    b: int,
    chunk: int,
    row_counts: torch.Tensor,
    col_counts: torch.Tensor,
    mask: torch.Tensor,
) -> None:
    """Count tile (a, b) of distinct rows x distinct columns into per-slot counts [K].

    rows: the images, cols: the texts (see :class:`Side`). One comparison per score and
    direction, plus the index tie test on the columns (rows) whose tie index falls inside the
    tile's row (column) index range.
    """
    p, q = scores.shape
    mask = mask[: p * q].view(p, q)
    _count_direction(
        scores,
        cols,
        b * chunk,
        rows.origin[a * chunk : a * chunk + p],
        cols.tie_bounds[b],
        rows.bounds[a],
        0,
        col_counts,
        mask,
    )
    _count_direction(
        scores,
        rows,
        a * chunk,
        cols.origin[b * chunk : b * chunk + q],
        rows.tie_bounds[a],
        cols.bounds[b],
        1,
        row_counts,
        mask,
    )


def _count_direction(
    scores: torch.Tensor,
    side: Side,
    start: int,
    other_index: torch.Tensor,
    tie_bounds: tuple[int, int],
    other_bounds: tuple[int, int],
    dim: int,
    counts: torch.Tensor,
    mask: torch.Tensor,
) -> None:
    """Add to counts[start:start + size] the scores of each column (dim=0) or row (dim=1) that
    rank above its positive; other_index: the original indices along the other dimension."""
    size = scores.shape[1 - dim]
    lo, hi = tie_bounds
    first, last = other_bounds
    threshold = side.threshold[start : start + size]
    if lo > last:  # every tie index after the other side's indices: ties rank above
        use, inside = side.threshold_ge[start : start + size], None
    elif hi < first:  # every tie index before them: ties rank below
        use, inside = threshold, None
    else:
        below = side.tie_below[start : start + size]
        use = torch.where(below > last, side.threshold_ge[start : start + size], threshold)
        inside = ((below >= first) & (below <= last)).nonzero().flatten()
    torch.gt(scores, use[None, :] if dim == 0 else use[:, None], out=mask)
    counts[start : start + size] += mask.sum(dim, dtype=torch.int32)
    if inside is not None and inside.numel():
        t, below = threshold[inside], side.tie_below[start + inside]
        if dim == 0:
            ties = (
                (scores[:, inside] == t[None, :]) & (other_index[:, None] < below[None, :])
            ).sum(0, dtype=torch.int32)
        else:
            ties = ((scores[inside] == t[:, None]) & (other_index[None, :] < below[:, None])).sum(
                1, dtype=torch.int32
            )
        counts[start + inside] += ties


def _count_exact(
    scores: torch.Tensor,
    row_index: torch.Tensor,
    col_index: torch.Tensor,
    row_t: torch.Tensor,
    row_below: torch.Tensor,
    col_t: torch.Tensor,
    col_below: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Counts (per row [p], per column [q]) of scores [p, q] that rank above each row's and each
    column's positive: higher, or equal with an index below the tie index. For small pieces."""
    col_above = (scores > col_t[None, :]) | (
        (scores == col_t[None, :]) & (row_index[:, None] < col_below[None, :])
    )
    row_above = (scores > row_t[:, None]) | (
        (scores == row_t[:, None]) & (col_index[None, :] < row_below[:, None])
    )
    return row_above.sum(1), col_above.sum(0)


def _count_extras(
    scores: torch.Tensor,
    rows: Side,
    cols: Side,
    a: int,
    b: int,
    chunk: int,
    targets: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    t2i: torch.Tensor,
    i2t: torch.Tensor,
) -> None:
    """Count the duplicate members of image block a and text block b (not their first
    occurrences, which :func:`_count_main` counts) against everything in tile (a, b)."""
    row_extra, col_extra = rows.extras[a], cols.extras[b]
    if row_extra is None and col_extra is None:
        return
    positive, best, best_index, owner = targets
    r0, c0 = a * chunk, b * chunk
    p, q = scores.shape
    main_rows, main_cols = (rows.origin[r0 : r0 + p], None), (cols.origin[c0 : c0 + q], None)
    pieces: list[tuple[_Members, _Members]] = []
    if row_extra is not None:
        pieces.append((row_extra, main_cols))
    if col_extra is not None:
        pieces.append((main_rows, col_extra))
    if row_extra is not None and col_extra is not None:
        pieces.append((row_extra, col_extra))
    for (i, i_local), (j, j_local) in pieces:
        piece = scores if i_local is None else scores[i_local]
        piece = piece if j_local is None else piece[:, j_local]
        per_row, per_col = _count_exact(piece, i, j, best[i], best_index[i], positive[j], owner[j])
        i2t.index_add_(0, i, per_row)
        t2i.index_add_(0, j, per_col)


def _count_ranks(
    tiles: ScoreTiles,
    images: DistinctRows,
    texts: DistinctRows,
    text_to_image: torch.Tensor,
    targets: Targets,
    cache: dict[tuple[int, int], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Negatives above each positive: (per text [M], per image [N]), visiting every tile once."""
    c, device = tiles.chunk, text_to_image.device
    n_images, n_texts = images.slot.shape[0], texts.slot.shape[0]
    rows = side_of(images, targets.best, targets.best_index, c)
    cols = side_of(texts, targets.positive, text_to_image, c)
    row_counts = torch.zeros(images.rep.shape[0], dtype=torch.long, device=device)
    col_counts = torch.zeros(texts.rep.shape[0], dtype=torch.long, device=device)
    t2i = torch.zeros(n_texts, dtype=torch.long, device=device)
    i2t = torch.zeros(n_images, dtype=torch.long, device=device)
    mask = torch.empty(
        min(c, images.rep.shape[0]) * min(c, texts.rep.shape[0]), dtype=torch.bool, device=device
    )
    exact = (targets.positive, targets.best, targets.best_index, text_to_image)
    for b in range(len(cols.bounds)):
        for a in range(len(rows.bounds)):
            scores = cache.pop((a, b), None)
            if scores is None:
                scores = tiles.tile(a, b)
            _count_main(scores, rows, cols, a, b, c, row_counts, col_counts, mask)
            _count_extras(scores, rows, cols, a, b, c, exact, t2i, i2t)
    t2i[texts.rep] += col_counts
    i2t[images.rep] += row_counts
    return t2i, i2t


# --- public --------------------------------------------------------------------------------


def _check_inputs(
    image_emb: torch.Tensor, text_emb: torch.Tensor, text_to_image: torch.Tensor, chunk: int
) -> None:
    """Raise ValueError naming the bad argument and the fix."""
    if image_emb.dim() != 2 or text_emb.dim() != 2:
        raise ValueError(
            f"retrieval: image_emb and text_emb must be 2-D [count, dim]; got shapes "
            f"{tuple(image_emb.shape)} and {tuple(text_emb.shape)}"
        )
    if image_emb.shape[1] != text_emb.shape[1]:
        raise ValueError(
            f"retrieval: image_emb has dim {image_emb.shape[1]} but text_emb has "
            f"{text_emb.shape[1]}; embed both with the same model"
        )
    if text_to_image.shape != (text_emb.shape[0],):
        raise ValueError(
            f"retrieval: text_to_image must have one image index per text, shape "
            f"({text_emb.shape[0]},); got {tuple(text_to_image.shape)}"
        )
    if text_to_image.numel() and (
        int(text_to_image.min()) < 0 or int(text_to_image.max()) >= image_emb.shape[0]
    ):
        raise ValueError(
            f"retrieval: text_to_image holds indices outside [0, "
            f"{image_emb.shape[0]}) (the number of images); pass each caption's "
            f"row in image_emb"
        )
    if chunk < 1:
        raise ValueError(f"retrieval: chunk must be a positive number of rows, got {chunk}")


def retrieval_ranks(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    text_to_image: torch.Tensor,
    chunk: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ranks of the positives (0 = first).

    image_emb [N, d], text_emb [M, d] (normalised), text_to_image LongTensor [M] (indices into
    image_emb); chunk: the tile side in rows (about 5 * chunk^2 bytes per tile; default
    :data:`DEFAULT_CHUNK` for the device). Memory beyond the inputs: the tiles, the positive-tile
    cache (:data:`POSITIVE_TILE_CACHE_BYTES`) and O(N + M) indices.
    Returns (text_to_image_rank [M], image_to_text_rank [N]); the rank of an image without any
    caption is -1. Equal embeddings score bit-identically, so exact duplicates tie exactly.
    """
    if chunk is None:
        chunk = DEFAULT_CHUNK.get(image_emb.device.type, DEFAULT_CHUNK["cuda"])
    _check_inputs(image_emb, text_emb, text_to_image, chunk)
    image_emb, text_emb = image_emb.float().contiguous(), text_emb.float().contiguous()
    device = image_emb.device
    text_to_image = text_to_image.to(device).long()
    n_images, n_texts = image_emb.shape[0], text_emb.shape[0]
    if n_images == 0 or n_texts == 0:
        return (
            torch.zeros(n_texts, dtype=torch.long, device=device),
            torch.full((n_images,), -1, dtype=torch.long, device=device),
        )
    images, texts = distinct_rows(image_emb), distinct_rows(text_emb)
    tiles = ScoreTiles(image_emb, images, text_emb, texts, chunk)
    positive, cache = positive_scores(tiles, images, texts, text_to_image)
    targets = targets_of(positive, text_to_image, n_images)
    t2i, i2t = _count_ranks(tiles, images, texts, text_to_image, targets, cache)
    i2t[targets.best_index == n_texts] = -1
    return t2i, i2t


def retrieval_metrics(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    text_to_image: torch.Tensor,
    ks: tuple[int, ...] = (1, 5, 10),
    chunk: int | None = None,
) -> dict[str, float]:
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
