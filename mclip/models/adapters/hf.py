"""Hugging Face transformers dual encoders behind the adapter interface.

Any model that ``AutoModel`` loads and that exposes ``get_image_features(pixel_values)`` and
``get_text_features(input_ids, ...)`` works: ``CLIPModel``, ``SiglipModel``, ``AltCLIPModel``,
``ChineseCLIPModel``, ``MetaClip2Model``, ... Images go through the model's own image processor
(``AutoImageProcessor``) and texts through its own tokenizer (``AutoTokenizer``).

``hf:NAME`` downloads from the Hugging Face hub on first use (or reads the local HF cache);
``hf:DIR`` reads a ``save_pretrained`` directory (model, tokenizer and preprocessor files) with
no network access.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from PIL import Image
from torch import nn
from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

from mclip.config import ConfigError
from mclip.models.adapters.base import TokenizingAdapter, normalized, package_versions

PAD_TO_MAX_LENGTH = ("siglip", "siglip2")
"""``config.model_type`` s whose text tower was trained on text padded to ``max_length`` with
no attention mask (big_vision): their text embedding is read at the last position, so the
padding must match training."""

_HUGE = 1_000_000  # tokenizers without a limit report model_max_length ~1e30


class ProcessorTransform:
    """PIL image -> float tensor [3, H, W] through a transformers image processor.

    A class holding the processor (not a closure) so that DataLoader workers can pickle it.
    """

    def __init__(self, processor: Any):
        self.processor = processor

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if image.mode != "RGB":
            image = image.convert("RGB")
        return self.processor(images=image, return_tensors="pt")["pixel_values"][0].float()


class HFAdapter(TokenizingAdapter):
    """A transformers dual encoder with its tokenizer and image processor.

    ``model``, ``tokenizer`` and ``image_processor`` are the transformers objects.
    ``max_length`` is the token limit (min of the tokenizer's and the text position table's);
    ``pad_to_max_length`` is True for SigLIP-style models (see :data:`PAD_TO_MAX_LENGTH`).
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        image_processor: Any,
        name: str,
        max_length: int | None,
        pad_to_max_length: bool,
    ):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.name = name
        self.max_length = max_length
        self.pad_to_max_length = pad_to_max_length
        self._transform = ProcessorTransform(image_processor)
        with torch.no_grad():  # measured once: configs name the shared size differently
            self.embed_dim = int(self.encode_text(["a photo"]).shape[-1])

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Strings -> the text inputs of ``get_text_features``: LongTensors [N, L] on the CPU.

        SigLIP: ``{'input_ids'}`` padded to ``max_length`` (64 for SigLIP), as it was trained in
        big_vision: no attention mask, and its embedding is the state at the last position,
        which padding to the longest text would move. Others (CLIP, ...): ``{'input_ids',
        'attention_mask'}`` padded to the longest text, truncated to ``max_length``.
        """
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if self.pad_to_max_length:
            out = self.tokenizer(
                texts,
                padding="max_length",
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            return {"input_ids": out["input_ids"]}
        out = self.tokenizer(
            texts,
            padding=True,
            truncation=self.max_length is not None,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return {key: out[key] for key in ("input_ids", "attention_mask") if key in out}

    def encode_tokens(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """Token dict from :meth:`tokenize` -> normalised float32 [N, embed_dim] via
        ``get_text_features``."""
        inputs = {key: value.to(self.device) for key, value in tokens.items()}
        model: Any = self.model  # a transformers model, typed by torch as Tensor | Module
        return normalized(_embedding(model.get_text_features(**inputs), "get_text_features"))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """images [N, 3, H, W] from :meth:`image_transform` -> normalised float32 [N, embed_dim]."""
        model: Any = self.model
        dtype = next(model.parameters()).dtype
        pixels = images.to(device=self.device, dtype=dtype)
        return normalized(
            _embedding(model.get_image_features(pixel_values=pixels), "get_image_features")
        )

    def image_transform(self, train: bool = False) -> Callable[[Image.Image], torch.Tensor]:
        """The model's image processor, PIL image -> float tensor [3, H, W]; picklable.

        transformers processors have no training augmentation: ``train=True`` returns the same
        deterministic preprocessing.
        """
        return self._transform

    @property
    def logit_scale(self) -> torch.Tensor:
        """log of the temperature inverse (0-d): the model's ``logit_scale``, or
        -log(``temperature``) for models that store a temperature (ALIGN)."""
        scale = getattr(self.model, "logit_scale", None)
        if isinstance(scale, torch.Tensor):
            return scale.reshape(())
        temperature = getattr(self.model, "temperature", None)
        if isinstance(temperature, torch.Tensor):
            return -torch.log(temperature.reshape(()))
        raise ConfigError(
            f"model '{self.name}' ({type(self.model).__name__}) has neither a "
            f"logit_scale nor a temperature parameter"
        )

    @property
    def logit_bias(self) -> torch.Tensor | None:
        """SigLIP's bias (0-d tensor), or None for models without one (CLIP)."""
        bias = getattr(self.model, "logit_bias", None)
        return bias.reshape(()) if isinstance(bias, torch.Tensor) else None

    @property
    def versions(self) -> dict[str, str]:
        """transformers and torch."""
        return package_versions("transformers", "torch")


