"""Image and text towers: a backbone, a pooling rule and a projection to the shared space.

``ImageTower`` wraps any timm model (``timm.create_model(name, num_classes=0)`` gives pooled
features). ``TextTower`` wraps any transformers encoder with its own tokenizer, or a small
BERT-style encoder built from config with the byte-level ``ByT5Tokenizer`` (no vocab file, no
download), which is what the demo and the tests use.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any, cast

import timm
import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, BertConfig, BertModel, ByT5Tokenizer

from mclip.config import ConfigError, ImageTowerConfig, TextTowerConfig
from mclip.models.foreign_towers import ForeignImageTrunk, build_foreign_trunk, is_foreign


def make_projection(in_features: int, embed_dim: int, kind: str) -> nn.Module:
    """A map from backbone features [N, in_features] to the shared space [N, embed_dim].

    ``none``: the identity, for a backbone that already outputs ``embed_dim`` features (a tower
    taken whole from another dual encoder)."""
    if kind == "none":
        if in_features != embed_dim:
            raise ConfigError(
                f"config key 'model.projection' is 'none', but a tower gives "
                f"{in_features} features and model.embed_dim is {embed_dim}; set "
                f"model.embed_dim={in_features} or use projection linear"
            )
        return nn.Identity()
    if kind == "linear":
        return nn.Linear(in_features, embed_dim, bias=False)
    hidden = max(in_features, embed_dim)
    return nn.Sequential(nn.Linear(in_features, hidden), nn.GELU(), nn.Linear(hidden, embed_dim))


def freeze_parameters(module: nn.Module, patterns: list[str], where: str) -> int:
    """Set ``requires_grad=False`` on parameters whose name matches any fnmatch pattern.

    Returns how many parameter tensors were frozen. A pattern that matches nothing is an error
    (a typo would otherwise silently train the whole tower).
    """
    frozen = 0
    names = [name for name, _ in module.named_parameters()]
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            example = ", ".join(names[:3])
            raise ConfigError(
                f"config key '{where}': pattern '{pattern}' matches no parameter; "
                f"names look like: {example}, ..."
            )
    for name, param in module.named_parameters():
        if any(fnmatch.fnmatchcase(name, p) for p in patterns):
            param.requires_grad_(False)
            frozen += 1
    return frozen


class ImageTower(nn.Module):
    """A timm backbone with global pooling, then a projection to ``embed_dim``.

    ``forward(images)``: images [N, 3, H, W] (normalised floats) -> features [N, embed_dim]
    (not normalised). Parameter names start with ``trunk.`` or ``proj.`` (for freezing).
    """

    def __init__(
        self,
        cfg: ImageTowerConfig,
        embed_dim: int,
        projection: str = "linear",
        load_pretrained: bool = True,
        source: str | Path | None = None,
    ):
        super().__init__()
        self.cfg = cfg
        if is_foreign(cfg.name):  # open_clip / transformers tower (mclip.models.foreign_towers)
            foreign = build_foreign_trunk(cfg.name, cfg.pretrained, load_pretrained, source)
            self.trunk: nn.Module = foreign
            self.proj = make_projection(foreign.num_features, embed_dim, projection)
            freeze_parameters(self, cfg.freeze, "model.image.freeze")
            return
        kwargs: dict = {**cfg.model_args, "num_classes": 0}
        if cfg.drop_path_rate > 0:
            kwargs["drop_path_rate"] = cfg.drop_path_rate
        pretrained = cfg.pretrained if load_pretrained else False
        if isinstance(pretrained, str):
            path = Path(pretrained)
            if not path.is_file():
                raise ConfigError(
                    f"config key 'model.image.pretrained': weights file '{path}' "
                    f"does "
                    f"not exist; give a local file, true (download), or false"
                )
            kwargs["pretrained_cfg_overlay"] = {"file": str(path)}
            pretrained = True
        timm_trunk: Any = _create_timm(cfg.name, pretrained, cfg.image_size, kwargs)
        self.trunk = timm_trunk
        if cfg.grad_checkpointing:
            timm_trunk.set_grad_checkpointing(True)
        self.proj = make_projection(pooled_features(self.trunk), embed_dim, projection)
        freeze_parameters(self, cfg.freeze, "model.image.freeze")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(self.trunk(images))

    def save_source(self, directory: str | Path) -> None:
        """A foreign tower's architecture (no weights) into ``directory``; timm needs none."""
        if is_foreign(self.cfg.name):
            cast(ForeignImageTrunk, self.trunk).save_source(directory, self.cfg.name)


def pooled_features(trunk: nn.Module) -> int:
    """Width of a timm model's output with ``num_classes=0``: [N, width] pooled features.

    Models with a pre-logits head (MobileNetV3, GhostNet, ...) pool ``num_features`` channels and
    then widen them to ``head_hidden_size``; the others report ``head_hidden_size ==
    num_features`` or (older timm) only ``num_features``.
    """
    width = getattr(trunk, "head_hidden_size", None)
    timm_model: Any = trunk
    return int(width) if width is not None else int(timm_model.num_features)


