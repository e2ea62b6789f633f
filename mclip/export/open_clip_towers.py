"""How mclip's towers map to open_clip's: the ``vision_cfg`` / ``text_cfg`` of an open_clip model
config and the functions that fill open_clip's weight names from mclip's (the mapping rules are in
:mod:`mclip.export.open_clip`'s docstring). Each setting open_clip cannot express is refused with
an :class:`~mclip.export.ExportError` naming it."""

from __future__ import annotations

from typing import Any, Callable, cast

import torch
from torch import nn

from mclip.export import ExportError
from mclip.models.dual import DualEncoder
from mclip.models.foreign_towers import is_foreign

POOLERS = {"mean": "mean_pooler", "cls": "cls_last_hidden_state_pooler"}


def projection_matrix(
    proj: nn.Module, in_features: int, where: str, rows: int | None = None
) -> torch.Tensor:
    """The [E, in_features] matrix of a bias-free linear (or identity) projection, cut to its
    first ``rows`` outputs (a Matryoshka prefix); an ``mlp`` projection is an ExportError."""
    if isinstance(proj, nn.Identity):
        matrix = torch.eye(in_features)
    elif isinstance(proj, nn.Linear) and proj.bias is None:
        matrix = proj.weight.detach().float().cpu()
    else:
        raise ExportError(
            f"{where}: an 'mlp' projection has no open_clip equivalent (open_clip's "
            f"MLP heads have other widths and biases); export a model trained with "
            f"projection linear or none"
        )
    return matrix[:rows] if rows else matrix


def vision_config(
    model: DualEncoder, embed_dim: int
) -> tuple[dict, Callable[[dict, nn.Module], dict]]:
    """(open_clip ``vision_cfg``, a function filling open_clip's ``visual.*`` weights from mclip's
    state dict) for the model's image tower."""
    cfg = model.cfg.image
    if is_foreign(cfg.name):
        raise ExportError(
            f"model.image.name={cfg.name!r}: a composite model's image tower (from "
            f"open_clip or transformers) has no open_clip config field; export the "
            f"original model instead"
        )
    trunk = model.image.trunk
    where = "model.image.projection / model.projection"
    if type(trunk).__name__ == "VisionTransformer":
        return _vit_config(trunk, model.image.proj, cfg.image_size, embed_dim, where)
    if cfg.model_args:
        raise ExportError(
            f"model.image.model_args={cfg.model_args}: open_clip's timm config has "
            f"no field for timm constructor arguments (only timm ViTs, rebuilt as "
            f"open_clip's own, export with them)"
        )
    pool = getattr(trunk, "global_pool", "avg")
    pool = getattr(pool, "pool_type", pool)
    if not isinstance(pool, str) or pool not in ("avg", "max", "avgmax", "catavgmax", "token"):
        raise ExportError(
            f"model.image.name={cfg.name!r}: its global pool {pool!r} has no "
            f"open_clip timm_pool value"
        )
    matrix = projection_matrix(model.image.proj, _width(model.image), where, embed_dim)
    vision = {
        "image_size": cfg.image_size,
        "timm_model_name": cfg.name,
        "timm_model_pretrained": False,
        "timm_pool": pool,
        "timm_proj": "",
        "timm_drop": 0.0,
    }

    def weights(state: dict, target: nn.Module) -> dict:
        out = {
            f"visual.trunk.{k[len('image.trunk.') :]}": v
            for k, v in state.items()
            if k.startswith("image.trunk.")
        }
        loaded: Any = target  # an open_clip model (untyped library)
        timm_trunk = loaded.visual.trunk
        classifier = timm_trunk.get_classifier()
        names = {id(p): n for n, p in timm_trunk.named_parameters()}
        out[f"visual.trunk.{names[id(classifier.weight)]}"] = matrix
        out[f"visual.trunk.{names[id(classifier.bias)]}"] = torch.zeros(matrix.shape[0])
        return out

    return vision, weights


def _width(tower: nn.Module) -> int:
    from mclip.models.towers import pooled_features

    return pooled_features(cast(nn.Module, tower.trunk))


