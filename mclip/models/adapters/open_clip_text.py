"""open_clip text towers run at the length a batch uses, where that provably changes nothing.

open_clip tokenizers pad every text to the context length (77 for CLIP), while ImageNet
prompts are mostly under 20 tokens: most of a batch's compute goes to padding. Whether the
padding can be cut is decided once per tower by :func:`padding_rule`:

- ``causal``: open_clip's own text transformer with a causal attention mask, no appended class
  token, no pad mask, and the embedding taken at one position (``argmax``: the end-of-text
  token, ``eos``, ``first``). Under a causal mask the state at position p depends only on
  positions <= p, so running positions [0, L) with L = 1 + the largest pooled position of the
  batch gives the same pooled states (OpenAI CLIP and most open_clip text towers).
- ``masked``: a transformers tower inside open_clip (``hf_model_name``) that hides pad tokens
  from attention and pools with a mask-aware pooler (mean, max, cls): cutting the columns that
  are padding in every row changes no kept position, and the positions keep their ids.
- ``full``: everything else keeps the context length: no causal mask (SigLIP, trained at a fixed
  length with the state at the last position), ``last`` pooling, CoCa's appended class token,
  a pad mask, or a tower this module does not know.

:func:`encode_trimmed` runs a tower by its rule; ``tests/test_text_trim.py`` checks that the
trimmed embeddings equal open_clip's full-padding ``encode_text`` for each kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

CAUSAL, MASKED, FULL = "causal", "masked", "full"
_ONE_POSITION_POOLS = ("argmax", "eos", "first")
_MASK_AWARE_POOLERS = ("MeanPooler", "MaxPooler", "ClsPooler", "ClsLastHiddenStatePooler")


@dataclass(frozen=True)
class TextPadding:
    """How a text tower treats padding: ``kind`` (causal / masked / full) and why."""

    kind: str
    reason: str

    @property
    def trims(self) -> bool:
        """Whether batches run at their own longest length."""
        return self.kind != FULL


def padding_rule(model: nn.Module) -> TextPadding:
    """The padding rule of an open_clip model's text tower (see the module docstring)."""
    text = getattr(model, "text", None)
    overridden = _overridden(model, text)
    if overridden:
        return TextPadding(FULL, f"{overridden} is not open_clip's own")
    if text is not None and type(text).__name__ == "HFTextEncoder":
        pooler = type(getattr(text, "pooler", None)).__name__
        if pooler not in _MASK_AWARE_POOLERS:
            return TextPadding(FULL, f"transformers tower with pooler {pooler}")
        if getattr(text.config, "pad_token_id", None) is None:
            return TextPadding(FULL, "transformers tower without a pad token")
        return TextPadding(MASKED, f"transformers tower: pad tokens masked, {pooler}")
    owner = _causal_owner(model)
    if owner is None:
        return TextPadding(FULL, f"text tower of {type(model).__name__} not known")
    if owner.attn_mask is None:
        return TextPadding(FULL, "no causal mask (every position sees the padding)")
    if getattr(owner, "cls_emb", None) is not None:
        return TextPadding(FULL, "class token appended after the padding")
    if getattr(owner, "use_pad_mask", False):
        return TextPadding(FULL, "pad mask")
    pool = _pool_type(model, owner)
    if pool not in _ONE_POSITION_POOLS:
        return TextPadding(FULL, f"'{pool}' pooling")
    return TextPadding(CAUSAL, f"causal mask, '{pool}' pooling")


def used_lengths(model: nn.Module, rule: TextPadding, tokens: torch.Tensor) -> torch.Tensor:
    """LongTensor [N]: the length each text runs at under ``rule`` (1 + its pooled position for
    a causal tower, 1 + its last non-pad position for a masked one, the context otherwise), the
    key that sorts texts into batches with the least padding."""
    clip: Any = model  # an open_clip model (untyped library)
    if rule.kind == MASKED:
        used = tokens != clip.text.config.pad_token_id
        positions = torch.arange(1, tokens.shape[1] + 1, device=tokens.device)
        return (used * positions).amax(dim=1).clamp_min(1)
    if rule.kind == CAUSAL:
        owner = _causal_owner(model)
        return _pooled_positions(tokens, _pool_type(model, owner), _eos_id(model, owner)) + 1
    return torch.full((tokens.shape[0],), tokens.shape[1], dtype=torch.long)