def _create_timm(name: str, pretrained: bool, image_size: int, kwargs: dict) -> nn.Module:
    if not timm.list_models(name) and name not in timm.list_models(pretrained=True):
        close = timm.list_models(f"*{name.split('.')[0][:6]}*")[:5]
        raise ConfigError(
            f"config key 'model.image.name': '{name}' is not a timm model"
            + (f"; similar: {', '.join(close)}" if close else "")
        )
    try:  # transformers (ViT, DeiT, ...) take the input size; CNNs do not accept the argument
        try:
            return timm.create_model(name, pretrained=pretrained, img_size=image_size, **kwargs)
        except TypeError as error:
            if "img_size" not in str(error):
                raise
            return timm.create_model(name, pretrained=pretrained, **kwargs)
    except TypeError as error:
        raise ConfigError(
            f"config key 'model.image.model_args': timm model '{name}' rejects "
            f"them ({error}); give arguments its constructor takes, or none"
        ) from None


def build_byte_tokenizer() -> ByT5Tokenizer:
    """The byte-level ByT5 tokenizer: UTF-8 bytes as tokens, no vocabulary file needed."""
    return ByT5Tokenizer()


class TextTower(nn.Module):
    """A transformers encoder, a mask-aware pooling and a projection to ``embed_dim``.

    ``tokenize(texts)`` -> dict with ``input_ids`` and ``attention_mask`` [N, L] (right-padded
    to the longest text, or to ``max_length`` with ``padding: max_length``; truncated to
    ``max_length``). ``forward(input_ids, attention_mask)`` -> [N, embed_dim]; with
    ``length_groups`` k > 1 (and ``padding: longest``) it sorts the texts by length into k groups
    and runs each cut to its own longest text: the same embeddings (padding is masked) for less
    padded compute.
    ``source`` overrides where the architecture and tokenizer are read from (a checkpoint's
    ``text_tower/`` directory); weights are then expected to come from the checkpoint.
    """

    def __init__(
        self,
        cfg: TextTowerConfig,
        embed_dim: int,
        projection: str = "linear",
        source: str | Path | None = None,
    ):
        super().__init__()
        self.cfg = cfg
        if cfg.name == "byte":
            self.tokenizer = build_byte_tokenizer()
            self.encoder = BertModel(
                BertConfig(
                    vocab_size=len(self.tokenizer),
                    hidden_size=cfg.hidden_size,
                    num_hidden_layers=cfg.num_layers,
                    num_attention_heads=cfg.num_heads,
                    intermediate_size=cfg.intermediate_size,
                    hidden_dropout_prob=cfg.dropout,
                    attention_probs_dropout_prob=cfg.dropout,
                    type_vocab_size=1,
                    max_position_embeddings=max(cfg.max_length, 64),
                    pad_token_id=self.tokenizer.pad_token_id,
                ),
                add_pooling_layer=False,
            )
        else:
            self.tokenizer, self.encoder = _load_hf_encoder(cfg, source)
        self.tokenizer.padding_side = "right"
        if cfg.grad_checkpointing:
            self.encoder.gradient_checkpointing_enable()
        self.proj = make_projection(self.encoder.config.hidden_size, embed_dim, projection)
        freeze_parameters(self, cfg.freeze, "model.text.freeze")

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        if isinstance(texts, str):
            texts = [texts]
        padding = "max_length" if self.cfg.padding == "max_length" else True
        out = self.tokenizer(
            list(texts),
            padding=padding,
            truncation=True,
            max_length=self.cfg.max_length,
            return_tensors="pt",
        )
        return {"input_ids": out["input_ids"], "attention_mask": out["attention_mask"]}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        groups = self.cfg.length_groups
        if groups <= 1 or input_ids.shape[0] < 2 * groups or self.cfg.padding != "longest":
            return self._encode(input_ids, attention_mask)
        # texts sorted by length into groups, each cut to its own longest: less padding to run
        lengths = attention_mask.sum(1)
        order = torch.argsort(lengths, stable=True)
        parts = []
        for rows in torch.tensor_split(order, groups):
            width = max(int(lengths[rows].max()), 1)
            parts.append(self._encode(input_ids[rows, :width], attention_mask[rows, :width]))
        return torch.cat(parts)[torch.argsort(order)]

    def _encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.proj(pool_tokens(hidden, attention_mask, self.cfg.pooling))

    def save_source(self, directory: str | Path) -> None:
        """Write the architecture config and tokenizer files (no weights) to ``directory``."""
        self.encoder.config.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)


def _load_hf_encoder(cfg: TextTowerConfig, source: str | Path | None):
    where = str(source) if source is not None else cfg.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(where)
        if source is None and cfg.pretrained:
            model = AutoModel.from_pretrained(where)
        else:
            model = AutoModel.from_config(AutoConfig.from_pretrained(where))
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"config key 'model.text.name': cannot load text tower '{where}' "
            f"({str(error).splitlines()[0]}). Give a local directory written with "
            f"save_pretrained, a hub name with network access, or 'byte'."
        ) from None
    if getattr(model.config, "is_encoder_decoder", False):
        model = model.get_encoder()  # T5 / mT5: keep only the encoder
    return tokenizer, model


def pool_tokens(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool token states [N, L, D] to [N, D], never looking at padding.

    ``mean``: average over tokens with mask 1. ``cls``: the first token. ``eos``: the last
    token with mask 1 (inputs are right-padded).
    """
    if pooling == "mean":
        mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "eos":
        last = attention_mask.long().sum(1).clamp_min(1) - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise ConfigError(
        f"config key 'model.text.pooling' is {pooling!r}; valid choices: mean, cls, eos"
    )
