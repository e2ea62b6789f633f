"""An mclip model as an open_clip model directory (``mclip export MODEL --format open_clip``).

    DIR/open_clip_config.json        {"model_cfg": {...}, "preprocess_cfg": {...}}
    DIR/open_clip_model.safetensors  every weight, under open_clip's names
    DIR/config.json, tokenizer files the text tower's transformers architecture and tokenizer
    DIR/README.md                    the model card (:mod:`mclip.export.model_card`)

``open_clip.create_model_and_transforms("local-dir:DIR")`` and ``open_clip.get_tokenizer(
"local-dir:DIR")`` load it with no network. How mclip's settings map to open_clip's:

- image tower, a timm ViT (``VisionTransformer``: class token, learned positions, pre-norm
  blocks): open_clip's own ``VisionTransformer`` at the trained image size (timm's own input
  size need not match): the patch embedding's bias is folded into the patch positions (open_clip's
  ``conv1`` has none), ``pool_type`` ``tok`` or ``avg`` (with timm's ``fc_norm`` as
  ``final_ln_after_pool``), LayerNorm eps from timm; the projection becomes ``proj``;
- image tower, any other timm model: open_clip's ``TimmModel`` (``timm_model_name``, ``timm_pool``
  = the model's global pool, ``timm_proj: ""``): timm's own classifier, created with
  ``num_classes=embed_dim``, holds mclip's projection (its bias zero), so models with a
  pre-logits layer (MobileNetV3, LCNet) keep it;
- text tower: ``hf_model_name`` (the architecture, ``config.json`` in DIR), ``hf_tokenizer_name``
  (the tokenizer files in DIR; the byte-level tower's ``ByT5Tokenizer`` included),
  ``hf_pooler_type`` ``mean_pooler`` / ``cls_last_hidden_state_pooler``, ``hf_proj_type`` ``linear``
  (none: the identity), ``context_length`` = ``model.text.max_length``;
- ``preprocess_cfg``: image size, mean, std, interpolation, ``resize_mode: shortest`` (resize the
  shorter side, centre crop: mclip's transform); ``logit_scale`` and, for a sigmoid-trained model,
  ``logit_bias`` (``init_logit_bias`` in the config).

Not exportable, each refused with one line naming the setting: an ``mlp`` projection (open_clip's
MLP heads have other widths), ``eos`` pooling (open_clip has no last-token pooler for transformers
towers), an open_clip / transformers image tower (a composite model), timm ``model_args``, and a
text tower whose ``model_type`` open_clip's ``hf_configs`` does not know.

open_clip 3.3.0 reads ``hf_model_name`` as a path from the working directory (only the tokenizer is
read from the ``local-dir:`` folder itself), so a local export records DIR's absolute path there:
it loads from any working directory, and ``mclip export --relocate DIR`` updates it after the
folder moved. With ``hub_id="ORG/NAME"`` both names are that repository instead (the files sit at
its root), for ``open_clip.create_model_and_transforms("hf-hub:ORG/NAME")`` after an upload.
open_clip's tokenizer also cleans texts (HTML entities, repeated white space) before tokenizing;
mclip's does not, so only texts that differ there encode differently.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import save_file
from torch import nn

from mclip.config import Config
from mclip.export import ExportError, quiet_libraries
from mclip.export.probes import probe_images, probe_texts
from mclip.models.dual import DualEncoder
from mclip.models.foreign_towers import is_foreign

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"
POOLERS = {"mean": "mean_pooler", "cls": "cls_last_hidden_state_pooler"}
TOLERANCE = 1e-5  # max |difference| of fp32 embeddings between mclip and the export


def projection_matrix(proj: nn.Module, in_features: int, where: str, rows: int | None = None
                      ) -> torch.Tensor:
    """The [E, in_features] matrix of a bias-free linear (or identity) projection, cut to its
    first ``rows`` outputs (a Matryoshka prefix); an ``mlp`` projection is an ExportError."""
    if isinstance(proj, nn.Identity):
        matrix = torch.eye(in_features)
    elif isinstance(proj, nn.Linear) and proj.bias is None:
        matrix = proj.weight.detach().float().cpu()
    else:
        raise ExportError(f"{where}: an 'mlp' projection has no open_clip equivalent (open_clip's "
                          f"MLP heads have other widths and biases); export a model trained with "
                          f"projection linear or none")
    return matrix[:rows] if rows else matrix


def vision_config(model: DualEncoder, embed_dim: int) -> tuple[dict, Callable[[dict], dict]]:
    """(open_clip ``vision_cfg``, a function filling open_clip's ``visual.*`` weights from mclip's
    state dict) for the model's image tower."""
    cfg = model.cfg.image
    if is_foreign(cfg.name):
        raise ExportError(f"model.image.name={cfg.name!r}: a composite model's image tower (from "
                          f"open_clip or transformers) has no open_clip config field; export the "
                          f"original model instead")
    trunk = model.image.trunk
    where = "model.image.projection / model.projection"
    if type(trunk).__name__ == "VisionTransformer":
        return _vit_config(trunk, model.image.proj, cfg.image_size, embed_dim, where)
    if cfg.model_args:
        raise ExportError(f"model.image.model_args={cfg.model_args}: open_clip's timm config has "
                          f"no field for timm constructor arguments (only timm ViTs, rebuilt as "
                          f"open_clip's own, export with them)")
    pool = getattr(trunk, "global_pool", "avg")
    pool = getattr(pool, "pool_type", pool)
    if not isinstance(pool, str) or pool not in ("avg", "max", "avgmax", "catavgmax", "token"):
        raise ExportError(f"model.image.name={cfg.name!r}: its global pool {pool!r} has no "
                          f"open_clip timm_pool value")
    matrix = projection_matrix(model.image.proj, _width(model.image), where, embed_dim)
    vision = {"image_size": cfg.image_size, "timm_model_name": cfg.name,
              "timm_model_pretrained": False, "timm_pool": pool, "timm_proj": "",
              "timm_drop": 0.0}

    def weights(state: dict, target: nn.Module) -> dict:
        out = {f"visual.trunk.{k[len('image.trunk.'):]}": v for k, v in state.items()
               if k.startswith("image.trunk.")}
        classifier = target.visual.trunk.get_classifier()
        names = {id(p): n for n, p in target.visual.trunk.named_parameters()}
        out[f"visual.trunk.{names[id(classifier.weight)]}"] = matrix
        out[f"visual.trunk.{names[id(classifier.bias)]}"] = torch.zeros(matrix.shape[0])
        return out
    return vision, weights


