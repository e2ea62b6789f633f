"""Training a LoRA language adapter: one language's text, every weight of the model frozen.

``mclip adapt --model M --language sw --data ...`` calls :func:`adapt_language`: it loads the
model (a run directory means its newest checkpoint), draws at most ``max_captions`` items of the
language (:mod:`mclip.data.language_subset`), trains a LoRA adapter on the text encoder
(:mod:`mclip.models.lora`) and saves it beside the checkpoint, in ``CHECKPOINT/adapters/<lang>/``,
where ``mclip eval`` finds it and uses it for that language's texts only.

Objectives (the image tower, the projection heads, the base text encoder and the logit scale are
all frozen; only the adapter's A and B matrices are trained):

- **captions**: symmetric InfoNCE between the frozen image embeddings (computed once, in eval
  mode) and the adapted text embeddings of their captions, with the model's own temperature
  ``exp(logit_scale)``; positives by image (two captions of one image in a batch are both
  positives of it), exact tiled loss (:func:`mclip.losses.tiled.tiled_infonce`).
- **parallel text** (teacher learning): the frozen base text tower embeds the English source
  once (the teacher); the adapted tower embeds the translation (the student). ``mse``: squared
  distance between the normalised embeddings, sum over d, mean over the batch (= 2 - 2 cos);
  ``infonce``: the contrastive loss above with the teacher embeddings in place of the images.

Batches are drawn without replacement from a seeded permutation of the subset (a fresh one per
pass); AdamW, linear warmup then cosine decay (:func:`mclip.train.schedule.warmup_cosine`),
gradient norm clipped to 1.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from mclip.config import ConfigError
from mclip.data.language_codes import validate_languages
from mclip.data.language_subset import CaptionSubset, ParallelSubset, open_language_data
from mclip.losses.tiled import tiled_infonce
from mclip.models.dual import DualEncoder
from mclip.models.lora import (
    LoraSettings,
    adapter_targets,
    adapters_dir,
    add_adapter,
    lora_parameter_count,
    save_adapter,
    settings_dict,
    use_language,
    weights_digest,
)
from mclip.train.schedule import warmup_cosine

PARALLEL_LOSSES = ("mse", "infonce")


@dataclass
class AdaptSettings:
    """What :func:`train_language_adapter` does: ``steps`` optimizer steps of ``batch_size``
    captions (or pairs) at learning rate ``lr`` (peak; ``warmup_steps`` of linear warmup, then
    cosine decay to 0), ``seed`` for the LoRA initialisation and the batches, ``parallel_loss``
    for parallel text (``mse`` or ``infonce``), and the LoRA hyper-parameters ``lora``."""

    steps: int = 300
    batch_size: int = 64
    lr: float = 2e-3
    warmup_steps: int = 20
    seed: int = 0
    parallel_loss: str = "mse"
    lora: LoraSettings = field(default_factory=LoraSettings)

    def check(self) -> None:
        """ConfigError naming the flag when a value is out of range."""
        if self.steps < 1:
            raise ConfigError(f"--steps {self.steps}: give at least 1 optimizer step")
        if self.batch_size < 2:
            raise ConfigError(
                f"--batch-size {self.batch_size}: a contrastive batch needs at least 2 items"
            )
        if not self.lr > 0:
            raise ConfigError(f"--lr {self.lr}: the learning rate must be > 0")
        if self.parallel_loss not in PARALLEL_LOSSES:
            raise ConfigError(
                f"--parallel-loss {self.parallel_loss!r}: choose one of "
                f"{', '.join(PARALLEL_LOSSES)}"
            )
        self.lora.check()


def language_code(code: str) -> str:
    """mclip's code for ``--language`` (``swh``, ``sw-KE`` -> ``sw``); ConfigError for a code
    that is no language."""
    try:
        normalised = validate_languages([code], "--language")[0]
    except ConfigError as error:  # its wording is for config keys; this is a flag
        raise ConfigError(str(error).replace("config key '--language': ", "--language ")) from None
    if normalised == "und":
        raise ConfigError(
            f"--language {code!r} names no particular language; give the ISO "
            f"639-1 (sw) or 639-3 (fil) code of the language to adapt"
        )
    return normalised


@torch.no_grad()
def embed_images(
    model: DualEncoder, images: list, device: torch.device, batch_size: int = 256
) -> torch.Tensor:
    """Normalised image embeddings [len(images), d] (float32, on ``device``) of PIL images,
    with the image tower in eval mode (its mode is restored)."""
    transform = model.image_transform(train=False)
    training = model.image.training
    model.image.eval()
    try:
        rows = [
            model.encode_image(
                torch.stack([transform(im) for im in images[i : i + batch_size]]).to(device)
            ).float()
            for i in range(0, len(images), batch_size)
        ]
    finally:
        model.image.train(training)
    return torch.cat(rows)


@torch.no_grad()
def embed_texts(model: DualEncoder, texts: list[str], batch_size: int = 256) -> torch.Tensor:
    """Normalised text embeddings [len(texts), d] (float32) with the text tower in eval mode and
    every adapter off: the base model's (its mode and active adapter are restored by the
    caller's state; called before an adapter is added)."""
    training = model.text.training
    model.text.eval()
    try:
        use_language(model, None)
        rows = [
            model.encode_text(texts[i : i + batch_size]).float()
            for i in range(0, len(texts), batch_size)
        ]
    finally:
        model.text.train(training)
    return torch.cat(rows)


