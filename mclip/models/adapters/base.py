"""The one interface every evaluated (or teacher) model exposes, whatever library built it.

mclip's own :class:`~mclip.models.dual.DualEncoder`, open_clip models and Hugging Face
CLIP / SigLIP models are each wrapped by a small adapter (one file per library) that gives:

- ``encode_image(images [N, 3, H, W]) -> [N, d]`` and ``encode_text(list of N str) -> [N, d]``,
  both L2-normalised, float32, on the adapter's device; images come from ``image_transform``;
- ``image_transform(train=False)``: a picklable callable PIL image -> float tensor [3, H, W]
  with the model's own preprocessing;
- ``logit_scale``: log of the temperature inverse (a 0-d float tensor) and ``logit_bias``
  (a 0-d tensor, or None where the model has none);
- ``embed_dim`` (d), ``name`` (the spec it was loaded from) and ``versions`` (the library
  versions that determine its numbers, for the results JSON).

Adapters are ``nn.Module`` s, so ``.to(device)`` and ``.eval()`` work as usual; encoding runs
without gradients only if the caller asks for it (a frozen teacher wraps calls in no_grad).
Each adapter also has ``tokenize(texts)`` giving its library's own token format (a dict of
LongTensors for mclip and transformers, a LongTensor for open_clip), and keeps the wrapped
library model as ``model``. :func:`mclip.load_model` builds an adapter from a spec string.
"""

from __future__ import annotations

import abc
import importlib.metadata
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn


# The model specs load_model takes, for error messages (mclip.models.adapters.registry).
ACCEPTED_FORMS = (
    "accepted model specs: DIR (an mclip run directory or checkpoint directory), "
    "'open_clip:ARCH' with pretrained=TAG_OR_FILE (or 'open_clip:ARCH/TAG'), "
    "'hf:NAME_OR_DIR' (a transformers hub name or save_pretrained directory), "
    "'onnx:DIR' (an 'mclip export --format onnx' folder)"
)


class ModelAdapter(nn.Module, abc.ABC):
    """Base class of the adapters; subclasses implement the four encoding methods."""

    name: str = ""
    embed_dim: int = 0

    @abc.abstractmethod
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """images [N, 3, H, W] from :meth:`image_transform` -> normalised float [N, embed_dim]."""
        ...

    @abc.abstractmethod
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """N strings -> normalised float [N, embed_dim] (tokenised with the model's tokenizer)."""
        ...

    @abc.abstractmethod
    def image_transform(self, train: bool = False) -> Callable[[Image.Image], torch.Tensor]:
        """The model's own preprocessing: PIL image -> float tensor [3, H, W]."""
        ...

    @property
    @abc.abstractmethod
    def logit_scale(self) -> torch.Tensor:
        """log(temperature inverse), a 0-d tensor."""
        ...

    @property
    def logit_bias(self) -> torch.Tensor | None:
        """The sigmoid-loss bias (0-d tensor), or None for models trained without one."""
        return None

    @property
    def versions(self) -> dict[str, str]:
        """Library versions behind this model's numbers ({'open_clip_torch': '3.3.0'}, ...)."""
        return {}

    @property
    def device(self) -> torch.device:
        """Where the weights live (inputs are moved there by the encode methods)."""
        for tensor in self.parameters():
            return tensor.device
        return torch.device("cpu")


class TokenizingAdapter(ModelAdapter):
    """An adapter that encodes text as ``encode_tokens(tokenize(texts))``: tokenising apart lets
    the evaluator tokenise the next batch while one runs and batch texts by token length."""

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """N strings -> normalised float [N, embed_dim] (tokenised with the model's tokenizer)."""
        if isinstance(texts, str):
            texts = [texts]
        return self.encode_tokens(self.tokenize(list(texts)))

    @abc.abstractmethod
    def tokenize(self, texts: Sequence[str]) -> Any:
        """N strings -> the model's token format, on the CPU (see the module docstring)."""
        ...

    @abc.abstractmethod
    def encode_tokens(self, tokens: Any) -> torch.Tensor:
        """Tokens from :meth:`tokenize` -> normalised float [N, embed_dim]."""
        ...


def normalized(features: torch.Tensor) -> torch.Tensor:
    """Features [N, d] in any float dtype -> L2-normalised float32 [N, d] (norm in float32)."""
    return F.normalize(features.float(), dim=-1)


def package_versions(*packages: str) -> dict[str, str]:
    """Installed versions of the named distributions ('open_clip_torch', 'torch', ...).

    A distribution that is not installed is reported as 'not installed' rather than raising.
    """
    versions = {}
    for package in packages:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions
