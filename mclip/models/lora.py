"""LoRA language adapters on a DualEncoder's text tower (peft): add, switch, save, load, remove.

A language adapter is a low-rank update (LoRA, arXiv:2106.09685) of the text encoder's attention
projections, trained for one language (:mod:`mclip.train.language_adapters`) while every weight
of the model stays frozen. It is kept beside the checkpoint it was trained on:

    CHECKPOINT/adapters/<lang>/adapter_config.json       peft's save_pretrained files
    CHECKPOINT/adapters/<lang>/adapter_model.safetensors
    CHECKPOINT/adapters/<lang>/mclip_adapter.json        language, digest of the base weights,
                                                         LoRA settings, data and steps

With adapters attached, ``model.text.encoder`` is a ``peft.PeftModel`` holding one named adapter
per language; the base weights are never changed (LoRA is not merged). The tower encodes as the
base model unless a language is switched on (:func:`use_language`, :func:`text_language`); a
language without an adapter is encoded by the base weights alone, bit for bit the same as with no
adapter attached, and :func:`remove_language_adapters` gives back the base encoder itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import sys
import uuid
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from torch import nn

from mclip.config import ConfigError

ADAPTERS_DIR = "adapters"
INFO_FILE = "mclip_adapter.json"
PEFT_CONFIG_FILE = "adapter_config.json"


@dataclass
class LoraSettings:
    """LoRA hyper-parameters: ``rank`` r, ``alpha`` (the update is scaled by alpha / r),
    ``dropout`` on the adapter's input (training only), and ``targets``: names (or name
    suffixes) of the encoder's Linear layers to adapt; None takes peft's default for the
    architecture (``query``, ``value`` for BERT / XLM-R, ``q``, ``v`` for T5)."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    targets: list[str] | None = None

    def check(self) -> None:
        """ConfigError naming the flag when a value is out of range."""
        if self.rank < 1:
            raise ConfigError(f"--rank {self.rank}: the LoRA rank must be >= 1 (e.g. 8)")
        if self.alpha <= 0:
            raise ConfigError(f"--alpha {self.alpha}: LoRA alpha must be > 0 (e.g. 2 x rank)")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"--lora-dropout {self.dropout}: give a probability in [0, 1)")
        if self.targets is not None and not self.targets:
            raise ConfigError(
                "--targets is empty: name Linear layers of the text encoder "
                "(e.g. query,value) or leave it out for peft's default"
            )


def adapters_dir(model_dir: str | Path) -> Path:
    """Where a model directory keeps its language adapters: ``MODEL_DIR/adapters``."""
    return Path(model_dir) / ADAPTERS_DIR


def weights_digest(model_dir: str | Path) -> str:
    """sha256 (hex) of a model directory's ``model.safetensors``: what an adapter was trained on."""
    from mclip.models.dual import WEIGHTS_FILE

    digest = hashlib.sha256()
    with open(Path(model_dir) / WEIGHTS_FILE, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def _peft_model(model: nn.Module):
    """The text encoder as a PeftModel, or None when no adapter is attached."""
    if "peft" not in sys.modules:  # nothing was attached: peft is not even imported
        return None
    from peft import PeftModel

    text: Any = model.text  # a TextTower; its encoder is a transformers (or peft) model
    encoder = text.encoder
    return encoder if isinstance(encoder, PeftModel) else None


def attached_languages(model: nn.Module) -> list[str]:
    """Languages whose adapter is attached to ``model`` (a DualEncoder), sorted."""
    peft_model = _peft_model(model)
    return sorted(peft_model.peft_config) if peft_model is not None else []


def add_adapter(model: nn.Module, language: str, settings: LoraSettings) -> list[nn.Parameter]:
    """Attach a new, untrained adapter for ``language`` to ``model.text.encoder`` and switch it
    on. Returns its parameters (the only ones it marks trainable; LoRA's B starts at zero, so the
    model still encodes as before). A language that already has an adapter is an error."""
    from peft import LoraConfig, get_peft_model

    settings.check()
    if language in attached_languages(model):
        raise ConfigError(
            f"language '{language}' already has an adapter on this model; remove "
            f"it first (remove_language_adapters) to train a new one"
        )
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,  # type: ignore[arg-type]  # peft annotates int; float works
        lora_dropout=settings.dropout,
        bias="none",
        target_modules=list(settings.targets) if settings.targets else None,
    )
    peft_model = _peft_model(model)
    text: Any = model.text
    training = text.encoder.training
    try:
        with _quiet_peft():
            if peft_model is None:
                text.encoder = get_peft_model(text.encoder, config, adapter_name=language)
            else:
                peft_model.add_adapter(language, config)
    except ValueError as error:
        raise ConfigError(
            f"cannot put LoRA on the text encoder ({str(error).splitlines()[0]}); "
            f"give --targets with names of its Linear layers, e.g. "
            f"{', '.join(linear_names(model)[:6])}"
        ) from None
    text.encoder.train(training)  # new dropout modules follow the tower's mode
    use_language(model, language)
    parameters = [
        p
        for name, p in text.encoder.named_parameters()
        if f".{language}." in name and "lora_" in name
    ]
    for parameter in parameters:
        parameter.requires_grad_(True)
    return parameters