def _batches(n: int, batch_size: int, steps: int, generator: torch.Generator):
    """``steps`` index batches [min(batch_size, n)] drawn without replacement from a permutation
    of range(n), a fresh permutation per pass; a batch never straddles two passes."""
    size = min(batch_size, n)
    order, position = torch.randperm(n, generator=generator), 0
    for _ in range(steps):
        if position + size > n:
            order, position = torch.randperm(n, generator=generator), 0
        yield order[position : position + size]
        position += size


def train_language_adapter(
    model: DualEncoder,
    data: CaptionSubset | ParallelSubset,
    settings: AdaptSettings,
    device: torch.device | str = "cpu",
    progress: Callable[[int, float], None] | None = None,
) -> dict:
    """Add a LoRA adapter for ``data.language`` to ``model``'s text tower (on ``device``) and
    train it on ``data``; every other weight stays frozen and unchanged.

    ``progress(step, loss)`` is called after each optimizer step (1-based). The adapter is left
    attached but switched off (:func:`mclip.models.lora.text_language` turns it on), the model
    in eval mode with its parameters' ``requires_grad`` as before. Returns {"steps", "loss_first",
    "loss_last" (mean of the last 10 steps), "trainable_parameters", "objective", "targets"
    (the adapted Linear layers' names), "seconds"}.
    """
    settings.check()
    device = torch.device(device)
    language = data.language
    torch.manual_seed(settings.seed)  # the adapter's initialisation (peft draws A from torch)
    generator = torch.Generator().manual_seed(settings.seed)
    start = time.perf_counter()
    logit_scale = model.logit_scale.detach()
    if isinstance(data, CaptionSubset):
        targets = embed_images(model, data.images, device)
        texts, image_of = data.captions, torch.tensor(data.image_of, dtype=torch.long)
        objective = "captions-infonce"
    else:
        targets = embed_texts(model, data.sources)
        texts, image_of = data.translations, None
        objective = f"parallel-{settings.parallel_loss}"
    flags = [(p, p.requires_grad) for p in model.parameters()]  # peft renames, never replaces
    parameters: list[torch.nn.Parameter] = []
    losses: list[float] = []
    try:
        model.requires_grad_(False)
        parameters = add_adapter(model, language, settings.lora)
        optimizer = torch.optim.AdamW(parameters, lr=settings.lr, weight_decay=0.0)
        warmup = min(settings.warmup_steps, settings.steps // 2)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: warmup_cosine(s, settings.steps, max(warmup, 1))
        )
        model.eval()
        model.text.train()  # the adapter's (and the tower's own) dropout, as in training
        for step, rows in enumerate(
            _batches(len(texts), settings.batch_size, settings.steps, generator), start=1
        ):
            student = model.encode_text([texts[i] for i in rows.tolist()]).float()
            if image_of is not None:  # the batch's images, each once; texts point at theirs
                images, text_to_image = torch.unique(image_of[rows], return_inverse=True)
                loss = tiled_infonce(
                    targets[images.to(device)], student, logit_scale, text_to_image.to(device)
                )
            elif settings.parallel_loss == "mse":
                loss = (student - targets[rows.to(device)]).pow(2).sum(-1).mean()
            else:
                loss = tiled_infonce(targets[rows.to(device)], student, logit_scale)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            if progress is not None:
                progress(step, losses[-1])
    finally:
        model.eval()
        use_language(model, None)
        for p in parameters:
            p.requires_grad_(False)
        for p, flag in flags:
            p.requires_grad_(flag)
    return {
        "steps": settings.steps,
        "loss_first": losses[0],
        "loss_last": sum(losses[-10:]) / len(losses[-10:]),
        "trainable_parameters": lora_parameter_count(parameters),
        "objective": objective,
        "targets": adapter_targets(model, language),
        "seconds": time.perf_counter() - start,
    }


