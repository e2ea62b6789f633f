"""Image<->text retrieval recall@k with several captions per image, without the full matrix.

Definitions (the same as CLIP_benchmark's):
- text->image recall@k ("image retrieval"): for each caption, a hit if its image is among the
  k best images; averaged over captions.
- image->text recall@k ("text retrieval"): for each image, a hit if any of its captions is
  among the k best captions; averaged over images that have a caption.

The rank of a positive is the number of negatives that score higher, or equal with a lower
index (ties go to the lower index). Hit@k <=> rank < k. Ranks are counted over tiles of
``chunk`` queries x ``chunk`` keys, so memory is O(chunk^2) for any number of images and texts.
"""

from __future__ import annotations

import torch


def _count_above(queries: torch.Tensor, keys: torch.Tensor, target_score: torch.Tensor,
                 target_index: torch.Tensor, is_positive, chunk: int) -> torch.Tensor:
    """For each query q: #keys k (not positive for q) with s_qk > t_q, or s_qk == t_q and k < i_q."""
    counts = torch.zeros(queries.shape[0], dtype=torch.long, device=queries.device)
    for q0 in range(0, queries.shape[0], chunk):
        q = slice(q0, q0 + chunk)
        q_idx = torch.arange(q0, min(q0 + chunk, queries.shape[0]), device=queries.device)
        t, ti = target_score[q, None], target_index[q, None]
        for k0 in range(0, keys.shape[0], chunk):
            k_idx = torch.arange(k0, min(k0 + chunk, keys.shape[0]), device=keys.device)
            scores = queries[q] @ keys[k0:k0 + chunk].T
            above = (scores > t) | ((scores == t) & (k_idx[None, :] < ti))
            above &= ~is_positive(q_idx, k_idx)
            counts[q] += above.sum(1)
    return counts


def retrieval_ranks(image_emb: torch.Tensor, text_emb: torch.Tensor, text_to_image: torch.Tensor,
                    chunk: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """Ranks of the positives (0 = first).

    image_emb [N, d], text_emb [M, d] (normalised), text_to_image LongTensor [M].
    Returns (text_to_image_rank [M], image_to_text_rank [N]); the rank of an image without any
    caption is -1.
    """
    image_emb, text_emb = image_emb.float(), text_emb.float()
    text_to_image = text_to_image.to(image_emb.device).long()
    n_images, n_texts = image_emb.shape[0], text_emb.shape[0]
    text_ids = torch.arange(n_texts, device=image_emb.device)

    positive_score = (text_emb * image_emb[text_to_image]).sum(1)  # [M]
    t2i = _count_above(text_emb, image_emb, positive_score, text_to_image,
                       lambda q, k: k[None, :] == text_to_image[q][:, None], chunk)

    best = torch.full((n_images,), -torch.inf, device=image_emb.device)
    best.scatter_reduce_(0, text_to_image, positive_score, reduce="amax")
    is_best = positive_score == best[text_to_image]
    best_index = torch.full((n_images,), n_texts, dtype=torch.long, device=image_emb.device)
    best_index.scatter_reduce_(0, text_to_image[is_best], text_ids[is_best], reduce="amin")
    i2t = _count_above(image_emb, text_emb, best, best_index,
                       lambda q, k: text_to_image[k][None, :] == q[:, None], chunk)
    i2t[best_index == n_texts] = -1
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