def _vit_config(
    vit: nn.Module, proj: nn.Module, image_size: int, embed_dim: int, where: str
) -> tuple[dict, Callable[[dict, nn.Module], dict]]:
    """open_clip's own VisionTransformer for a timm ViT (module docstring)."""
    trunk: Any = vit  # its attributes are timm's
    unsupported = [
        name
        for name, bad in (
            ("no class token", getattr(trunk, "cls_token", None) is None),
            ("register tokens", getattr(trunk, "num_reg_tokens", 0)),
            (
                "an MLP other than fc1-GELU-fc2 (SwiGLU, ...)",
                any(
                    type(b.mlp).__name__ != "Mlp" or not isinstance(b.mlp.act, nn.GELU)
                    for b in trunk.blocks
                ),
            ),
            (
                "norms other than LayerNorm",
                any(not isinstance(b.norm1, nn.LayerNorm) for b in trunk.blocks),
            ),
            ("no_embed_class", getattr(trunk, "no_embed_class", False)),
            ("dynamic image size", getattr(trunk, "dynamic_img_size", False)),
            ("attention pooling", trunk.global_pool not in ("token", "avg")),
            ("qk-norm", any(not isinstance(b.attn.q_norm, nn.Identity) for b in trunk.blocks)),
            (
                "a final norm other than LayerNorm",
                not isinstance(
                    trunk.norm if trunk.global_pool == "token" else trunk.fc_norm, nn.LayerNorm
                ),
            ),
        )
        if bad
    ]
    if unsupported:
        raise ExportError(
            f"model.image.name: a timm ViT with {', '.join(unsupported)} has no "
            f"open_clip VisionTransformer equivalent"
        )
    width = trunk.embed_dim
    blocks = trunk.blocks
    layer_scale = not isinstance(blocks[0].ls1, nn.Identity)
    matrix = projection_matrix(proj, width, where, embed_dim)
    avg = trunk.global_pool == "avg"
    vision = {
        "image_size": image_size,
        "patch_size": trunk.patch_embed.patch_size[0],
        "width": width,
        "layers": len(blocks),
        "head_width": width // blocks[0].attn.num_heads,
        "mlp_ratio": blocks[0].mlp.fc1.out_features / width,
        "no_ln_pre": isinstance(trunk.norm_pre, nn.Identity),
        "pool_type": "avg" if avg else "tok",
        "final_ln_after_pool": avg,
        "norm_kwargs": {"eps": float(blocks[0].norm1.eps)},
    }
    if layer_scale:
        vision["ls_init_value"] = 1.0  # the value is replaced by the trained gammas

    def weights(state: dict, target: nn.Module) -> dict:
        def get(name: str) -> torch.Tensor:
            return state[f"image.trunk.{name}"]

        out = {
            "visual.conv1.weight": get("patch_embed.proj.weight"),
            "visual.class_embedding": get("cls_token").reshape(width),
            "visual.proj": matrix.t().contiguous(),
        }
        positions = get("pos_embed").reshape(-1, width).clone()
        if "image.trunk.patch_embed.proj.bias" in state:  # a bias on every patch, not the class
            positions[1:] += get("patch_embed.proj.bias")
        out["visual.positional_embedding"] = positions
        final = "fc_norm" if avg else "norm"
        out["visual.ln_post.weight"], out["visual.ln_post.bias"] = (
            get(f"{final}.weight"),
            get(f"{final}.bias"),
        )
        if not vision["no_ln_pre"]:
            out["visual.ln_pre.weight"], out["visual.ln_pre.bias"] = (
                get("norm_pre.weight"),
                get("norm_pre.bias"),
            )
        for i in range(len(blocks)):
            src, dst = f"blocks.{i}.", f"visual.transformer.resblocks.{i}."
            pairs = {
                "norm1": "ln_1",
                "norm2": "ln_2",
                "attn.qkv": "attn.in_proj",
                "attn.proj": "attn.out_proj",
                "mlp.fc1": "mlp.c_fc",
                "mlp.fc2": "mlp.c_proj",
            }
            for a, b in pairs.items():
                for kind in ("weight", "bias"):
                    key = f"{a}.{kind}"
                    name = f"{b}_{kind}" if b == "attn.in_proj" else f"{b}.{kind}"
                    out[dst + name] = (
                        get(src + key)
                        if f"image.trunk.{src}{key}" in state
                        else torch.zeros_like(target.state_dict()[dst + name])
                    )
            if layer_scale:
                out[dst + "ls_1.gamma"], out[dst + "ls_2.gamma"] = (
                    get(src + "ls1.gamma"),
                    get(src + "ls2.gamma"),
                )
        return out

    return vision, weights


def text_config(model: DualEncoder, embed_dim: int, source: str) -> tuple[dict, Callable]:
    """(open_clip ``text_cfg`` naming ``source`` for the architecture and tokenizer, a function
    filling open_clip's ``text.*`` weights)."""
    from open_clip.hf_configs import arch_dict

    cfg = model.cfg.text
    model_type = model.text.encoder.config.model_type
    if model_type not in arch_dict:
        raise ExportError(
            f"model.text.name={cfg.name!r}: open_clip knows transformers text towers "
            f"of the types {', '.join(sorted(arch_dict))}, not '{model_type}'"
        )
    if cfg.pooling not in POOLERS:
        raise ExportError(
            f"model.text.pooling={cfg.pooling!r}: open_clip has no last-token pooler "
            f"for transformers towers; export a model trained with mean or cls "
            f"pooling"
        )
    hidden = (
        model.text.encoder.config.hidden_size
        if hasattr(model.text.encoder.config, "hidden_size")
        else model.text.encoder.config.d_model
    )
    matrix = projection_matrix(model.text.proj, hidden, "model.projection", embed_dim)
    identity = matrix.shape == (hidden, hidden) and torch.equal(matrix, torch.eye(hidden))
    text = {
        "hf_model_name": source,
        "hf_tokenizer_name": source,
        "hf_model_pretrained": False,
        "hf_pooler_type": POOLERS[cfg.pooling],
        "hf_proj_type": None if identity else "linear",
        "context_length": cfg.max_length,
    }

    def weights(state: dict, target: nn.Module) -> dict:
        wanted = set(target.state_dict())
        out = {
            f"text.transformer.{k[len('text.encoder.') :]}": v
            for k, v in state.items()
            if k.startswith("text.encoder.")
        }
        out = {k: v for k, v in out.items() if k in wanted}  # e.g. BERT's unused pooler layer
        if not identity:
            out["text.proj.weight"] = matrix
        return out

    return text, weights