def adapt_language(
    model_path: str | Path,
    language: str,
    data_spec: str,
    settings: AdaptSettings | None = None,
    max_captions: int = 500,
    out: str | Path | None = None,
    device: str | torch.device = "cpu",
    overwrite: bool = False,
    progress: Callable[[int, float], None] | None = None,
) -> dict:
    """Train and save one language adapter (what ``mclip adapt`` does).

    ``model_path``: an mclip checkpoint or run directory (its newest checkpoint); ``language``:
    a language code (normalised: ``swh`` -> ``sw``); ``data_spec``: caption shards or a parallel
    ``.tsv``; at most ``max_captions`` items are used (a fixed subset given ``settings.seed``).
    The adapter goes to ``out`` (default ``CHECKPOINT/adapters/<lang>``; an existing one only
    with ``overwrite``). Returns the saved ``mclip_adapter.json`` content plus ``"path"``.
    """
    from mclip.models.checkpoints import resolve_model_dir

    settings = settings or AdaptSettings()
    settings.check()
    language = language_code(language)
    if max_captions < 1:
        raise ConfigError(f"--max-captions {max_captions}: give at least 1 (default 500)")
    model_dir = resolve_model_dir(model_path)
    target = Path(out) if out is not None else adapters_dir(model_dir) / language
    if target.exists() and not overwrite:
        raise ConfigError(
            f"adapter directory '{target}' already exists; pass --overwrite to "
            f"replace it or --out to write elsewhere"
        )
    data = open_language_data(data_spec, language, max_captions, settings.seed)
    model, config = DualEncoder.load(model_dir, map_location=device, verify=False)
    stats = train_language_adapter(model, data, settings, device, progress)
    if isinstance(data, ParallelSubset):
        parallel, captions_used, images_used = True, len(data.translations), 0
    else:
        parallel, captions_used, images_used = False, len(data.captions), len(data.images)
    info = {
        "base_model": str(model_dir),
        "base_weights_sha256": weights_digest(model_dir),
        "lora": settings_dict(settings.lora),
        "data": {
            "spec": str(data_spec),
            "kind": "parallel_text" if parallel else "captions",
            "captions_used": captions_used,
            "images_used": images_used,
            "candidates": data.candidates,
            "skipped": data.skipped,
        },
        "training": {
            "steps": settings.steps,
            "batch_size": settings.batch_size,
            "lr": settings.lr,
            "warmup_steps": settings.warmup_steps,
            "seed": settings.seed,
            "max_captions": max_captions,
            **stats,
        },
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    path = save_adapter(model, language, target, info, overwrite=overwrite)
    return {"language": language, **info, "path": str(path)}