@contextlib.contextmanager
def _quiet_peft() -> Iterator[None]:
    """Context silencing the deprecation notices transformers gives peft's calls (the library
    never prints)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def adapter_targets(model: nn.Module, language: str) -> list[str]:
    """The Linear layer names ``language``'s adapter is on (as peft resolved them), sorted."""
    peft_model = _peft_model(model)
    if peft_model is None or language not in peft_model.peft_config:
        return []
    return sorted(peft_model.peft_config[language].target_modules or [])


def linear_names(model: nn.Module) -> list[str]:
    """Distinct last name parts of the text encoder's Linear layers (candidate LoRA targets)."""
    text: Any = model.text
    names = (
        name.rsplit(".", 1)[-1]
        for name, module in text.encoder.named_modules()
        if isinstance(module, nn.Linear)
    )
    return list(dict.fromkeys(names))


def use_language(model: nn.Module, language: str | None) -> None:
    """Encode the texts that follow as ``language``: its adapter on if attached, else (and for
    None) the base model with every adapter off. Adapter weights stay frozen."""
    peft_model = _peft_model(model)
    if peft_model is None:
        return
    if language is not None and language in peft_model.peft_config:
        peft_model.set_adapter(language)
        peft_model.base_model.enable_adapter_layers()
    else:
        peft_model.base_model.disable_adapter_layers()
    for name, parameter in peft_model.named_parameters():  # peft marks the active one trainable
        if "lora_" in name:
            parameter.requires_grad_(False)


def active_language(model: nn.Module) -> str | None:
    """The language whose adapter is switched on, or None (base model)."""
    peft_model = _peft_model(model)
    if peft_model is None:
        return None
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in peft_model.modules():
        if isinstance(module, BaseTunerLayer):
            return None if module.disable_adapters else module.active_adapters[0]
    return None


@contextlib.contextmanager
def text_language(model: nn.Module, language: str | None) -> Iterator[None]:
    """Context: texts encoded inside are in ``language`` (see :func:`use_language`); the state
    before is restored on exit."""
    before = active_language(model)
    use_language(model, language)
    try:
        yield
    finally:
        use_language(model, before)


def remove_language_adapters(model: nn.Module) -> None:
    """Detach every adapter: ``model.text.encoder`` is the base encoder again (its own modules,
    weights untouched)."""
    peft_model = _peft_model(model)
    if peft_model is not None:
        text: Any = model.text
        text.encoder = peft_model.unload()


