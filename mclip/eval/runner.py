"""Run evaluation tasks on any model adapter: each image set embedded once, every language after.

The runner only sees the task objects of :mod:`mclip.eval.datasets` and the adapter interface of
:mod:`mclip.models.adapters.base`, so an mclip checkpoint, an open_clip model and a Hugging Face
CLIP / SigLIP model are evaluated by the same code on the same images. Images are embedded once
per (image set, model) and reused by every language and every task that names the same set.
"""

from __future__ import annotations

import time
from typing import Callable

import torch

from mclip.config import ConfigError
from mclip.data.shards import SkipCounter
from mclip.eval.datasets import ImageSet, open_class_texts, open_image_set, open_retrieval
from mclip.eval.report import resource_group
from mclip.eval.retrieval import retrieval_metrics
from mclip.eval.zeroshot import evaluate_language

class ImageEmbeddings:
    """Embeds image sets with one model, once each: ``get(image_set)`` -> (emb [N, d], keys,
    labels, skipped). Unreadable images are skipped and counted; ``limit`` keeps the first N."""

    def __init__(self, model, device: torch.device, batch_size: int = 256,
                 limit: int | None = None, progress: Callable[[str], None] = lambda m: None):
        self.model, self.device, self.batch_size, self.limit = model, device, batch_size, limit
        self.transform = model.image_transform(train=False)
        self.progress = progress
        self._done: dict[str, tuple] = {}

    def get(self, image_set: ImageSet) -> tuple[torch.Tensor, list[str], list, dict]:
        key = f"{image_set.description}|{image_set.fingerprint()}"
        if key not in self._done:
            self._done[key] = self._embed(image_set)
        return self._done[key]

    @torch.no_grad()
    def _embed(self, image_set: ImageSet):
        skipped = SkipCounter()
        chunks, keys, labels, pending = [], [], [], []
        start = time.perf_counter()

        def flush():
            images = torch.stack([p[0] for p in pending]).to(self.device)
            chunks.append(self.model.encode_image(images).float().cpu())
            keys.extend(p[1] for p in pending)
            labels.extend(p[2] for p in pending)
            pending.clear()

        for item in image_set.items(skipped):
            if self.limit is not None and len(keys) + len(pending) >= self.limit:
                break
            try:
                tensor = self.transform(item.open())
            except Exception:  # PIL raises many types for missing / corrupt files
                skipped["unreadable_image"] += 1
                continue
            pending.append((tensor, item.key, item.label))
            if len(pending) == self.batch_size:
                flush()
        if pending:
            flush()
        if not chunks:
            raise ConfigError(f"no usable image in {image_set.description} (skipped: "
                              f"{dict(skipped)}); check the images path")
        self.progress(f"embedded {len(keys)} images of {image_set.description} in "
                      f"{time.perf_counter() - start:.1f} s")
        return torch.cat(chunks), keys, labels, dict(skipped)


def _text_encoder(model, batch_size: int) -> Callable[[list[str]], torch.Tensor]:
    @torch.no_grad()
    def encode(texts: list[str]) -> torch.Tensor:
        return torch.cat([model.encode_text(texts[i:i + batch_size]).float().cpu()
                          for i in range(0, len(texts), batch_size)])
    return encode


def _languages(task, available: list[str], where: str) -> list[str]:
    if task.languages in ("all", ["all"]):
        return list(available)
    missing = [lang for lang in task.languages if lang not in available]
    if missing:
        raise ConfigError(f"task '{task.name}': language(s) {', '.join(missing)} not in {where}; "
                          f"it has: {', '.join(available)}")
    return list(task.languages)


def run_zeroshot(task, images: ImageEmbeddings, encode_text, progress) -> dict:
    """Zero-shot classification per language on the task's own class subset per language."""
    image_emb, _, labels, skipped = images.get(open_image_set(task.images))
    texts = open_class_texts(task.class_texts, task.prompts or None)
    label_tensor = torch.tensor(labels, dtype=torch.long)
    if (label_tensor < 0).any():
        raise ConfigError(f"task '{task.name}': images without a label in '{task.images}'")
    per_language = {}
    for lang in _languages(task, texts.languages(), texts.description):
        class_texts = texts.load(lang, task.dataset or None)
        if int(label_tensor.max()) >= len(class_texts.names):
            raise ConfigError(f"task '{task.name}': labels go up to {int(label_tensor.max())} but "
                              f"{lang} has {len(class_texts.names)} classes in "
                              f"{class_texts.source or texts.description}")
        metrics = evaluate_language(image_emb, label_tensor, encode_text, class_texts.names,
                                    class_texts.templates, task.top_k)
        if task.resource_groups:
            metrics["resource_group"] = resource_group(metrics["n_classes"])
        per_language[lang] = metrics
        progress(f"{task.name} [{lang}] classes={metrics['n_classes']} "
                 f"acc@1={metrics.get('acc@1', float('nan')):.4f}")
    return {"kind": task.kind, "languages": per_language, "skipped": skipped}


def run_retrieval(task, images: ImageEmbeddings, encode_text, progress) -> dict:
    """Image<->text retrieval per language, every caption of every image kept."""
    dataset = open_retrieval(task.captions, task.images or None, split=task.split or None)
    image_emb, keys, _, skipped = images.get(dataset)
    index = {key: i for i, key in enumerate(keys)}
    per_language = {}
    for lang in _languages(task, dataset.languages(), dataset.description):
        captions = dataset.captions(lang)
        pairs = [(text, index[key]) for text, key in zip(captions.texts, captions.image_keys)
                 if key in index]
        if not pairs:
            raise ConfigError(f"task '{task.name}': no caption in '{lang}' belongs to a usable "
                              f"image of {dataset.description}")
        text_emb = encode_text([p[0] for p in pairs])
        metrics = retrieval_metrics(image_emb, text_emb, torch.tensor([p[1] for p in pairs]),
                                    tuple(task.recall_at))
        metrics["captions_dropped"] = len(captions.texts) - len(pairs) + sum(
            captions.skipped.values())
        per_language[lang] = metrics
        progress(f"{task.name} [{lang}] text->image R@1={metrics['text_to_image_R@1']:.4f}")
    return {"kind": task.kind, "languages": per_language, "skipped": skipped}


def run_tasks(model, tasks: list, device: str | torch.device = "cpu", batch_size: int = 256,
              limit: int | None = None, progress: Callable[[str], None] | None = None) -> dict:
    """Run ``tasks`` on ``model`` (an adapter); returns {task name: {kind, languages, skipped,
    seconds}}. Per-language metrics are fractions in [0, 1]; ``limit`` keeps the first N images
    of every image set; ``progress`` receives one line per image set and per language."""
    progress = progress or (lambda message: None)
    device = torch.device(device)
    if hasattr(model, "to"):  # encoders get their inputs on ``device``: the weights go there too
        model.to(device)
    if hasattr(model, "eval"):
        model.eval()
    images = ImageEmbeddings(model, device, batch_size, limit, progress)
    encode_text = _text_encoder(model, batch_size)
    results = {}
    for task in tasks:
        start = time.perf_counter()
        run = run_zeroshot if task.kind == "zeroshot_classification" else run_retrieval
        results[task.name] = run(task, images, encode_text, progress)
        results[task.name]["seconds"] = time.perf_counter() - start
    return results