def encode_trimmed(model: nn.Module, rule: TextPadding, tokens: torch.Tensor) -> torch.Tensor:
    """tokens LongTensor [N, context] (open_clip's tokenizer) -> unnormalised [N, embed_dim],
    equal to ``model.encode_text(tokens)``, run on the positions the batch uses."""
    clip: Any = model  # an open_clip model (untyped library)
    if rule.kind == MASKED:
        pad = clip.text.config.pad_token_id
        used = (tokens != pad).any(0).nonzero()
        length = int(used.max()) + 1 if used.numel() else 1
        return clip.encode_text(tokens[:, :length], normalize=False)
    if rule.kind != CAUSAL:
        return clip.encode_text(tokens, normalize=False)
    owner = _causal_owner(model)
    positions = _pooled_positions(tokens, _pool_type(model, owner), _eos_id(model, owner))
    length = int(positions.max()) + 1 if positions.numel() else 1
    return _causal_forward(owner, tokens[:, :length], positions)


def _overridden(model: nn.Module, text: nn.Module | None) -> str | None:
    """The encoder a subclass replaced (its code is what must run), or None."""
    from open_clip.hf_model import HFTextEncoder
    from open_clip.model import CLIP, CustomTextCLIP
    from open_clip.transformer import TextTransformer

    for owner, base, method in (
        (model, CLIP, "encode_text"),
        (model, CustomTextCLIP, "encode_text"),
        (text, TextTransformer, "forward"),
        (text, HFTextEncoder, "forward"),
    ):
        if isinstance(owner, base) and getattr(type(owner), method) is not getattr(base, method):
            return f"{type(owner).__name__}.{method}"
    return None


def _causal_owner(model: nn.Module) -> nn.Module | None:
    """The module holding the token embedding, causal mask and transformer: the CLIP model
    itself (its text fields are copied onto it) or a CustomTextCLIP's ``text`` tower."""
    text = getattr(model, "text", None)
    for owner in (text, model):
        if owner is not None and all(
            hasattr(owner, name)
            for name in (
                "token_embedding",
                "positional_embedding",
                "transformer",
                "ln_final",
                "attn_mask",
                "text_projection",
            )
        ):
            return owner
    return None


def _pool_type(model: nn.Module, owner: nn.Module | None) -> str:
    return str(getattr(owner, "pool_type", None) or getattr(model, "text_pool_type", "argmax"))


def _eos_id(model: nn.Module, owner: nn.Module | None) -> int | None:
    eos = getattr(owner, "eos_id", None)
    return getattr(model, "text_eos_id", None) if eos is None else eos


def _pooled_positions(tokens: torch.Tensor, pool: str, eos_id: int | None) -> torch.Tensor:
    """[N] position whose state is the text's embedding (open_clip's ``text_global_pool``)."""
    if pool == "argmax":
        return tokens.argmax(dim=-1)
    if pool == "eos":
        # with eos_id None, == gives a bool and .int() fails (open_clip asserts it is set)
        return cast(torch.Tensor, tokens == eos_id).int().argmax(dim=-1)
    return torch.zeros(tokens.shape[0], dtype=torch.long, device=tokens.device)


def _causal_forward(owner: Any, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``owner``: the open_clip module :func:`_causal_owner` found (untyped library)."""
    length = tokens.shape[1]
    dtype = owner.transformer.get_cast_dtype()
    x = owner.token_embedding(tokens).to(dtype) + owner.positional_embedding[:length].to(dtype)
    mask = None if owner.attn_mask is None else owner.attn_mask[:length, :length]
    x = owner.transformer(x, attn_mask=mask)
    x = owner.ln_final(x)
    pooled = x[torch.arange(x.shape[0], device=x.device), positions]
    projection = owner.text_projection
    if projection is None:
        return pooled
    return projection(pooled) if isinstance(projection, nn.Linear) else pooled @ projection