def load_hf(source: str, device: torch.device | str = "cpu") -> HFAdapter:
    """``hf:``-spec (without the prefix) -> HFAdapter in eval mode on ``device``.

    ``source``: a hub name (``google/siglip-base-patch16-224``; downloaded on first use, needs
    network access or the local HF cache) or a directory written with ``save_pretrained``
    holding the model, its tokenizer and its image processor (no network). Weights are loaded
    in float32 on the CPU, checked, then moved to ``device``.
    """
    where = _resolve_source(source)
    name = f"hf:{source}"
    model = _load(AutoModel.from_pretrained, where, name, "model", dtype=torch.float32)
    missing = [m for m in ("get_image_features", "get_text_features") if not hasattr(model, m)]
    if missing:
        raise ConfigError(
            f"model spec '{name}' loads a {type(model).__name__}, which has no "
            f"{' / '.join(missing)}: it is not an image-text dual encoder "
            f"(use e.g. a CLIPModel or SiglipModel checkpoint)"
        )
    tokenizer = _load(AutoTokenizer.from_pretrained, where, name, "tokenizer")
    image_processor = _load(AutoImageProcessor.from_pretrained, where, name, "image processor")
    _check_image_processor(image_processor, name)
    model_type = getattr(model.config, "model_type", "")
    pad = model_type in PAD_TO_MAX_LENGTH
    max_length = _text_max_length(tokenizer, model)
    if pad and max_length is None:
        raise ConfigError(
            f"model spec '{name}': {model_type} text must be padded to a fixed "
            f"length, but neither its tokenizer nor its config gives one"
        )
    adapter = HFAdapter(model.eval(), tokenizer, image_processor, name, max_length, pad)
    return adapter.to(torch.device(device)).eval()


def _resolve_source(source: str) -> str:
    """A local directory's path, or the hub name as given; a missing local path is an error."""
    source = source.strip()
    if not source:
        raise ConfigError(
            "model spec 'hf:' names no model; give 'hf:ORG/NAME' (hub) or "
            "'hf:DIR' (a save_pretrained directory)"
        )
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ConfigError(
                f"model spec 'hf:{source}': '{path}' is a file; give the directory "
                f"written by save_pretrained"
            )
        return str(path)
    looks_local = source.startswith(("/", "./", "../", "~", ".\\")) or source.count("/") > 1
    if looks_local:
        raise ConfigError(
            f"model spec 'hf:{source}': directory '{path}' does not exist; give a "
            f"save_pretrained directory or a hub name such as "
            f"'hf:openai/clip-vit-base-patch32'"
        )
    return source


def _load(loader: Callable, where: str, name: str, what: str, **kwargs) -> Any:
    try:
        return loader(where, **kwargs)
    except (OSError, ValueError, KeyError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(
            f"model spec '{name}': cannot load its {what} ({first}). Give a "
            f"directory written by save_pretrained (model, tokenizer and image "
            f"processor files) or a hub name with network access."
        ) from None


def _check_image_processor(processor: Any, name: str) -> None:
    """The processor must turn one image into pixel_values alone (no NaFlex-style extras)."""
    out = processor(images=Image.new("RGB", (32, 32), (128, 128, 128)), return_tensors="pt")
    extra = sorted(set(out.keys()) - {"pixel_values"})
    pixels = out.get("pixel_values")
    if extra or not isinstance(pixels, torch.Tensor) or pixels.ndim != 4:
        raise ConfigError(
            f"model spec '{name}': its image processor "
            f"({type(processor).__name__}) gives {sorted(out.keys())}; only models "
            f"taking one fixed-size pixel_values [N, 3, H, W] are supported"
        )


def _text_max_length(tokenizer: Any, model: nn.Module) -> int | None:
    """Tokens per text: the smaller of the tokenizer's limit and the text position table."""
    text_config = getattr(model.config, "text_config", None) or model.config
    found = [
        getattr(text_config, "max_position_embeddings", None),
        getattr(tokenizer, "model_max_length", None),
    ]
    limits = [
        int(v) for v in found if isinstance(v, (int, float)) and math.isfinite(v) and 0 < v < _HUGE
    ]
    return min(limits) if limits else None


def _embedding(output: Any, method: str) -> torch.Tensor:
    """The [N, d] embedding from get_*_features: transformers 4.x returns the tensor, 5.x a
    model output whose ``pooler_output`` holds the projected embedding."""
    if isinstance(output, torch.Tensor):
        return output
    for key in ("pooler_output", "image_embeds", "text_embeds"):
        value = getattr(output, key, None)
        if isinstance(value, torch.Tensor):
            return value
    raise TypeError(
        f"{method} returned {type(output).__name__} with no tensor, pooler_output, "
        f"image_embeds or text_embeds to use as the embedding"
    )
