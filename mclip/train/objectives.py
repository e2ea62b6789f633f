"""The loss a run optimises, built from its config: the contrastive objective, or distillation
from teachers (with its projection heads), wrapped for Matryoshka prefixes when
``loss.matryoshka_dims`` is set."""

from __future__ import annotations

import torch

from mclip.config import Config
from mclip.losses.distill_objective import DistillationObjective, DistillHeads
from mclip.losses.gather import GatherGroups
from mclip.losses.matryoshka import MatryoshkaObjective
from mclip.losses.objective import ContrastiveObjective
from mclip.train.teachers import Teacher


def build_objective(
    cfg: Config, teachers: list[Teacher], groups: GatherGroups | None, device: torch.device
) -> tuple[DistillHeads | None, ContrastiveObjective | DistillationObjective | MatryoshkaObjective]:
    """(the distillation heads on ``device``, or None without teachers; the objective).

    The heads are drawn from ``train.seed`` in a forked RNG, so they are the same whatever
    loading the teachers drew, and the run's own RNG stream is left as it was."""
    heads: DistillHeads | None = None
    objective: ContrastiveObjective | DistillationObjective | MatryoshkaObjective
    if teachers:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.train.seed)
            heads = DistillHeads(cfg.distill, cfg.model.embed_dim, [t.embed_dim for t in teachers])
        objective = DistillationObjective(
            cfg.distill,
            cfg.loss,
            heads.to(device),
            [t.logit_scale for t in teachers],
            [t.logit_bias for t in teachers],
            [t.weight for t in teachers],
            groups,
            cfg.dist.gather,
        )
    else:
        objective = ContrastiveObjective(cfg.loss, groups, cfg.dist.gather)
    if cfg.loss.matryoshka_dims:  # the loss of nested prefixes of the embedding too
        objective = MatryoshkaObjective(
            objective, cfg.loss.matryoshka_dims, cfg.loss.matryoshka_weights
        )
    return heads, objective
