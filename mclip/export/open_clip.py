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

from mclip.config import Config
from mclip.export import ExportError, quiet_libraries
from mclip.export.open_clip_towers import text_config, vision_config
from mclip.export.probes import probe_images, probe_texts
from mclip.models.dual import DualEncoder

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"
TOLERANCE = 1e-5  # max |difference| of fp32 embeddings between mclip and the export


def open_clip_config(
    model: DualEncoder, config: Config, embed_dim: int, text_source: str
) -> tuple[dict, list[Callable]]:
    """(the ``open_clip_config.json`` document, the weight-filling functions of both towers)."""
    vision, vision_weights = vision_config(model, embed_dim)
    text, text_weights = text_config(model, embed_dim, text_source)
    model_cfg = {
        "embed_dim": embed_dim,
        "vision_cfg": vision,
        "text_cfg": text,
        "custom_text": True,
        "init_logit_scale": float(model.logit_scale.detach()),
    }
    if config.loss.kind == "sigmoid":
        model_cfg["init_logit_bias"] = float(model.logit_bias.detach())
    image = model.cfg.image
    preprocess = {
        "size": image.image_size,
        "mode": "RGB",
        "mean": list(image.mean),
        "std": list(image.std),
        "interpolation": image.interpolation,
        "resize_mode": "shortest",
        "fill_color": 0,
    }
    return {"model_cfg": model_cfg, "preprocess_cfg": preprocess}, [vision_weights, text_weights]


def export_open_clip(
    model: DualEncoder,
    config: Config,
    directory: str | Path,
    embed_dim: int | None = None,
    hub_id: str | None = None,
) -> dict:
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
        target = open_clip.create_model(
            f"local-dir:{directory}", device="cpu", pretrained_text=False
        )  # empty: filled below
    state = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    weights = {"logit_scale": state["logit_scale"].reshape(target.logit_scale.shape)}
    if "init_logit_bias" in document["model_cfg"]:
        weights["logit_bias"] = state["logit_bias"].reshape(target.logit_bias.shape)
    for fill in fillers:
        weights.update(fill(state, target))
    missing = sorted(set(target.state_dict()) - set(weights))
    if missing:
        raise ExportError(
            f"open_clip's model has weights mclip's has no source for: {', '.join(missing[:5])}"
        )
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
        raise ExportError(
            f"'{directory}' is not an open_clip export of mclip ({CONFIG_FILE} "
            f"with model_cfg.text_cfg)"
        ) from None
    from mclip.outputs import write_text_atomically

    return write_text_atomically(path, json.dumps(_local(document, str(directory)), indent=2))


def _local(document: dict, directory: str) -> dict:
    """The document with the text tower read from ``directory`` (to build the model here)."""
    text = {
        **document["model_cfg"]["text_cfg"],
        "hf_model_name": directory,
        "hf_tokenizer_name": directory,
    }
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
        raise ExportError(
            f"open_clip cannot load the export ({first[:300]}); this model has a "
            f"setting the open_clip mapping does not cover"
        ) from None
    loaded.eval()
    images = probe_images(model.cfg.image.image_size)
    mine_transform = model.image_transform(train=False)
    ours = F.normalize(
        model.encode_image(torch.stack([mine_transform(i) for i in images]), normalize=False)[
            :, :embed_dim
        ],
        dim=-1,
    )
    theirs = loaded.encode_image(torch.stack([preprocess(i) for i in images]), normalize=True)
    texts = probe_texts()
    ours_t = F.normalize(model.encode_text(texts, normalize=False)[:, :embed_dim], dim=-1)
    theirs_t = loaded.encode_text(tokenizer(texts), normalize=True)
    differences = {
        "image": float((ours - theirs).abs().max()),
        "text": float((ours_t - theirs_t).abs().max()),
    }
    scale = float(loaded.logit_scale.detach().reshape(()).exp())
    if not math.isclose(scale, float(model.logit_scale.detach().exp()), rel_tol=1e-6):
        raise ExportError(f"the export's logit scale {scale} differs from the model's")
    worst = max(differences, key=differences.__getitem__)
    if differences[worst] > TOLERANCE:
        raise ExportError(
            f"the open_clip export encodes {worst}s differently from the model "
            f"(max |difference| {differences[worst]:.2e} > {TOLERANCE:.0e}); it was "
            f"not kept: report this with the model's config"
        )
    return differences
