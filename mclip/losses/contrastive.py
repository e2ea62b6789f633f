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
from mclip.losses.reference import infonce_reference, sigmoid_reference


class InfoNCELoss(nn.Module):
    """Symmetric InfoNCE (CLIP, arXiv:2103.00020). Uses no bias."""

    uses_bias = False

    def forward(self, image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor,
                logit_bias: torch.Tensor | None = None,
                text_to_image: torch.Tensor | None = None) -> torch.Tensor:
        return infonce_reference(image_emb, text_emb, logit_scale, text_to_image)


class SigmoidLoss(nn.Module):
    """Pairwise sigmoid loss (SigLIP, arXiv:2303.15343)."""

    uses_bias = True

    def forward(self, image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor,
                logit_bias: torch.Tensor | None = None,
                text_to_image: torch.Tensor | None = None) -> torch.Tensor:
        if logit_bias is None:
            raise ValueError("the sigmoid loss needs logit_bias (a scalar tensor)")
        return sigmoid_reference(image_emb, text_emb, logit_scale, logit_bias, text_to_image)


def build_loss(cfg: LossConfig) -> nn.Module:
    """The loss module named by ``cfg.kind`` ('infonce' or 'sigmoid')."""
    return {"infonce": InfoNCELoss, "sigmoid": SigmoidLoss}[cfg.kind]()