def save_adapter(
    model: nn.Module, language: str, directory: str | Path, info: dict, overwrite: bool = False
) -> Path:
    """Write ``language``'s adapter to ``directory`` (peft ``save_pretrained`` files and
    :data:`INFO_FILE` holding ``info`` and ``language``), atomically: a temporary folder beside
    it, then a rename. An existing ``directory`` is refused unless ``overwrite``."""
    peft_model = _peft_model(model)
    if peft_model is None or language not in peft_model.peft_config:
        raise ConfigError(f"the model has no adapter for '{language}' to save")
    directory = Path(directory)
    if directory.exists() and not overwrite:
        raise ConfigError(
            f"adapter directory '{directory}' already exists; pass --overwrite to "
            f"replace it or --out to write elsewhere"
        )
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f".tmp-{directory.name}-{uuid.uuid4().hex[:8]}"
    try:
        # peft writes a non-default adapter into a sub-folder named after it
        peft_model.save_pretrained(str(tmp), selected_adapters=[language])
        written = tmp / language
        (written / INFO_FILE).write_text(
            json.dumps({"language": language, **info}, indent=1, ensure_ascii=False), "utf-8"
        )
        if directory.exists():
            shutil.rmtree(directory)
        written.rename(directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def read_adapter_info(directory: str | Path) -> dict:
    """The :data:`INFO_FILE` of an adapter directory ({} when it has none)."""
    path = Path(directory) / INFO_FILE
    return json.loads(path.read_text("utf-8")) if path.is_file() else {}


def attach_adapter(model: nn.Module, language: str, directory: str | Path) -> None:
    """Attach the saved adapter in ``directory`` as ``language`` (frozen, switched off)."""
    from peft import PeftModel

    directory = Path(directory)
    if not (directory / PEFT_CONFIG_FILE).is_file():
        raise ConfigError(
            f"'{directory}' is not a language adapter ({PEFT_CONFIG_FILE} is "
            f"missing); write one with 'mclip adapt'"
        )
    if language in attached_languages(model):
        raise ConfigError(f"language '{language}' already has an adapter on this model")
    text: Any = model.text
    device = next(text.encoder.parameters()).device
    training = text.encoder.training
    peft_model = _peft_model(model)
    with _quiet_peft():
        if peft_model is None:
            text.encoder = PeftModel.from_pretrained(
                text.encoder, str(directory), adapter_name=language, is_trainable=False
            )
        else:
            peft_model.load_adapter(str(directory), adapter_name=language, is_trainable=False)
    text.encoder.to(device).train(training)
    use_language(model, None)


def find_adapters(model_dir: str | Path) -> dict[str, Path]:
    """{language: directory} of the adapters saved beside a model (``MODEL_DIR/adapters/*``);
    the language is the one its :data:`INFO_FILE` names, else the folder's name."""
    root = adapters_dir(model_dir)
    if not root.is_dir():
        return {}
    return {
        read_adapter_info(path).get("language", path.name): path
        for path in sorted(root.iterdir())
        if path.is_dir() and (path / PEFT_CONFIG_FILE).is_file()
    }


def load_language_adapters(model: nn.Module, model_dir: str | Path) -> list[str]:
    """Attach every adapter saved beside ``model_dir`` to ``model`` (loaded from that directory);
    returns their languages. An adapter trained on other weights than ``model_dir``'s
    ``model.safetensors`` is an error naming it and the fix."""
    found = find_adapters(model_dir)
    digest = weights_digest(model_dir) if found else ""
    for language, directory in found.items():
        trained_on = read_adapter_info(directory).get("base_weights_sha256")
        if trained_on is not None and trained_on != digest:
            raise ConfigError(
                f"language adapter '{directory}' was trained on other weights than "
                f"'{model_dir}' holds (base digest {trained_on[:12]} != "
                f"{digest[:12]}); train it again with 'mclip adapt', delete it, or "
                f"evaluate with --no-adapters"
            )
        attach_adapter(model, language, directory)
    return list(found)


def settings_dict(settings: LoraSettings) -> dict:
    """``settings`` as JSON-ready values (for :data:`INFO_FILE`)."""
    return asdict(settings)


def lora_parameter_count(parameters: Iterable[torch.Tensor]) -> int:
    """Total number of elements of ``parameters``."""
    return sum(p.numel() for p in parameters)
