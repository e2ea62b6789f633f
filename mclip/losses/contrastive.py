"""Contrastive losses as small modules behind one interface.

``loss(image_emb, text_emb, logit_scale, logit_bias, text_to_image=None) -> scalar``, with
image_emb [N, d], text_emb [M, d] L2-normalised, ``logit_scale`` the log of the temperature
inverse (a one-number tensor: shape [] or [1]), ``logit_bias`` likewise (ignored by InfoNCE) and
``text_to_image`` the image index of each text (LongTensor [M]; None: the diagonal).
"""

from __future__ import annotations

import abc

import torch
from torch import nn

from mclip.config import LossConfig
from mclip.losses.tiled import tiled_infonce, tiled_sigmoid


class ContrastiveLoss(nn.Module, abc.ABC):
    """Base of the tiled losses: logits are computed ``chunk_size`` rows at a time, never as
    the whole matrix (memory O(chunk_size x M)); the result is exact."""

    uses_bias = False

    def __init__(self, chunk_size: int = 1024):
        super().__init__()
        self.chunk_size = chunk_size

    def forward(
        self,
        image_emb: torch.Tensor,
        text_emb: torch.Tensor,
        logit_scale: torch.Tensor,
        logit_bias: torch.Tensor | None = None,
        text_to_image: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.uses_bias and logit_bias is None:
            raise ValueError(
                f"{type(self).__name__} needs logit_bias (a tensor of shape [] or [1])"
            )
        return self.compute(image_emb, text_emb, logit_scale, logit_bias, text_to_image)

    @abc.abstractmethod
    def compute(
        self,
        image_emb: torch.Tensor,
        text_emb: torch.Tensor,
        logit_scale: torch.Tensor,
        logit_bias: torch.Tensor | None,
        text_to_image: torch.Tensor | None,
    ) -> torch.Tensor:
        """The loss (a 0-d tensor) of checked inputs, as :meth:`forward` documents them."""


class InfoNCELoss(ContrastiveLoss):
    """Symmetric InfoNCE (CLIP, arXiv:2103.00020). Uses no bias."""

    def compute(
        self,
        image_emb: torch.Tensor,
        text_emb: torch.Tensor,
        logit_scale: torch.Tensor,
        logit_bias: torch.Tensor | None,
        text_to_image: torch.Tensor | None,
    ) -> torch.Tensor:
        return tiled_infonce(image_emb, text_emb, logit_scale, text_to_image, self.chunk_size)


class SigmoidLoss(ContrastiveLoss):
    """Pairwise sigmoid loss (SigLIP, arXiv:2303.15343)."""

    uses_bias = True

    def compute(
        self,
        image_emb: torch.Tensor,
        text_emb: torch.Tensor,
        logit_scale: torch.Tensor,
        logit_bias: torch.Tensor | None,
        text_to_image: torch.Tensor | None,
    ) -> torch.Tensor:
        assert logit_bias is not None  # forward refuses a missing bias for a loss that uses one
        return tiled_sigmoid(
            image_emb, text_emb, logit_scale, logit_bias, text_to_image, self.chunk_size
        )


def build_loss(cfg: LossConfig) -> ContrastiveLoss:
    """The loss module named by ``cfg.kind`` ('infonce' or 'sigmoid')."""
    return {"infonce": InfoNCELoss, "sigmoid": SigmoidLoss}[cfg.kind](cfg.chunk_size)