def _width(tower: nn.Module) -> int:
    from mclip.models.towers import pooled_features

    return pooled_features(tower.trunk)


def _vit_config(trunk: nn.Module, proj: nn.Module, image_size: int, embed_dim: int, where: str
                ) -> tuple[dict, Callable[[dict], dict]]:
    """open_clip's own VisionTransformer for a timm ViT (module docstring)."""
    unsupported = [name for name, bad in (
        ("no class token", getattr(trunk, "cls_token", None) is None),
        ("register tokens", getattr(trunk, "num_reg_tokens", 0)),
        ("an MLP other than fc1-GELU-fc2 (SwiGLU, ...)",
         any(type(b.mlp).__name__ != "Mlp" or not isinstance(b.mlp.act, nn.GELU)
             for b in trunk.blocks)),
        ("norms other than LayerNorm",
         any(not isinstance(b.norm1, nn.LayerNorm) for b in trunk.blocks)),
        ("no_embed_class", getattr(trunk, "no_embed_class", False)),
        ("dynamic image size", getattr(trunk, "dynamic_img_size", False)),
        ("attention pooling", trunk.global_pool not in ("token", "avg")),
        ("qk-norm", any(not isinstance(b.attn.q_norm, nn.Identity) for b in trunk.blocks)),
        ("a final norm other than LayerNorm",
         not isinstance(trunk.norm if trunk.global_pool == "token" else trunk.fc_norm,
                        nn.LayerNorm))) if bad]
    if unsupported:
        raise ExportError(f"model.image.name: a timm ViT with {', '.join(unsupported)} has no "
                          f"open_clip VisionTransformer equivalent")
    width = trunk.embed_dim
    blocks = trunk.blocks
    layer_scale = not isinstance(blocks[0].ls1, nn.Identity)
    matrix = projection_matrix(proj, width, where, embed_dim)
    avg = trunk.global_pool == "avg"
    vision = {"image_size": image_size, "patch_size": trunk.patch_embed.patch_size[0],
              "width": width, "layers": len(blocks),
              "head_width": width // blocks[0].attn.num_heads,
              "mlp_ratio": blocks[0].mlp.fc1.out_features / width,
              "no_ln_pre": isinstance(trunk.norm_pre, nn.Identity),
              "pool_type": "avg" if avg else "tok", "final_ln_after_pool": avg,
              "norm_kwargs": {"eps": float(blocks[0].norm1.eps)}}
    if layer_scale:
        vision["ls_init_value"] = 1.0  # the value is replaced by the trained gammas

    def weights(state: dict, target: nn.Module) -> dict:
        def get(name: str) -> torch.Tensor:
            return state[f"image.trunk.{name}"]

        out = {"visual.conv1.weight": get("patch_embed.proj.weight"),
               "visual.class_embedding": get("cls_token").reshape(width),
               "visual.proj": matrix.t().contiguous()}
        positions = get("pos_embed").reshape(-1, width).clone()
        if "image.trunk.patch_embed.proj.bias" in state:  # a bias on every patch, not the class
            positions[1:] += get("patch_embed.proj.bias")
        out["visual.positional_embedding"] = positions
        final = "fc_norm" if avg else "norm"
        out["visual.ln_post.weight"], out["visual.ln_post.bias"] = get(f"{final}.weight"), get(
            f"{final}.bias")
        if not vision["no_ln_pre"]:
            out["visual.ln_pre.weight"], out["visual.ln_pre.bias"] = get("norm_pre.weight"), get(
                "norm_pre.bias")
        for i in range(len(blocks)):
            src, dst = f"blocks.{i}.", f"visual.transformer.resblocks.{i}."
            pairs = {"norm1": "ln_1", "norm2": "ln_2", "attn.qkv": "attn.in_proj",
                     "attn.proj": "attn.out_proj", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
            for a, b in pairs.items():
                for kind in ("weight", "bias"):
                    key = f"{a}.{kind}"
                    name = f"{b}_{kind}" if b == "attn.in_proj" else f"{b}.{kind}"
                    out[dst + name] = get(src + key) if f"image.trunk.{src}{key}" in state \
                        else torch.zeros_like(target.state_dict()[dst + name])
            if layer_scale:
                out[dst + "ls_1.gamma"], out[dst + "ls_2.gamma"] = get(src + "ls1.gamma"), get(
                    src + "ls2.gamma")
        return out
    return vision, weights


def text_config(model: DualEncoder, embed_dim: int, source: str) -> tuple[dict, Callable]:
    """(open_clip ``text_cfg`` naming ``source`` for the architecture and tokenizer, a function
    filling open_clip's ``text.*`` weights)."""
    from open_clip.hf_configs import arch_dict

    cfg = model.cfg.text
    model_type = model.text.encoder.config.model_type
    if model_type not in arch_dict:
        raise ExportError(f"model.text.name={cfg.name!r}: open_clip knows transformers text towers "
                          f"of the types {', '.join(sorted(arch_dict))}, not '{model_type}'")
    if cfg.pooling not in POOLERS:
        raise ExportError(f"model.text.pooling={cfg.pooling!r}: open_clip has no last-token pooler "
                          f"for transformers towers; export a model trained with mean or cls "
                          f"pooling")
    hidden = model.text.encoder.config.hidden_size if hasattr(
        model.text.encoder.config, "hidden_size") else model.text.encoder.config.d_model
    matrix = projection_matrix(model.text.proj, hidden, "model.projection", embed_dim)
    identity = matrix.shape == (hidden, hidden) and torch.equal(matrix, torch.eye(hidden))
    text = {"hf_model_name": source, "hf_tokenizer_name": source, "hf_model_pretrained": False,
            "hf_pooler_type": POOLERS[cfg.pooling],
            "hf_proj_type": None if identity else "linear", "context_length": cfg.max_length}

    def weights(state: dict, target: nn.Module) -> dict:
        wanted = set(target.state_dict())
        out = {f"text.transformer.{k[len('text.encoder.'):]}": v for k, v in state.items()
               if k.startswith("text.encoder.")}
        out = {k: v for k, v in out.items() if k in wanted}  # e.g. BERT's unused pooler layer
        if not identity:
            out["text.proj.weight"] = matrix
        return out
    return text, weights


def open_clip_config(model: DualEncoder, config: Config, embed_dim: int, text_source: str
                     ) -> tuple[dict, list[Callable]]:
    """(the ``open_clip_config.json`` document, the weight-filling functions of both towers)."""
    vision, vision_weights = vision_config(model, embed_dim)
    text, text_weights = text_config(model, embed_dim, text_source)
    model_cfg = {"embed_dim": embed_dim, "vision_cfg": vision, "text_cfg": text,
                 "custom_text": True, "init_logit_scale": float(model.logit_scale.detach())}
    if config.loss.kind == "sigmoid":
        model_cfg["init_logit_bias"] = float(model.logit_bias.detach())
    image = model.cfg.image
    preprocess = {"size": image.image_size, "mode": "RGB", "mean": list(image.mean),
                  "std": list(image.std), "interpolation": image.interpolation,
                  "resize_mode": "shortest", "fill_color": 0}
    return {"model_cfg": model_cfg, "preprocess_cfg": preprocess}, [vision_weights, text_weights]


def export_open_clip(model: DualEncoder, config: Config, directory: str | Path,
                     embed_dim: int | None = None, hub_id: str | None = None) -> dict:
    """Write ``model`` as an open_clip model into the empty (or new) ``directory`` (module
    docstring), load it with open_clip and check its embeddings (ExportError if they differ);
    returns {"embed_dim", "max_difference": {"image", "text"}}. ``embed_dim`` keeps the first k
    dimensions (a Matryoshka prefix) of both projections. The text tower is named by
    ``directory``'s absolute path, or by ``hub_id``.
    :func:`mclip.export.checkpoint.export_checkpoint` writes into a staging folder and moves it
    into place."""
    import open_clip

    full = model.cfg.embed_dim
    embed_dim = embed_dim or full
    if not 1 <= embed_dim <= full:
        raise ExportError(f"--embed-dim {embed_dim}: give 1 to the model's {full} dimensions")
    model = model.float().eval()
    directory = Path(directory).resolve()
    document, fillers = open_clip_config(model, config, embed_dim, hub_id or str(directory))
    directory = empty_directory(directory)
    model.text.encoder.config.save_pretrained(directory)
    model.text.tokenizer.save_pretrained(directory)
    local = _local(document, str(directory))  # the text tower read from here, for the check
    (directory / CONFIG_FILE).write_text(json.dumps(local), "utf-8")
    with quiet_libraries():  # open_clip warns that the model it builds has no weights
        target = open_clip.create_model(f"local-dir:{directory}", device="cpu",
                                        pretrained_text=False)  # empty: filled below
    state = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    weights = {"logit_scale": state["logit_scale"].reshape(target.logit_scale.shape)}
    if "init_logit_bias" in document["model_cfg"]:
        weights["logit_bias"] = state["logit_bias"].reshape(target.logit_bias.shape)
    for fill in fillers:
        weights.update(fill(state, target))
    missing = sorted(set(target.state_dict()) - set(weights))
    if missing:
        raise ExportError(f"open_clip's model has weights mclip's has no source for: "
                          f"{', '.join(missing[:5])}")
    save_file({k: v.contiguous() for k, v in weights.items()}, str(directory / WEIGHTS_FILE))
    differences = check_open_clip_export(model, directory, embed_dim)
    (directory / CONFIG_FILE).write_text(json.dumps(document, indent=2), "utf-8")
    return {"embed_dim": embed_dim, "max_difference": differences}


def empty_directory(directory: str | Path) -> Path:
    """``directory`` resolved and created; an ExportError when it holds files already."""
    directory = Path(directory).resolve()
    if directory.exists() and any(directory.iterdir()):
        raise ExportError(f"'{directory}' is not empty: an export goes into a new folder")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def relocate_open_clip(directory: str | Path) -> Path:
    """Point a local open_clip export's ``hf_model_name`` / ``hf_tokenizer_name`` at where the
    folder is now (after it was moved or copied); returns the config's path."""
    directory = Path(directory).resolve()
    path = directory / CONFIG_FILE
    try:
        document = json.loads(path.read_text("utf-8"))
        document["model_cfg"]["text_cfg"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ExportError(f"'{directory}' is not an open_clip export of mclip ({CONFIG_FILE} "
                          f"with model_cfg.text_cfg)") from None
    from mclip.outputs import write_text_atomically

    return write_text_atomically(path, json.dumps(_local(document, str(directory)), indent=2))


def _local(document: dict, directory: str) -> dict:
    """The document with the text tower read from ``directory`` (to build the model here)."""
    text = {**document["model_cfg"]["text_cfg"], "hf_model_name": directory,
            "hf_tokenizer_name": directory}
    return {**document, "model_cfg": {**document["model_cfg"], "text_cfg": text}}


@torch.no_grad()
def check_open_clip_export(model: DualEncoder, directory: Path, embed_dim: int) -> dict:
    """Load ``directory`` with open_clip (as a user would) and compare its image embeddings
    (through open_clip's own preprocessing) and text embeddings (its own tokenizer) with the
    first ``embed_dim`` dimensions of mclip's, re-normalised; {"image", "text"}: the largest
    absolute differences. An ExportError when open_clip cannot load it or either exceeds 1e-5."""
    import open_clip
    import torch.nn.functional as F

    spec = f"local-dir:{directory}"
    try:
        with quiet_libraries():
            loaded, _, preprocess = open_clip.create_model_and_transforms(spec, device="cpu")
            tokenizer = open_clip.get_tokenizer(spec)
    except Exception as error:  # open_clip raises many types
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ExportError(f"open_clip cannot load the export ({first[:300]}); this model has a "
                          f"setting the open_clip mapping does not cover") from None
    loaded.eval()
    images = probe_images(model.cfg.image.image_size)
    mine_transform = model.image_transform(train=False)
    ours = F.normalize(model.encode_image(torch.stack([mine_transform(i) for i in images]),
                                          normalize=False)[:, :embed_dim], dim=-1)
    theirs = loaded.encode_image(torch.stack([preprocess(i) for i in images]), normalize=True)
    texts = probe_texts()
    ours_t = F.normalize(model.encode_text(texts, normalize=False)[:, :embed_dim], dim=-1)
    theirs_t = loaded.encode_text(tokenizer(texts), normalize=True)
    differences = {"image": float((ours - theirs).abs().max()),
                   "text": float((ours_t - theirs_t).abs().max())}
    scale = float(loaded.logit_scale.detach().reshape(()).exp())
    if not math.isclose(scale, float(model.logit_scale.detach().exp()), rel_tol=1e-6):
        raise ExportError(f"the export's logit scale {scale} differs from the model's")
    worst = max(differences, key=differences.get)
    if differences[worst] > TOLERANCE:
        raise ExportError(f"the open_clip export encodes {worst}s differently from the model "
                          f"(max |difference| {differences[worst]:.2e} > {TOLERANCE:.0e}); it was "
                          f"not kept: report this with the model's config")
    return differences
