"""Contrastive losses as small modules behind one interface.

``loss(image_emb, text_emb, logit_scale, logit_bias, text_to_image=None) -> scalar``, with
image_emb [N, d], text_emb [M, d] L2-normalised, ``logit_scale`` the log of the temperature
inverse (a scalar tensor), ``logit_bias`` a scalar tensor (ignored by InfoNCE) and
``text_to_image`` the image index of each text (LongTensor [M]; None: the diagonal).
"""

from __future__ import annotations

import torch
from torch import nn

from mclip.config import LossConfig
from mclip.losses.tiled import tiled_infonce, tiled_sigmoid


class InfoNCELoss(nn.Module):
    """Symmetric InfoNCE (CLIP, arXiv:2103.00020), tiled: logits are computed ``chunk_size``
    rows at a time, never as the whole matrix. Uses no bias."""

    uses_bias = False

    def __init__(self, chunk_size: int = 1024):
        super().__init__()
        self.chunk_size = chunk_size

    def forward(self, image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor,
                logit_bias: torch.Tensor | None = None,
                text_to_image: torch.Tensor | None = None) -> torch.Tensor:
        return tiled_infonce(image_emb, text_emb, logit_scale, text_to_image, self.chunk_size)


class SigmoidLoss(nn.Module):
    """Pairwise sigmoid loss (SigLIP, arXiv:2303.15343), tiled like :class:`InfoNCELoss`."""

    uses_bias = True

    def __init__(self, chunk_size: int = 1024):
        super().__init__()
        self.chunk_size = chunk_size

    def forward(self, image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor,
                logit_bias: torch.Tensor | None = None,
                text_to_image: torch.Tensor | None = None) -> torch.Tensor:
        if logit_bias is None:
            raise ValueError("the sigmoid loss needs logit_bias (a scalar tensor)")
        return tiled_sigmoid(image_emb, text_emb, logit_scale, logit_bias, text_to_image,
                             self.chunk_size)


def build_loss(cfg: LossConfig) -> nn.Module:
    """The loss module named by ``cfg.kind`` ('infonce' or 'sigmoid')."""
    return {"infonce": InfoNCELoss, "sigmoid": SigmoidLoss}[cfg.kind](cfg.chunk_size)
