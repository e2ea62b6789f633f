"""Turn a model spec into a :class:`~mclip.models.adapters.base.ModelAdapter`.

Accepted specs:

- ``DIR``: an mclip run directory (its newest checkpoint is used) or a checkpoint / model
  directory (``config.yaml`` + ``model.safetensors``); loads with no network access.
- ``open_clip:ARCH`` with ``pretrained=TAG_OR_FILE`` (or the shorthand ``open_clip:ARCH/TAG``):
  an open_clip architecture with a pretrained tag (downloaded from the hub) or a local
  ``.pt`` / ``.safetensors`` file (no network); ``model_config=FILE.json`` defines an ARCH
  open_clip does not ship; ``open_clip:local-dir:DIR`` and ``open_clip:hf-hub:ORG/REPO`` carry
  config and weights together.
- ``hf:NAME_OR_DIR``: a transformers dual encoder (``CLIPModel``, ``SiglipModel``, ...) from a
  hub name (needs network or the local HF cache) or a ``save_pretrained`` directory.
- ``onnx:DIR``: an ONNX export of an mclip model (``mclip export --format onnx``), run by
  onnxruntime on the CPU.

The library modules (open_clip, transformers) are imported only when their prefix is used.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import torch

from mclip.config import ConfigError
from mclip.models.adapters.base import ACCEPTED_FORMS, ModelAdapter

OPEN_CLIP_PREFIX = "open_clip:"
HF_PREFIX = "hf:"
ONNX_PREFIX = "onnx:"
_PREFIX = re.compile(r"^([A-Za-z][A-Za-z0-9_.+-]+):")  # two characters or more: not a drive letter


def load_model(
    spec: str | Path,
    pretrained: str | None = None,
    device: str | torch.device = "cpu",
    language_adapters: bool = True,
    model_config: str | Path | None = None,
) -> ModelAdapter:
    """Load any dual encoder behind the common adapter interface, in eval mode, on ``device``.

    ``spec``: ``DIR`` (mclip run or checkpoint directory), ``open_clip:ARCH`` (``pretrained``:
    a tag or a local weights file; or ``open_clip:ARCH/TAG``) or ``hf:NAME_OR_DIR``.
    ``pretrained`` is only meaningful for open_clip specs. ``device``: any torch device
    ("cpu", "cuda:0", "meta", ...); every parameter of the returned adapter is there.
    ``language_adapters``: attach the LoRA language adapters saved beside an mclip checkpoint
    (``adapters/<lang>/``; used for that language's texts only); False gives the base model.
    ``model_config``: for ``open_clip:ARCH``, an open_clip model config JSON defining ARCH (an
    architecture open_clip does not ship); only meaningful for open_clip specs.

    The adapter's ``encode_image(images [N, 3, H, W]) -> [N, d]`` and
    ``encode_text(list of N str) -> [N, d]`` return L2-normalised float32 embeddings.
    Raises :class:`~mclip.config.ConfigError` naming the bad input and the accepted forms.
    """
    from mclip.models.dual import as_device

    device = as_device(device)
    text = str(spec).strip()
    if not text:
        raise ConfigError(f"the model spec is empty; {ACCEPTED_FORMS}")
    if text.startswith(OPEN_CLIP_PREFIX):
        from mclip.models.adapters.open_clip import load_open_clip

        return load_open_clip(
            text[len(OPEN_CLIP_PREFIX) :],
            pretrained,
            device,
            None if model_config is None else str(model_config),
        )
    if model_config is not None:
        raise ConfigError(
            f"model_config (--model-config) is only used with 'open_clip:ARCH' "
            f"specs; model spec '{text}' brings its own architecture: drop it"
        )
    if text.startswith(HF_PREFIX):
        _refuse_pretrained(text, pretrained)
        from mclip.models.adapters.hf import load_hf

        return load_hf(text[len(HF_PREFIX) :], device)
    if text.startswith(ONNX_PREFIX):
        _refuse_pretrained(text, pretrained)
        from mclip.models.adapters.onnx import load_onnx

        return load_onnx(text[len(ONNX_PREFIX) :])
    path = Path(text).expanduser()
    prefix = _PREFIX.match(text)
    if prefix and not path.exists():
        known = [OPEN_CLIP_PREFIX, HF_PREFIX, ONNX_PREFIX]
        close = difflib.get_close_matches(prefix.group(0), known, n=1, cutoff=0.5)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(
            f"model spec '{text}' has an unknown prefix '{prefix.group(0)}'{hint}; {ACCEPTED_FORMS}"
        )
    if not path.is_dir():
        what = "is a file, not a directory" if path.exists() else "does not exist"
        raise ConfigError(f"model spec '{text}': the directory {what}; {ACCEPTED_FORMS}")
    _refuse_pretrained(text, pretrained)
    from mclip.models.adapters.native import load_native

    return load_native(path, device, name=text, language_adapters=language_adapters)


def _refuse_pretrained(spec: str, pretrained: str | None) -> None:
    if pretrained is not None:
        raise ConfigError(
            f"pretrained={pretrained!r} is only used with 'open_clip:ARCH' specs; "
            f"model spec '{spec}' names its weights itself: drop pretrained"
        )
