"""mclip's own :class:`~mclip.models.dual.DualEncoder` behind the adapter interface."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image

from mclip.config import Config, ConfigError
from mclip.models.adapters.base import (
    ACCEPTED_FORMS,
    TokenizingAdapter,
    normalized,
    package_versions,
)
from mclip.models.dual import DualEncoder
from mclip.models.manifest import DamagedCheckpoint
from mclip.models.lora import attached_languages, load_language_adapters, text_language
from mclip.models.checkpoints import resolve_model_dir


class NativeAdapter(TokenizingAdapter):
    """A DualEncoder and the Config that built it.

    ``model`` (the DualEncoder) and ``config`` (its :class:`~mclip.config.Config`) stay
    accessible, e.g. for a distillation teacher. ``logit_bias`` is the model's bias when the
    config trained with ``loss.kind: sigmoid`` and None for ``infonce`` (whose DualEncoder holds
    an unused bias parameter).

    Language adapters (:mod:`mclip.models.lora`) attached to the model are listed in
    ``adapter_languages``; ``encode_text`` uses one only inside ``text_language(lang)``, and
    encodes as the base model everywhere else.
    """

    def __init__(self, model: DualEncoder, config: Config, name: str = ""):
        super().__init__()
        self.model = model
        self.config = config
        self.name = name
        self.embed_dim = int(model.cfg.embed_dim)
        self.checkpoint: Path | None = None
        """The model directory loaded (a run directory's newest intact checkpoint)."""
        self.damaged_checkpoints: list[tuple[Path, str]] = []
        """Newer checkpoints of the run passed over as damaged: (path, what is wrong)."""

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """images [N, 3, S, S] from :meth:`image_transform` -> normalised float32 [N, embed_dim]."""
        return normalized(self.model.encode_image(images.to(self.device), normalize=False))

    def encode_tokens(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """{'input_ids', 'attention_mask'} [N, L] from :meth:`tokenize` -> normalised float32
        [N, embed_dim] (padded to the batch's longest text: padding is masked)."""
        return normalized(self.model.encode_text(tokens, normalize=False))

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Strings -> {'input_ids', 'attention_mask'}: LongTensor [N, L] on the CPU."""
        return self.model.tokenize(texts)

    def image_transform(self, train: bool = False) -> Callable[[Image.Image], torch.Tensor]:
        """PIL image -> float tensor [3, S, S] (S = ``model.image.image_size``); ``train``
        adds the random horizontal flip used in training. Picklable."""
        return self.model.image_transform(train=train)

    @property
    def logit_scale(self) -> torch.Tensor:
        """log of the temperature inverse, a 0-d tensor (the trained parameter)."""
        return self.model.logit_scale

    @property
    def logit_bias(self) -> torch.Tensor | None:
        """The sigmoid-loss bias (0-d tensor), or None when the model was trained with InfoNCE."""
        return self.model.logit_bias if self.config.loss.kind == "sigmoid" else None

    @property
    def versions(self) -> dict[str, str]:
        """mclip and the libraries building its towers (and peft with language adapters)."""
        extra = ("peft",) if self.adapter_languages else ()
        return package_versions("mclip", "torch", "timm", "transformers", *extra)

    @property
    def adapter_languages(self) -> tuple[str, ...]:
        """Languages with a LoRA adapter attached to the text tower (sorted; often none)."""
        return tuple(attached_languages(self.model))

    def text_language(self, language: str | None):
        """Context: texts encoded inside are in ``language``: its adapter is on when it has one,
        else the base model encodes them."""
        return text_language(self.model, language)


def load_native(
    directory: str | Path,
    device: torch.device | str = "cpu",
    name: str | None = None,
    language_adapters: bool = True,
) -> NativeAdapter:
    """An mclip run directory (newest checkpoint) or checkpoint directory -> NativeAdapter.

    No network access is needed. The model is put in eval mode on ``device``. With
    ``language_adapters`` the adapters saved beside the checkpoint (``adapters/<lang>/``) are
    attached (see :class:`NativeAdapter`).
    """
    passed_over: list[tuple[Path, str]] = []
    try:
        model_dir = resolve_model_dir(directory, passed_over)
    except DamagedCheckpoint:
        raise
    except ConfigError as error:
        raise ConfigError(f"{error}; {ACCEPTED_FORMS}") from None
    model, config = DualEncoder.load(model_dir, map_location=device, verify=False)
    if language_adapters:
        load_language_adapters(model, model_dir)
    adapter = NativeAdapter(model, config, name=name if name is not None else str(directory))
    adapter.checkpoint, adapter.damaged_checkpoints = model_dir, passed_over
    return adapter.eval()
