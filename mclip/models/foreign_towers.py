"""Image towers taken from other libraries' dual encoders: ``open_clip:ARCH`` and ``hf:NAME``.

``model.image.name: open_clip:ViT-B-32`` makes the image tower open_clip's visual tower of that
architecture, ``hf:DIR`` (or a hub name) the vision part of a transformers CLIP / SigLIP model;
``model.image.pretrained`` gives the weights (an open_clip tag or file; ``true`` for hf). Their
output is already the source model's image embedding, so with ``model.projection: none`` an
mclip model reproduces the source model's image embeddings exactly — the Multilingual-CLIP
setting: a frozen image tower from another model, paired with an mclip text tower.

A checkpoint stores the architecture beside the weights (``image_tower/``: open_clip's model
config JSON, or the transformers config), so it loads with no network access, like any mclip
model. :func:`image_tower_from_model` turns a loaded model (any adapter) into the config fields
and weights of such a tower.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mclip.errors import ConfigError

OPEN_CLIP, HF = "open_clip:", "hf:"
PREFIXES = (OPEN_CLIP, HF)
SOURCE_DIR = "image_tower"
"""Where a checkpoint keeps a foreign image tower's architecture."""


def is_foreign(name: str) -> bool:
    """Whether ``model.image.name`` names an open_clip or transformers tower (not timm)."""
    return name.startswith(PREFIXES)


