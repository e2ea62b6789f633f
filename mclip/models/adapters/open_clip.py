"""open_clip models behind the adapter interface, with open_clip's own preprocessing and tokenizer.

Specs (see :func:`load_open_clip`):

- ``open_clip:ARCH`` with ``pretrained=TAG``: a published tag; the weights are downloaded by
  open_clip (hub or URL) on first use and cached, so this needs network access once.
- ``open_clip:ARCH`` with ``pretrained=FILE``: a local ``.pt`` / ``.pth`` / ``.bin`` /
  ``.safetensors`` state dict for that architecture; needs no network.
- ``open_clip:ARCH/TAG``: shorthand for the first form.
- ``open_clip:hf-hub:ORG/REPO`` and ``open_clip:local-dir:DIR``: open_clip's own schemas, which
  carry config and weights together (``pretrained`` must then be left out); ``local-dir:`` is a
  folder with ``open_clip_config.json`` and ``open_clip_model.safetensors`` (or ``.bin``).
- ``open_clip:ARCH`` with ``model_config=FILE.json``: an architecture open_clip does not ship,
  from a model config in open_clip's format (``embed_dim``, ``vision_cfg``, ``text_cfg``),
  registered under the name ARCH, with ``pretrained=FILE`` for its weights.
"""

from __future__ import annotations

import difflib
import json
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence, cast

import open_clip
import torch
from PIL import Image
from torch import nn

from mclip.config import ConfigError
from mclip.models.adapters.base import TokenizingAdapter, normalized, package_versions
from mclip.models.adapters.open_clip_text import encode_trimmed, padding_rule, used_lengths

_SCHEMAS = ("hf-hub:", "local-dir:")
_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".npz")


