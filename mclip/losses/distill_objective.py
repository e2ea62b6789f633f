"""The loss of a distillation step: the contrastive loss plus weighted distillation terms, on one
process or as each rank's exact share (as :mod:`mclip.losses.objective` does for the contrastive
loss: own rows and columns against the gathered batch, shares summing to the full-batch loss,
back-propagated ``world_size`` times so that averaging gradients gives the full-batch gradient).

Terms (weights in :class:`mclip.config.DistillConfig`), with B images, M texts:

- ``similarity_kd``: softmax form (mean_i KL_row_i + mean_j KL_col_j) / 2, or the sigmoid form
  1/B sum_ij KL_ij (:mod:`mclip.losses.distill`);
- ``feature_kd``: mean over samples of the distance between the student's projected embedding
  and the teacher's, averaged over the chosen towers and (by weight) over the teachers;
- ``cross_contrastive``: (InfoNCE(student image, teacher text) + InfoNCE(teacher image, student
  text)) / 2 with its own learned logit scale (CLIP-KD's interactive contrastive learning,
  arXiv:2307.12732), averaged over the teachers by weight.

The learned parts (projections when the student's and a teacher's sizes differ, the cross
logit scale) are a module of their own, :class:`DistillHeads`, trained with the student.
"""

from __future__ import annotations

import functools
import math
import operator

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from mclip.config import DistillConfig, LossConfig
from mclip.losses.distill import feature_distance, sigmoid_kd_sum, softmax_kd_rows
from mclip.losses.gather import GatherGroups, gather_embeddings
from mclip.losses.objective import ContrastiveObjective

TeacherEmbeddings = list[tuple[torch.Tensor, torch.Tensor]]
"""One (image [n, d_k], text [m, d_k]) pair of normalised embeddings per teacher."""


class DistillHeads(nn.Module):
    """Per teacher and tower, a bias-free linear map from the student's ``embed_dim`` to the
    teacher's size (identity when the sizes agree), the cross-modal logit scale, and the logit
    scale of the InfoNCE teacher-learning term (:mod:`mclip.train.parallel_term`).

    Projections exist only when feature KD, the cross-modal loss or teacher learning is on;
    outputs are re-normalised, so every distance compares unit vectors.
    """

    def __init__(self, cfg: DistillConfig, embed_dim: int, teacher_dims: list[int]):
        super().__init__()
        needed = cfg.feature_weight > 0 or cfg.cross_weight > 0 or cfg.parallel_weight > 0

        def maps() -> nn.ModuleList:
            return nn.ModuleList(
                nn.Linear(embed_dim, d, bias=False) if needed and d != embed_dim else nn.Identity()
                for d in teacher_dims
            )

        self.image, self.text = maps(), maps()
        self.cross_logit_scale = (
            nn.Parameter(torch.tensor(float(cfg.cross_init_logit_scale)))
            if cfg.cross_weight > 0
            else None
        )
        self.parallel_logit_scale = (
            nn.Parameter(torch.tensor(math.log(1 / 0.07)))
            if cfg.parallel_weight > 0 and cfg.parallel_loss == "infonce"
            else None
        )

    def clamp_logit_scale(self, max_scale: float | None) -> None:
        """Clamp the learned exp(logit_scale)s (cross-modal, teacher learning) to at most
        ``max_scale`` (None: never), as the student's own is (``model.max_logit_scale``)."""
        for scale in (self.cross_logit_scale, self.parallel_logit_scale):
            if scale is not None and max_scale is not None:
                with torch.no_grad():
                    scale.clamp_(max=math.log(max_scale))

    def project(self, tower: str, teacher: int, emb: torch.Tensor) -> torch.Tensor:
        """Student embeddings [n, embed_dim] -> normalised [n, d_teacher]."""
        head = (self.image if tower == "image" else self.text)[teacher]
        return emb if isinstance(head, nn.Identity) else F.normalize(head(emb), dim=-1)


