"""Straightforward contrastive losses that build the full logit matrix.

They define what the losses are; the tiled engine must match them. Memory is O(N*M).

Notation: x [N, d] image embeddings, y [M, d] text embeddings (both L2-normalised),
t = exp(logit_scale), s_ij = t <x_i, y_j> (+ b for sigmoid). Positives are pairs
(text_to_image[j], j): every text has exactly one image; an image may have several texts
(several captions, several languages) or none.
"""

from __future__ import annotations

import functools
import operator
from typing import Iterable

import torch
import torch.nn.functional as F


def positive_index(
    text_to_image: torch.Tensor | None, n_images: int, n_texts: int, device: torch.device
) -> torch.Tensor:
    """The image index of each text, LongTensor [M]; the diagonal when ``text_to_image`` is None."""
    if text_to_image is None:
        if n_images != n_texts:
            raise ValueError(
                f"{n_images} images and {n_texts} texts: pass text_to_image "
                f"(the image index of each text) when the counts differ"
            )
        return torch.arange(n_texts, device=device)
    text_to_image = torch.as_tensor(text_to_image, device=device, dtype=torch.long)
    if text_to_image.shape != (n_texts,):
        raise ValueError(
            f"text_to_image has shape {tuple(text_to_image.shape)}, expected ({n_texts},)"
        )
    if n_texts and (text_to_image.min() < 0 or text_to_image.max() >= n_images):
        raise ValueError(f"text_to_image holds indices outside [0, {n_images})")
    return text_to_image


def _sum(terms: Iterable[torch.Tensor]) -> torch.Tensor:
    """The sum of at least one tensor, added left to right (as ``sum`` would, without its 0)."""
    return functools.reduce(operator.add, terms)


def compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    """fp32 for half-precision inputs, else the input's own dtype (fp64 stays fp64)."""
    return torch.promote_types(tensor.dtype, torch.float32)


def infonce_reference(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    logit_scale: torch.Tensor,
    text_to_image: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP; Radford et al. 2021, arXiv:2103.00020) over positive pairs P.

    L = 1/(2|P|) sum_{(i,j) in P} [(lse_k s_ik - s_ij) + (lse_k s_kj - s_ij)]; on the diagonal
    this is the usual mean of the image->text and text->image cross-entropies. Returns a scalar.

    Several texts per image (``data.captions_per_image``): each positive pair is its own
    cross-entropy term, the image->text one over all texts (the image's other captions count in
    the denominator), averaged over pairs: the "L_out" multi-positive form of SupCon (Khosla et
    al. 2020, arXiv:2004.11362, eq. 2) as UniCL uses it for image-text pairs (Yang et al. 2022,
    arXiv:2204.03610). Text->image stays a plain cross-entropy: a text has one image.
    """
    pos = positive_index(text_to_image, image_emb.shape[0], text_emb.shape[0], image_emb.device)
    dtype = compute_dtype(image_emb)
    logits = logit_scale.to(dtype).exp() * image_emb.to(dtype) @ text_emb.to(dtype).T
    cols = torch.arange(text_emb.shape[0], device=logits.device)
    positive = logits[pos, cols]
    row_lse = torch.logsumexp(logits, dim=1)[pos]
    col_lse = torch.logsumexp(logits, dim=0)
    return ((row_lse - positive) + (col_lse - positive)).mean() / 2


def sigmoid_reference(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    text_to_image: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pairwise sigmoid loss (SigLIP; Zhai et al. 2023, arXiv:2303.15343).

    L = -1/N sum_ij log sigmoid(z_ij s_ij), z_ij = +1 for positive pairs and -1 otherwise,
    N the number of images. Returns a scalar.
    """
    n_images, n_texts = image_emb.shape[0], text_emb.shape[0]
    pos = positive_index(text_to_image, n_images, n_texts, image_emb.device)
    dtype = compute_dtype(image_emb)
    logits = logit_scale.to(dtype).exp() * image_emb.to(dtype) @ text_emb.to(
        dtype
    ).T + logit_bias.to(dtype)
    signs = -torch.ones_like(logits)
    signs[pos, torch.arange(n_texts, device=logits.device)] = 1.0
    return -F.logsigmoid(signs * logits).sum() / n_images


def similarity_kd_reference(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    logit_scale: torch.Tensor,
    teachers: list[tuple[torch.Tensor, torch.Tensor]],
    teacher_scales: list[float],
    weights: list[float] | None = None,
) -> torch.Tensor:
    """Softmax similarity KD with the full matrices (CLIP-KD, arXiv:2307.12732).

    (mean_i KL(p_T(i, .) || p_S(i, .)) + mean_j KL(p_T(., j) || p_S(., j))) / 2, p_S the
    softmax of s = t x y^T along a row (column), p_T = sum_k w_k softmax(t_k a_k b_k^T).
    """
    dtype = compute_dtype(image_emb)
    weights = (
        [1.0 / len(teachers)] * len(teachers)
        if weights is None
        else [w / sum(weights) for w in weights]
    )
    logits = logit_scale.to(dtype).exp() * image_emb.to(dtype) @ text_emb.to(dtype).T
    halves = []
    for dim in (1, 0):
        p_t = _sum(
            w * torch.softmax(t * a.to(dtype) @ b.to(dtype).T, dim=dim)
            for (a, b), t, w in zip(teachers, teacher_scales, weights)
        )
        kl = (p_t * (p_t.log() - torch.log_softmax(logits, dim=dim))).sum(dim)
        halves.append(kl.mean() / 2)
    return halves[0] + halves[1]


def sigmoid_kd_reference(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    teachers: list[tuple[torch.Tensor, torch.Tensor]],
    teacher_scales: list[float],
    teacher_biases: list[float],
    weights: list[float] | None = None,
) -> torch.Tensor:
    """1/N sum_ij KL(Bernoulli(p_T_ij) || Bernoulli(sigmoid(s_ij))) with the full matrices,
    p_T = sum_k w_k sigmoid(t_k <a_i, b_j> + b_k), s = t x y^T + b."""
    dtype = compute_dtype(image_emb)
    weights = (
        [1.0 / len(teachers)] * len(teachers)
        if weights is None
        else [w / sum(weights) for w in weights]
    )
    s = logit_scale.to(dtype).exp() * image_emb.to(dtype) @ text_emb.to(dtype).T + logit_bias.to(
        dtype
    )
    p = _sum(
        w * torch.sigmoid(t * a.to(dtype) @ b.to(dtype).T + bias)
        for (a, b), t, bias, w in zip(teachers, teacher_scales, teacher_biases, weights)
    )
    kl = (
        torch.xlogy(p, p)
        - p * F.logsigmoid(s)
        + torch.xlogy(1 - p, 1 - p)
        - (1 - p) * F.logsigmoid(-s)
    )
    return kl.sum() / image_emb.shape[0]
