"""The contrastive objective of one training step, on one process or across many.

On one process it is the tiled InfoNCE / sigmoid loss of the whole batch. Under
torch.distributed, each rank holds n images and m texts, every text's image on the same rank
(``text_to_image``, local indices; None: m = n and text j belongs to image j); embeddings are
gathered (:mod:`mclip.losses.gather`) and each rank computes only its share of the global loss: its
own rows (images against every text) and, for InfoNCE, its own columns (texts against every image).
The shares sum to the full-batch loss; each rank back-propagates ``world_size x share`` so that
averaging gradients over ranks (as DDP does) gives exactly the single-process full-batch gradient.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from mclip.losses.contrastive import build_loss
from mclip.losses.gather import GatherGroups, gather_embeddings
from mclip.losses.reference import positive_index
from mclip.losses.tiled import TiledLogSumExp, TiledSoftplusSum, positive_logits
from mclip.config import LossConfig


class ContrastiveObjective:
    """``objective(image_emb [n, d], text_emb [m, d], logit_scale, logit_bias, text_to_image)``
    -> (loss to back-propagate, global loss value for logging).

    ``text_to_image`` LongTensor [m]: the local index of each text's image (several captions
    per image: several texts share an image; the multi-positive loss is
    :func:`mclip.losses.reference.infonce_reference`). Every rank holds the same n and m.

    ``groups`` None: single process. ``mode``: 'exact' (negatives from every rank) or
    'group_local' (negatives from the rank's group only; the value is the mean of the group
    losses).
    """

    def __init__(self, cfg: LossConfig, groups: GatherGroups | None = None, mode: str = "exact"):
        self.kind, self.chunk = cfg.kind, cfg.chunk_size
        self.single = build_loss(cfg)
        self.uses_bias = self.single.uses_bias
        self.groups, self.mode = groups, mode

    @property
    def ranks_per_loss(self) -> int:
        """How many ranks' pairs enter one loss: all (exact), the group (group_local), or 1."""
        if self.groups is None:
            return 1
        return self.groups.world_size if self.mode == "exact" else self.groups.group_size

    def negatives_per_sample(self, local_batch: int) -> int:
        """How many negatives each image (and text) is contrasted with."""
        return self.ranks_per_loss * local_batch - 1

    def __call__(
        self,
        image_emb: torch.Tensor,
        text_emb: torch.Tensor,
        logit_scale: torch.Tensor,
        logit_bias: torch.Tensor | None,
        text_to_image: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.groups is None:
            loss = self.single(image_emb, text_emb, logit_scale, logit_bias, text_to_image)
            return loss, loss.detach()
        groups, n_images, n_texts = self.groups, image_emb.shape[0], text_emb.shape[0]
        pos = positive_index(text_to_image, n_images, n_texts, image_emb.device)
        positive = positive_logits(image_emb, text_emb, logit_scale, pos)
        all_texts = gather_embeddings(text_emb, groups, self.mode)
        if self.kind == "infonce":
            all_images = gather_embeddings(image_emb, groups, self.mode)
            row_lse = TiledLogSumExp.apply(image_emb, all_texts, logit_scale, self.chunk, False)[0]
            col_lse = TiledLogSumExp.apply(text_emb, all_images, logit_scale, self.chunk, False)[0]
            pairs = self.ranks_per_loss * n_texts  # every positive pair has a text of its own
            share = (row_lse[pos].sum() + col_lse.sum() - 2 * positive.sum()) / (2 * pairs)
        else:
            if logit_bias is None:
                raise ValueError(f"{self.kind} loss needs logit_bias (a tensor of shape [] or [1])")
            total = TiledSoftplusSum.apply(
                image_emb, all_texts, logit_scale, logit_bias, self.chunk
            )
            images = self.ranks_per_loss * n_images
            share = (total - (positive + logit_bias.to(positive.dtype)).sum()) / images
        if self.mode == "group_local":
            share = share / groups.n_groups
        value = share.detach().clone()
        dist.all_reduce(value)
        return share * groups.world_size, value