class DistillationObjective:
    """``objective(image_emb [n, d], text_emb [m, d], logit_scale, logit_bias, text_to_image,
    teachers)`` -> (loss to back-propagate, global loss value); per-term global values of the
    last call are in ``last_terms``.

    ``teachers``: :data:`TeacherEmbeddings` of this rank's samples; ``teacher_scales`` /
    ``teacher_biases`` / ``teacher_weights`` one number per teacher.
    """

    def __init__(
        self,
        cfg: DistillConfig,
        loss: LossConfig,
        heads: DistillHeads,
        teacher_scales: list[float],
        teacher_biases: list[float],
        teacher_weights: list[float],
        groups: GatherGroups | None = None,
        mode: str = "exact",
    ):
        self.cfg, self.heads, self.chunk = cfg, heads, loss.chunk_size
        self.contrastive = ContrastiveObjective(loss, groups, mode)
        self.cross = ContrastiveObjective(
            LossConfig(kind="infonce", chunk_size=loss.chunk_size), groups, mode
        )
        self.scales, self.biases = list(teacher_scales), list(teacher_biases)
        self.weights = [w / sum(teacher_weights) for w in teacher_weights]
        self.groups, self.mode = groups, mode
        self.last_terms: dict[str, float] = {}

    @property
    def uses_bias(self) -> bool:
        """Whether the student's logit bias takes part (sigmoid contrastive or sigmoid KD)."""
        return (self.contrastive.uses_bias and self.cfg.contrastive_weight > 0) or (
            self.cfg.similarity == "sigmoid" and self.cfg.similarity_weight > 0
        )

    @property
    def ranks_per_loss(self) -> int:
        return self.contrastive.ranks_per_loss

    def negatives_per_sample(self, local_batch: int) -> int:
        return self.contrastive.negatives_per_sample(local_batch)

    def _all(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor if self.groups is None else gather_embeddings(tensor, self.groups, self.mode)

    prefix_terms = ("contrastive", "similarity_kd")
    """The terms that apply to a Matryoshka prefix of the student's embedding
    (:mod:`mclip.losses.matryoshka`): feature KD and the cross-modal term compare against the
    teacher's full space through heads of the full size."""

    def __call__(
        self,
        image_emb: torch.Tensor,
        text_emb: torch.Tensor,
        logit_scale: torch.Tensor,
        logit_bias: torch.Tensor,
        text_to_image: torch.Tensor | None,
        teachers: TeacherEmbeddings,
        terms: tuple[str, ...] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``terms``: compute only these (None: every term with a weight)."""
        cfg, world = self.cfg, 1 if self.groups is None else self.groups.world_size
        scaled: list[torch.Tensor] = []  # world-scaled shares to back-propagate
        names: list[str] = []
        shares: list[torch.Tensor] = []  # raw shares

        def wanted(name: str, weight: float) -> bool:
            return weight > 0 and (terms is None or name in terms)

        if wanted("contrastive", cfg.contrastive_weight):
            to_backward, _ = self.contrastive(
                image_emb, text_emb, logit_scale, logit_bias, text_to_image
            )
            scaled.append(cfg.contrastive_weight * to_backward)
            names.append("contrastive")
            shares.append(to_backward.detach() / world)
        own = []
        if wanted("similarity_kd", cfg.similarity_weight):
            own.append(
                (
                    "similarity_kd",
                    cfg.similarity_weight,
                    self._similarity(image_emb, text_emb, logit_scale, logit_bias, teachers),
                )
            )
        if wanted("feature_kd", cfg.feature_weight):
            own.append(
                ("feature_kd", cfg.feature_weight, self._feature(image_emb, text_emb, teachers))
            )
        if wanted("cross_contrastive", cfg.cross_weight):
            to_backward = self._cross(image_emb, text_emb, text_to_image, teachers)
            scaled.append(cfg.cross_weight * to_backward)
            names.append("cross_contrastive")
            shares.append(to_backward.detach() / world)
        for name, weight, share in own:
            scaled.append(weight * share * world)
            names.append(name)
            shares.append(share.detach())
        values = torch.stack([s.float() for s in shares])
        if self.groups is not None:
            dist.all_reduce(values)
        weights = {
            "contrastive": cfg.contrastive_weight,
            "similarity_kd": cfg.similarity_weight,
            "feature_kd": cfg.feature_weight,
            "cross_contrastive": cfg.cross_weight,
        }
        total = functools.reduce(operator.add, (weights[n] * v for n, v in zip(names, values)))
        self.last_terms = {n: float(v) for n, v in zip(names, values)}
        return functools.reduce(operator.add, scaled), total.detach()

    def _counts(self, n: int) -> int:
        """How many of n-per-rank items one loss covers (all ranks, the group, or this one)."""
        return self.ranks_per_loss * n

    def _similarity(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        logit_scale: torch.Tensor,
        logit_bias: torch.Tensor,
        teachers: TeacherEmbeddings,
    ) -> torch.Tensor:
        n, m = x.shape[0], y.shape[0]
        all_x, all_y = self._all(x), self._all(y)
        if self.cfg.similarity == "sigmoid":
            pairs = [(a, self._all(b)) for a, b in teachers]
            total = sigmoid_kd_sum(
                x,
                all_y,
                logit_scale,
                logit_bias,
                pairs,
                self.scales,
                self.biases,
                self.weights,
                self.chunk,
            )
            share = total / self._counts(n)
        else:
            rows = softmax_kd_rows(
                x,
                all_y,
                logit_scale,
                [(a, self._all(b)) for a, b in teachers],
                self.scales,
                self.weights,
                self.chunk,
            )
            cols = softmax_kd_rows(
                y,
                all_x,
                logit_scale,
                [(b, self._all(a)) for a, b in teachers],
                self.scales,
                self.weights,
                self.chunk,
            )
            share = (rows.sum() / self._counts(n) + cols.sum() / self._counts(m)) / 2
        return self._group_mean(share)

    def _feature(
        self, x: torch.Tensor, y: torch.Tensor, teachers: TeacherEmbeddings
    ) -> torch.Tensor:
        towers = self.cfg.feature_towers
        share = x.new_zeros(())
        for k, (a, b) in enumerate(teachers):
            for tower, student, teacher in (("image", x, a), ("text", y, b)):
                if tower in towers:
                    distance = feature_distance(
                        self.heads.project(tower, k, student), teacher, self.cfg.feature_distance
                    )
                    share = share + self.weights[k] * distance.sum() / (
                        self._counts(student.shape[0]) * len(towers)
                    )
        return self._group_mean(share)

    def _cross(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        text_to_image: torch.Tensor | None,
        teachers: TeacherEmbeddings,
    ) -> torch.Tensor:
        scale = self.heads.cross_logit_scale
        assert scale is not None  # the heads have one whenever distill.cross_weight > 0
        total = x.new_zeros(())
        for k, (a, b) in enumerate(teachers):
            image_vs_teacher_text, _ = self.cross(
                self.heads.project("image", k, x), b, scale, None, text_to_image
            )
            teacher_image_vs_text, _ = self.cross(
                a, self.heads.project("text", k, y), scale, None, text_to_image
            )
            total = total + self.weights[k] * (image_vs_teacher_text + teacher_image_vs_text) / 2
        return total

    def _group_mean(self, share: torch.Tensor) -> torch.Tensor:
        """group_local: the value is the mean of the group losses, as for the contrastive loss."""
        if self.groups is not None and self.mode == "group_local":
            return share / self.groups.n_groups
        return share
