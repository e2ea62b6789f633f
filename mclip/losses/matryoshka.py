"""Matryoshka embeddings: the step's loss also on nested prefixes of the embedding.

Matryoshka Representation Learning (Kusupati et al. 2022, "Matryoshka Representation Learning",
NeurIPS, arXiv:2205.13147) trains one embedding whose first d dimensions are themselves a usable
embedding, for several d at once, so that a deployment can cut it to the size it can afford ("up
to 14x smaller embedding size ... at the same level of accuracy"). Here, with prefixes
d_1 < d_2 < ... < D and weights w_k (``loss.matryoshka_dims`` / ``loss.matryoshka_weights``):

    L = L(x, y) + sum_k w_k L(normalize(x[:, :d_k]), normalize(y[:, :d_k]))

where x, y are the normalised image and text embeddings (a prefix of a normalised vector,
re-normalised, is the prefix of the raw vector re-normalised) and L the step's objective with
the same logit scale and bias. Each prefix term goes through the same exact engine as the full
one (tiled loss, all-gather with exact backward), so the step stays exact under the gradient
cache and across ranks. For a distillation objective the prefix terms are the contrastive loss
and similarity KD (the student's prefix similarities against the teacher's); feature KD and the
cross-modal term need the full embedding for their heads and stay on it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from mclip.errors import ConfigError
from mclip.losses.distill_objective import DistillationObjective
from mclip.losses.objective import ContrastiveObjective


def prefix(embeddings: torch.Tensor, dim: int) -> torch.Tensor:
    """The first ``dim`` dimensions of [N, D] embeddings, L2-normalised: [N, dim]."""
    return F.normalize(embeddings[:, :dim], dim=-1)


class MatryoshkaObjective:
    """Wraps an objective (``ContrastiveObjective`` or ``DistillationObjective``): same call,
    returns (loss to back-propagate, global value) with the prefix terms added. ``last_terms``
    holds the wrapped objective's terms plus ``matryoshka_<d>`` (each prefix's unweighted global
    value)."""

    def __init__(
        self,
        objective: ContrastiveObjective | DistillationObjective,
        dims: list[int],
        weights: list[float] | None = None,
    ):
        self.objective = objective
        self.dims = list(dims)
        self.weights = list(weights) if weights else [1.0] * len(self.dims)
        self.terms: tuple[str, ...] | None = None
        if isinstance(objective, DistillationObjective):  # only its prefix terms get prefixes
            self.terms, cfg = objective.prefix_terms, objective.cfg
            if cfg.contrastive_weight <= 0 and cfg.similarity_weight <= 0:
                raise ConfigError(
                    "config key 'loss.matryoshka_dims' needs a term that applies to "
                    "a prefix: distill.contrastive_weight or "
                    "distill.similarity_weight > 0"
                )
        self.last_terms: dict[str, float] = {}

    def __getattr__(self, name: str) -> Any:  # uses_bias, ranks_per_loss, negatives_per_sample, ...
        return getattr(self.objective, name)

    def __call__(
        self,
        image_emb: torch.Tensor,
        text_emb: torch.Tensor,
        logit_scale: torch.Tensor,
        logit_bias: torch.Tensor,
        text_to_image: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        loss, value = self.objective(
            image_emb, text_emb, logit_scale, logit_bias, text_to_image, **kwargs
        )
        terms = dict(getattr(self.objective, "last_terms", {}))
        if self.terms is not None:
            kwargs = {**kwargs, "terms": self.terms}
        for dim, weight in zip(self.dims, self.weights):
            part, part_value = self.objective(
                prefix(image_emb, dim),
                prefix(text_emb, dim),
                logit_scale,
                logit_bias,
                text_to_image,
                **kwargs,
            )
            loss, value = loss + weight * part, value + weight * part_value
            terms[f"matryoshka_{dim}"] = float(part_value)
        self.last_terms = terms
        return loss, value
