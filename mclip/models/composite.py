"""Composite models: another model's image tower, frozen, with an mclip text tower.

Multilingual-CLIP keeps an English CLIP's image tower and replaces its text tower by a
multilingual one taught to land in the same space. :func:`composite_config` rewrites a training
config so that its image tower (architecture, preprocessing, embedding size, logit scale and
bias) is the given model's — an mclip model, an open_clip model or a transformers CLIP /
SigLIP — and frozen; :func:`load_image_tower` copies that model's image-tower weights in. The
result is an ordinary mclip checkpoint: ``mclip eval``, ``load_model`` and serving need nothing
else (no network: the architecture is stored in the checkpoint).
"""

from __future__ import annotations

import copy

import torch

from mclip.config import Config
from mclip.models.adapters.native import NativeAdapter
from mclip.models.dual import DualEncoder
from mclip.models.foreign_towers import image_tower_from_model


def composite_config(cfg: Config, image_model) -> tuple[Config, dict[str, torch.Tensor]]:
    """(``cfg`` with ``image_model``'s frozen image tower, that tower's weights).

    ``image_model``: an adapter from :func:`mclip.models.adapters.load_model`. The weights are an
    :class:`~mclip.models.towers.ImageTower` state dict, for :func:`load_image_tower`.
    """
    cfg = copy.deepcopy(cfg)
    if isinstance(image_model, NativeAdapter):
        source = image_model.config.model
        cfg.model.image = copy.deepcopy(source.image)
        cfg.model.image.projection = source.image.projection or source.projection
        cfg.model.embed_dim = source.embed_dim
        weights = dict(image_model.model.image.state_dict())
        scale = float(image_model.model.logit_scale.detach())
        bias = float(image_model.model.logit_bias.detach())
    else:
        fields, weights, scale, bias = image_tower_from_model(image_model)
        cfg.model.image = type(cfg.model.image)(**fields, projection="none")
        cfg.model.embed_dim = int(image_model.embed_dim)
    cfg.model.image.freeze, cfg.model.image.pretrained = ["*"], False
    cfg.model.init_logit_scale, cfg.model.init_logit_bias = scale, bias
    return cfg, weights


def load_image_tower(model: DualEncoder, weights: dict[str, torch.Tensor]) -> None:
    """Copy ``weights`` (from :func:`composite_config`) into ``model``'s image tower."""
    model.image.load_state_dict(weights)