class OpenClipAdapter(TokenizingAdapter):
    """An open_clip ``CLIP`` / ``CustomTextCLIP`` / ``CoCa`` model.

    ``model`` is the open_clip model, ``tokenizer`` open_clip's tokenizer for the architecture
    (strings -> LongTensor [N, context_length]), ``pretrained`` the tag or file the weights
    came from.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Callable,
        train_transform: Callable,
        eval_transform: Callable,
        name: str,
        embed_dim: int,
        pretrained: str | None = None,
    ):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self._transforms = {True: train_transform, False: eval_transform}
        self.name = name
        self.embed_dim = int(embed_dim)
        self.pretrained = pretrained
        self.text_padding = padding_rule(model)
        """Whether text batches run at their own longest length (:mod:`.open_clip_text`)."""

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """images [N, 3, H, W] from :meth:`image_transform` -> normalised float32 [N, embed_dim]."""
        model: Any = self.model  # an open_clip model (untyped library)
        return normalized(model.encode_image(images.to(self.device), normalize=False))

    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """LongTensor [N, context_length] from :meth:`tokenize` -> normalised float32
        [N, embed_dim]; run at the batch's own longest length where :attr:`text_padding`
        allows it (the same embeddings as at full padding)."""
        return normalized(encode_trimmed(self.model, self.text_padding, tokens.to(self.device)))

    def tokenize_by_length(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens LongTensor [N, context_length], order LongTensor [N]): the texts' tokens and
        the order that sorts them by the length they run at (batches in this order carry the
        least padding: 1.3x fewer positions than sorting by characters on ImageNet prompts)."""
        tokens = self.tokenize(texts)
        lengths = used_lengths(self.model, self.text_padding, tokens)
        return tokens, torch.argsort(lengths, stable=True)

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Strings -> token ids, LongTensor [N, context_length] on the CPU (open_clip tokenizer)."""
        if isinstance(texts, str):
            texts = [texts]
        return self.tokenizer(list(texts))

    def image_transform(self, train: bool = False) -> Callable[[Image.Image], torch.Tensor]:
        """open_clip's preprocessing, PIL image -> float tensor [3, H, W]: the eval transform
        (resize, centre crop, normalise), or with ``train=True`` its training augmentation."""
        return self._transforms[bool(train)]

    @property
    def logit_scale(self) -> torch.Tensor:
        """log of the temperature inverse, a 0-d tensor (open_clip stores [] or [1])."""
        return cast(torch.Tensor, self.model.logit_scale).reshape(())

    @property
    def logit_bias(self) -> torch.Tensor | None:
        """The SigLIP bias (0-d tensor), or None for models trained with InfoNCE."""
        bias = getattr(self.model, "logit_bias", None)
        return None if bias is None else bias.reshape(())

    @property
    def versions(self) -> dict[str, str]:
        """open_clip_torch and the libraries its towers come from."""
        return package_versions("open_clip_torch", "torch", "timm", "transformers")


def parse_open_clip_spec(body: str, pretrained: str | None) -> tuple[str, str | None]:
    """Split what follows ``open_clip:`` into (architecture, pretrained).

    ``"ViT-B-32/laion2b_s34b_b79k"`` -> ``("ViT-B-32", "laion2b_s34b_b79k")``; ``"ViT-B-32"``
    with ``pretrained`` -> ``("ViT-B-32", pretrained)``. open_clip schemas (``hf-hub:``,
    ``local-dir:``) are kept whole.
    """
    body = body.strip()
    if body.startswith(_SCHEMAS):
        if pretrained is not None:
            raise ConfigError(
                f"'open_clip:{body}' loads its weights from the schema source; "
                f"drop pretrained={pretrained!r}"
            )
        return body, None
    arch, slash, tag = body.partition("/")
    if slash:
        if not tag.strip():
            raise ConfigError(
                f"model spec 'open_clip:{body}' ends in '/': give a pretrained tag "
                f"after it (open_clip:ARCH/TAG) or drop the '/'"
            )
        if pretrained is not None and pretrained != tag:
            raise ConfigError(
                f"model spec 'open_clip:{body}' names the tag '{tag}' and "
                f"pretrained={pretrained!r} names another: give only one"
            )
        pretrained = tag
    return arch.strip(), pretrained


def load_open_clip(
    body: str,
    pretrained: str | None = None,
    device: torch.device | str = "cpu",
    model_config: str | None = None,
) -> OpenClipAdapter:
    """``open_clip:``-spec (without the prefix) -> OpenClipAdapter in eval mode on ``device``.

    ``body`` is ``ARCH``, ``ARCH/TAG``, ``hf-hub:ORG/REPO`` or ``local-dir:DIR``. ``pretrained``
    is a tag of ``ARCH`` (downloaded by open_clip and cached: needs network access once) or a
    local weights file (no network). ``model_config``: an open_clip model config JSON that
    defines ``ARCH`` (:func:`register_model_config`). Weights are loaded in float32 on the CPU,
    then moved.
    """
    arch, pretrained = parse_open_clip_spec(body, pretrained)
    if model_config is not None:
        if arch.startswith(_SCHEMAS):
            raise ConfigError(f"'open_clip:{arch}' brings its own config: drop --model-config")
        register_model_config(arch, model_config)
    if arch.startswith(_SCHEMAS):
        name, source = f"open_clip:{arch}", None
        _check_schema_source(arch)
    else:
        _check_arch(arch)
        source = _resolve_weights(arch, pretrained)
        name = f"open_clip:{arch}/{pretrained}"
    try:
        model, train_transform, eval_transform = open_clip.create_model_and_transforms(
            arch, pretrained=source, device="cpu", precision="fp32"
        )
    except (RuntimeError, OSError, ValueError) as error:
        raise _load_error(arch, pretrained, source, error) from error
    tokenizer = open_clip.get_tokenizer(arch)
    embed_dim = _embed_dim(arch, model, tokenizer)
    adapter = OpenClipAdapter(
        model, tokenizer, train_transform, eval_transform, name, embed_dim, pretrained
    )
    return adapter.to(torch.device(device)).eval()


def register_model_config(arch: str, path: str | Path) -> None:
    """Make the open_clip model config JSON at ``path`` known to open_clip as ``arch`` (its own
    :func:`open_clip.add_model_config` registers a file under the file's name)."""
    path = Path(path).expanduser()
    try:
        config = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(f"--model-config '{path}' cannot be read as JSON ({error})") from None
    needed = ("embed_dim", "vision_cfg", "text_cfg")
    if not isinstance(config, dict) or not all(key in config for key in needed):
        raise ConfigError(
            f"--model-config '{path}' is not an open_clip model config: it needs "
            f"{', '.join(needed)} (the format of open_clip's model_configs/*.json)"
        )
    if path.stem == arch:
        open_clip.add_model_config(path)
        return
    with tempfile.TemporaryDirectory() as folder:  # read at once: the copy may go afterwards
        copy = Path(folder) / f"{arch}.json"
        copy.write_text(json.dumps(config), "utf-8")
        open_clip.add_model_config(copy)


def _check_arch(arch: str) -> None:
    known = open_clip.list_models()
    if arch in known:
        return
    lowered = {name.lower(): name for name in known}
    close = difflib.get_close_matches(arch.lower(), list(lowered), n=5, cutoff=0.6)
    close = [lowered[c] for c in close] or [n for n in known if arch.lower() in n.lower()][:5]
    hint = f"; close names: {', '.join(close)}" if close else ""
    raise ConfigError(
        f"model spec 'open_clip:{arch}': open_clip {open_clip.__version__} has no "
        f"architecture '{arch}'{hint}. open_clip.list_models() lists all "
        f"{len(known)}; for an architecture of your own pass its config JSON "
        f"with --model-config FILE (mclip.load_model(..., model_config=FILE))"
    )


def _check_schema_source(arch: str) -> None:
    if arch.startswith("local-dir:"):
        directory = Path(arch[len("local-dir:") :]).expanduser()
        if not (directory / "open_clip_config.json").is_file():
            raise ConfigError(
                f"model spec 'open_clip:{arch}': '{directory}' is not a directory "
                f"holding open_clip_config.json and weights"
            )


def _resolve_weights(arch: str, pretrained: str | None) -> str:
    """A pretrained tag (returned as given) or the path of an existing local weights file."""
    tags = open_clip.list_pretrained_tags_by_model(arch)
    tag_hint = (
        f"published tags of {arch}: {', '.join(tags)}"
        if tags
        else f"open_clip publishes no tag for {arch}"
    )
    if pretrained is None or not str(pretrained).strip():
        raise ConfigError(
            f"model spec 'open_clip:{arch}' needs weights: pass pretrained=TAG "
            f"({tag_hint}) or pretrained=FILE (a local .pt / .safetensors file), "
            f"or write 'open_clip:{arch}/TAG'"
        )
    pretrained = str(pretrained)
    if open_clip.is_pretrained_cfg(arch, pretrained):
        return pretrained
    path = Path(pretrained).expanduser()
    if path.is_file():
        return str(path)
    looks_like_file = path.suffix.lower() in _WEIGHT_SUFFIXES or len(path.parts) > 1
    if looks_like_file:
        raise ConfigError(
            f"open_clip weights file '{pretrained}' does not exist; give an "
            f"existing .pt / .safetensors file or a tag ({tag_hint})"
        )
    raise ConfigError(
        f"pretrained={pretrained!r} is neither a tag of open_clip:{arch} nor an "
        f"existing file; {tag_hint}"
    )


def _load_error(
    arch: str, pretrained: str | None, source: str | None, error: Exception
) -> ConfigError:
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if source is not None and Path(source).is_file():
        return ConfigError(
            f"weights file '{source}' does not load into open_clip {arch} "
            f"({first}); give a state dict saved from that architecture"
        )
    if source is not None:
        return ConfigError(
            f"could not get the '{pretrained}' weights of open_clip {arch} "
            f"({first}); a tag is downloaded on first use, which needs network "
            f"access: offline, pass pretrained=a local .pt / .safetensors file"
        )
    return ConfigError(f"could not load 'open_clip:{arch}' ({first})")


def _embed_dim(arch: str, model: nn.Module, tokenizer: Callable) -> int:
    """The shared embedding size: from the architecture config, else from one text forward."""
    try:
        config = open_clip.get_model_config(arch)
    except Exception:  # schema sources may need the hub for their config: measure instead
        config = None
    if config and "embed_dim" in config:
        return int(config["embed_dim"])
    device = next(model.parameters()).device
    clip: Any = model
    with torch.no_grad():
        return int(clip.encode_text(tokenizer([""]).to(device)).shape[-1])