class ForeignImageTrunk(nn.Module):
    """A foreign image tower: images [N, 3, H, W] -> the source model's image embedding
    [N, num_features] (projected by the source model, not normalised)."""

    def __init__(self, model: nn.Module, kind: str, num_features: int):
        super().__init__()
        self.model, self.kind, self.num_features = model, kind, int(num_features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.kind == "open_clip":
            return self.model(images)
        from mclip.models.adapters.hf import _embedding

        model: Any = self.model  # a transformers model, typed by torch as Tensor | Module
        return _embedding(model.get_image_features(pixel_values=images), "get_image_features")

    def save_source(self, directory: str | Path, name: str) -> None:
        """Write the architecture (no weights) into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.kind == "open_clip":
            arch = name[len(OPEN_CLIP) :]
            (directory / f"{arch}.json").write_text(json.dumps(self.model_config), "utf-8")
        else:
            model: Any = self.model
            model.config.save_pretrained(directory)


def _drop_text_parts(model: nn.Module) -> nn.Module:
    """A transformers dual encoder without its text tower (unused by get_image_features)."""
    for attribute in ("text_model", "text_projection"):
        if isinstance(getattr(model, attribute, None), nn.Module):
            setattr(model, attribute, nn.Identity())
    return model


def _open_clip_trunk(
    arch: str, pretrained, load_pretrained: bool, source: Path | None
) -> ForeignImageTrunk:
    import open_clip

    if source is not None and (source / f"{arch}.json").is_file():
        open_clip.add_model_config(source / f"{arch}.json")
    config = open_clip.get_model_config(arch)
    if config is None:
        raise ConfigError(
            f"config key 'model.image.name': open_clip has no architecture '{arch}' "
            f"(open_clip.list_models() lists them)"
        )
    if load_pretrained and pretrained:
        from mclip.models.adapters.open_clip import load_open_clip

        visual: Any = load_open_clip(arch, str(pretrained)).model.visual
    else:
        visual = open_clip.create_model(arch, pretrained=None).visual
    trunk = ForeignImageTrunk(visual, "open_clip", int(config["embed_dim"]))
    trunk.model_config = config
    return trunk


def _hf_trunk(
    name: str, pretrained, load_pretrained: bool, source: Path | None
) -> ForeignImageTrunk:
    from transformers import AutoConfig, AutoModel

    where = str(source) if source is not None else name
    model: Any  # a transformers model: its attributes are the library's, not nn.Module's
    try:
        if load_pretrained and pretrained and source is None:
            model = AutoModel.from_pretrained(where, dtype=torch.float32)
        else:
            model = AutoModel.from_config(AutoConfig.from_pretrained(where))
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"config key 'model.image.name': cannot load 'hf:{name}' "
            f"({str(error).splitlines()[0]}); give a save_pretrained directory or a "
            f"hub name with network access"
        ) from None
    if not hasattr(model, "get_image_features"):
        raise ConfigError(
            f"config key 'model.image.name': 'hf:{name}' loads a "
            f"{type(model).__name__}, which has no get_image_features"
        )
    model = _drop_text_parts(model)
    size = _hf_image_size(model.config)
    with torch.no_grad():
        from mclip.models.adapters.hf import _embedding

        width = _embedding(
            model.eval().get_image_features(pixel_values=torch.zeros(1, 3, size, size)),
            "get_image_features",
        ).shape[-1]
    return ForeignImageTrunk(model, "hf", width)


def _hf_image_size(config) -> int:
    vision = getattr(config, "vision_config", config)
    return int(getattr(vision, "image_size", 224))


def build_foreign_trunk(
    name: str, pretrained, load_pretrained: bool, source: str | Path | None = None
) -> ForeignImageTrunk:
    """The trunk for ``model.image.name`` = ``open_clip:ARCH`` or ``hf:NAME``.

    ``source``: a checkpoint's ``image_tower/`` directory (architecture only; the weights come
    from the checkpoint). Otherwise the weights are ``pretrained`` (open_clip: a tag or file;
    hf: any true value loads the model's own) when ``load_pretrained``, else random.
    """
    source = Path(source) if source is not None else None
    if name.startswith(OPEN_CLIP):
        return _open_clip_trunk(name[len(OPEN_CLIP) :], pretrained, load_pretrained, source)
    return _hf_trunk(name[len(HF) :], pretrained, load_pretrained, source)


def image_tower_from_model(adapter) -> tuple[dict, dict[str, torch.Tensor], float, float]:
    """(``model.image`` fields, image-tower state dict, log logit scale, logit bias) that
    rebuild ``adapter``'s image tower as an mclip image tower with ``projection: none``.

    ``adapter``: an open_clip or transformers adapter (:mod:`mclip.models.adapters`). The state
    dict's keys are those of :class:`~mclip.models.towers.ImageTower` (``trunk.model.*``).
    """
    from mclip.models.adapters.hf import HFAdapter
    from mclip.models.adapters.open_clip import OpenClipAdapter

    scale = float(adapter.logit_scale.detach())
    bias = float(adapter.logit_bias.detach()) if adapter.logit_bias is not None else 0.0
    if isinstance(adapter, OpenClipAdapter):
        arch = adapter.name[len(OPEN_CLIP) :].split("/")[0]
        if arch.startswith(("hf-hub:", "local-dir:")):
            raise ConfigError(
                f"'{adapter.name}': an image tower can be taken from an open_clip "
                f"architecture name (open_clip:ARCH/TAG), not from a schema source"
            )
        visual: Any = adapter.model.visual
        pre = visual.preprocess_cfg
        fields = {
            "name": f"{OPEN_CLIP}{arch}",
            "image_size": int(pre["size"][0]),
            "mean": list(pre["mean"]),
            "std": list(pre["std"]),
            "interpolation": pre.get("interpolation", "bicubic"),
        }
        weights = {f"trunk.model.{k}": v for k, v in visual.state_dict().items()}
        return fields, weights, scale, bias
    if isinstance(adapter, HFAdapter):
        processor = adapter.image_processor
        size = getattr(processor, "crop_size", None) or processor.size
        side = size.get("height") or size.get("shortest_edge")
        fields = {
            "name": adapter.name,
            "image_size": int(side),
            "mean": list(processor.image_mean),
            "std": list(processor.image_std),
            "interpolation": ("bicubic" if getattr(processor, "resample", 3) == 3 else "bilinear"),
        }
        weights = {
            f"trunk.model.{k}": v
            for k, v in adapter.model.state_dict().items()
            if not k.startswith(("text_model.", "text_projection."))
        }
        return fields, weights, scale, bias
    raise ConfigError(f"cannot take an image tower from {type(adapter).__name__}")
