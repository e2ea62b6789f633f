"""DualEncoder: an image tower, a text tower and the learnable logit scale and bias.

A saved model is a directory that loads with no network access:

    config.yaml        the exact Config that built it
    model.safetensors  all weights
    text_tower/        architecture config and tokenizer files of a transformers text tower
                       (absent for the built-in byte-level tower, which is rebuilt from config)
    image_tower/       architecture of an open_clip / transformers image tower (absent for timm)
    manifest.json      every file's size and sha256, written last (:mod:`mclip.models.manifest`)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn
from torchvision.transforms import functional as TF

from mclip.config import Config, ConfigError, ModelConfig, load_config, save_config
from mclip.models.manifest import DamagedCheckpoint, check_intact, write_manifest
from mclip.models.towers import ImageTower, TextTower

CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "model.safetensors"
TEXT_SOURCE_DIR = "text_tower"
IMAGE_SOURCE_DIR = "image_tower"  # open_clip / transformers image towers only


class DualEncoder(nn.Module):
    """Image and text towers mapping into one ``embed_dim`` space.

    ``logit_scale`` is log(t) for the temperature inverse t; ``logit_bias`` is the sigmoid
    loss bias b. Both are scalars. ``encode_*`` return [N, embed_dim], L2-normalised by default.
    """

    def __init__(
        self,
        cfg: ModelConfig,
        text_source: str | Path | None = None,
        load_pretrained: bool = True,
        image_source: str | Path | None = None,
    ):
        super().__init__()
        self.cfg = cfg
        self.image = ImageTower(
            cfg.image,
            cfg.embed_dim,
            cfg.image.projection or cfg.projection,
            load_pretrained,
            image_source,
        )
        self.text = TextTower(cfg.text, cfg.embed_dim, cfg.projection, text_source)
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.init_logit_scale)))
        self.logit_bias = nn.Parameter(torch.tensor(float(cfg.init_logit_bias)))

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """images [N, 3, H, W] preprocessed by ``image_transform`` -> [N, embed_dim]."""
        features = self.image(images)
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(
        self, tokens: dict[str, torch.Tensor] | Sequence[str], normalize: bool = True
    ) -> torch.Tensor:
        """Token dict from ``tokenize`` (or raw strings) -> [N, embed_dim]."""
        if not isinstance(tokens, dict):
            tokens = self.tokenize(list(tokens))
        device = self.logit_scale.device
        features = self.text(tokens["input_ids"].to(device), tokens["attention_mask"].to(device))
        return F.normalize(features, dim=-1) if normalize else features

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Strings -> {'input_ids', 'attention_mask'}: LongTensor [N, L], right-padded."""
        return self.text.tokenize(list(texts))

    def image_transform(self, train: bool = False):
        """A function PIL image -> float tensor [3, S, S] (S = image size), normalised.

        With ``train=True`` a random horizontal flip is applied.
        """
        size, mean, std = self.cfg.image.image_size, self.cfg.image.mean, self.cfg.image.std
        return ImageTransform(
            size, mean, std, flip=train, interpolation=self.cfg.image.interpolation
        )

    def clamp_logit_scale(self) -> None:
        """Clamp exp(logit_scale) to ``max_logit_scale`` (called by the trainer after a step)."""
        if self.cfg.max_logit_scale is not None:
            with torch.no_grad():
                self.logit_scale.clamp_(max=math.log(self.cfg.max_logit_scale))

    def save(self, directory: str | Path, config: Config, manifest: bool = True) -> None:
        """Write ``config.yaml``, ``model.safetensors`` (and ``text_tower/``) into ``directory``,
        then ``manifest.json`` (sizes and digests; ``manifest=False`` leaves it to the caller,
        which writes more files first)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_config(config, directory / CONFIG_FILE)
        save_model(self, str(directory / WEIGHTS_FILE), force_contiguous=True)  # channels_last
        if self.cfg.text.name != "byte":
            self.text.save_source(directory / TEXT_SOURCE_DIR)
        self.image.save_source(directory / IMAGE_SOURCE_DIR)
        if manifest:
            write_manifest(directory)

    @classmethod
    def load(
        cls, directory: str | Path, map_location: str | torch.device = "cpu", verify: bool = True
    ) -> tuple["DualEncoder", Config]:
        """Rebuild a model saved with :meth:`save`; needs no hub access. Returns (model, config).

        Every parameter and buffer of the returned model is on ``map_location`` (any torch
        device, e.g. "cpu", "cuda:0", "meta"); weights are read on the CPU and then moved.
        With ``verify`` the files are checked against ``manifest.json`` first (a damaged
        directory raises :class:`~mclip.models.manifest.DamagedCheckpoint` naming the file);
        pass False only when the caller has just checked it.
        """
        device = as_device(map_location)
        directory = Path(directory)
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (directory / name).is_file():
                raise ConfigError(
                    f"'{directory}' is not an mclip model directory: {name} is "
                    f"missing. Pass a checkpoint directory written by 'mclip train' "
                    f"(e.g. runs/demo/checkpoints/step_0000300) or the run "
                    f"directory."
                )
        if verify:
            check_intact(directory)
        config = load_config(directory / CONFIG_FILE)
        model = cls(config.model, load_pretrained=False, **saved_sources(directory))
        load_weights(model, directory)
        return model.to(device), config


def load_weights(model: nn.Module, directory: str | Path, device: str = "cpu") -> None:
    """Load ``directory/model.safetensors`` into ``model`` (strict); a file that cannot be read
    is a :class:`~mclip.models.manifest.DamagedCheckpoint` naming it. Shape mismatches stay
    RuntimeErrors (the caller knows which config to blame)."""
    path = Path(directory) / WEIGHTS_FILE
    try:
        load_model(model, str(path), device=device)
    except (SafetensorError, OSError) as error:
        raise DamagedCheckpoint(
            f"'{directory}' is damaged: {WEIGHTS_FILE} cannot be read "
            f"({error}). Use an earlier checkpoint, or write this one "
            f"again"
        ) from None


def saved_sources(directory: str | Path) -> dict[str, Path]:
    """The ``text_source`` / ``image_source`` arguments that rebuild a saved model's towers
    from the architecture files in its directory (those it has)."""
    directory = Path(directory)
    return {
        key: directory / name
        for key, name in (("text_source", TEXT_SOURCE_DIR), ("image_source", IMAGE_SOURCE_DIR))
        if (directory / name).is_dir()
    }


def as_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch.device; a user-facing error when it names no device."""
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(
            f"device {device!r} is not a torch device; give e.g. 'cpu', 'cuda' or 'cuda:0'"
        ) from None


class ImageTransform:
    """PIL image -> normalised float tensor [3, size, size] (resize, centre crop, optional flip).

    A class (not a closure) so that DataLoader workers can pickle it.
    """

    def __init__(
        self,
        size: int,
        mean: list[float],
        std: list[float],
        flip: bool = False,
        interpolation: str = "bilinear",
    ):
        self.size, self.mean, self.std, self.flip = size, list(mean), list(std), flip
        self.interpolation = interpolation

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = image.convert("RGB")
        if image.size != (self.size, self.size):  # shorter side to size, then centre crop
            mode = TF.InterpolationMode(self.interpolation)
            image = TF.center_crop(
                TF.resize(image, self.size, interpolation=mode, antialias=True), [self.size] * 2
            )
        tensor = TF.to_tensor(image)
        if self.flip and torch.rand(()) < 0.5:
            tensor = tensor.flip(-1)
        return TF.normalize(tensor, self.mean, self.std)
