"""Run evaluation tasks on any model adapter: each image set embedded once, every language after.

The runner only sees the task objects of :mod:`mclip.eval.datasets` and the adapter interface of
:mod:`mclip.models.adapters.base`, so an mclip checkpoint, an open_clip model and a Hugging Face
CLIP / SigLIP model are evaluated by the same code on the same images.

Work is done once (:mod:`mclip.eval.embeddings`): an image set is embedded once per model and
reused by every language and task that names it, its images decoded ahead in DataLoader workers;
the prompts of many languages go through the text tower together, deduplicated and sorted by
length into full batches, each run at its own length where the tower allows it; with a cache
(:mod:`mclip.eval.cache`) embeddings also survive between runs. Under torchrun the images and
texts are split over the ranks (:mod:`mclip.eval.distributed`). Every per-language metric keeps
its per-sample ranks (:mod:`mclip.eval.samples`) and a bootstrap interval
(:mod:`mclip.eval.bootstrap`).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import torch

from mclip.config import ConfigError
from mclip.eval.bitext_retrieval import run_bitext
from mclip.eval.bootstrap import CONFIDENCE, language_intervals
from mclip.eval.cache import EmbeddingCache
from mclip.eval.concept_frequency import class_counts, frequency_recall, load_concept_counts
from mclip.eval.cost import model_cost
from mclip.eval.cost_report import cost_line
from mclip.eval.datasets import open_class_texts, open_image_set, open_retrieval
from mclip.eval.datasets.babel_imagenet import BabelImageNetTexts
from mclip.eval.distributed import EvalRanks
from mclip.eval.embed_dims import PrefixImages, PrefixTexts, check_dims, task_name
from mclip.eval.embeddings import ImageEmbeddings, TextEmbeddings
from mclip.eval.encoding import check_precision
from mclip.eval.intra_modal import run_image_to_image, run_text_to_text
from mclip.eval.metric_names import shown
from mclip.eval.provenance import tag_languages
from mclip.eval.results import resource_group
from mclip.eval.retrieval import retrieval_ranks
from mclip.eval.samples import SampleRanks
from mclip.eval.topic_matching import run_topic_matching
from mclip.eval.zeroshot import classify_language, fill_template

# prompts of this many distinct texts are encoded together (about 100 MB of fp32 at d = 512)
PROMPT_GROUP = 50_000


def _prompt_groups(texts, languages: list[str], dataset: str | None):
    """Languages in groups whose distinct prompts fit :data:`PROMPT_GROUP`: [({lang: class
    texts}, distinct prompts)]."""
    groups: list[tuple[dict[str, Any], list[str]]] = []
    current: dict[str, Any] = {}
    prompts: dict[str, None] = {}
    for lang in languages:
        class_texts = texts.load(lang, dataset)
        mine = {
            fill_template(t, name): None
            for name in class_texts.names
            if name
            for t in class_texts.templates
        }
        if current and len(prompts) + len(mine) > PROMPT_GROUP:
            groups.append((current, list(prompts)))
            current, prompts = {}, {}
        current[lang] = class_texts
        prompts.update(mine)
    if current:
        groups.append((current, list(prompts)))
    return groups


def run_zeroshot(task, images: ImageEmbeddings, text: TextEmbeddings, progress) -> dict:
    """Zero-shot classification per language on the task's own class subset per language."""
    image_set = open_image_set(task.images)
    image_emb, keys, labels, skipped = images.get(image_set)
    texts = open_class_texts(task.class_texts, task.prompts or None)
    groups = (
        isinstance(texts, BabelImageNetTexts)
        if task.resource_groups is None
        else task.resource_groups
    )  # auto: Babel-ImageNet's groups for its labels files
    label_tensor = torch.tensor(labels, dtype=torch.long)
    if (label_tensor < 0).any():
        raise ConfigError(f"task '{task.name}': images without a label in '{task.images}'")
    languages = task.select_languages(texts.languages(), texts.description)
    concepts = load_concept_counts(task.concept_counts) if task.concept_counts else None
    per_language, views = {}, {}
    for class_texts_of, prompts in _prompt_groups(texts, languages, task.dataset or None):
        prompt_emb = text.encode(prompts)
        row = {prompt: i for i, prompt in enumerate(prompts)}

        def encode(batch: list[str], prompt_emb=prompt_emb, row=row) -> torch.Tensor:
            return prompt_emb[torch.tensor([row[t] for t in batch], dtype=torch.long)]

        for lang, class_texts in class_texts_of.items():
            if int(label_tensor.max()) >= len(class_texts.names):
                raise ConfigError(
                    f"task '{task.name}': labels go up to {int(label_tensor.max())}"
                    f" but {lang} has {len(class_texts.names)} classes in "
                    f"{class_texts.source or texts.description}"
                )
            own = (
                encode
                if lang not in text.adapter_languages
                # its adapter on
                else (lambda batch, lang=lang: text.encode(batch, lang))
            )
            scores = classify_language(
                image_emb,
                label_tensor,
                own,
                class_texts.names,
                class_texts.templates,
                task.top_k,
                getattr(task, "template_scores", True),
            )
            metrics = scores.metrics
            if groups:
                metrics["resource_group"] = resource_group(metrics["n_classes"])
            kept_keys = [k for k, kept in zip(keys, scores.kept_images.tolist()) if kept]
            views[lang] = {
                "images": SampleRanks.build(
                    (f"{k}\t{y}" for k, y in zip(kept_keys, scores.labels.tolist())),
                    scores.ranks,
                    scores.labels,
                )
            }
            counts = (
                None
                if concepts is None
                else class_counts(
                    concepts, lang, class_texts.names, f"task '{task.name}'", task.concept_counts
                )
            )
            if counts is not None and len(scores.ranks):
                binned, bin_views = frequency_recall(
                    scores.ranks,
                    scores.labels,
                    [n for n, name in zip(counts, class_texts.names) if name],
                    [f"{k}\t{y}" for k, y in zip(kept_keys, scores.labels.tolist())],
                )
                metrics.update(binned)
                views[lang].update(bin_views)
            per_language[lang] = metrics
            progress(
                f"{task.name} [{lang}] classes={metrics['n_classes']} "
                f"acc@1={shown(metrics.get('acc@1'))}"
                + (
                    f" (templates alone {shown(metrics['acc@1_template_min'])}-"
                    f"{shown(metrics['acc@1_template_max'])}"
                    f"{': prompt-sensitive' if metrics['prompt_sensitive'] else ''})"
                    if "acc@1_template_min" in metrics
                    else ""
                )
            )
    tag_languages(per_language, task, texts)
    return {
        "kind": task.kind,
        "languages": per_language,
        "views": views,
        "skipped": skipped,
        "data": {"images": image_set.fingerprint()},
    }


def retrieval_views(
    ranks: tuple[torch.Tensor, torch.Tensor], image_keys: list[str], pairs: list[tuple[str, int]]
) -> dict[str, SampleRanks]:
    """Per-sample views of one retrieval language: "texts" (text->image rank per caption) and
    "images" (image->text rank per image that has a caption)."""
    t2i, i2t = ranks
    captioned = (i2t >= 0).nonzero().flatten().tolist()
    return {
        "texts": SampleRanks.build((f"{image_keys[i]}\t{t}" for t, i in pairs), t2i),
        "images": SampleRanks.build((image_keys[i] for i in captioned), i2t[captioned]),
    }


def run_retrieval(task, images: ImageEmbeddings, text: TextEmbeddings, progress) -> dict:
    """Image<->text retrieval per language, every caption of every image kept."""
    dataset = open_retrieval(task.captions, task.images or None, split=task.split or None)
    image_emb, keys, _, skipped = images.get(dataset)
    index = {key: i for i, key in enumerate(keys)}
    per_language, views = {}, {}
    for lang in task.select_languages(dataset.languages(), dataset.description):
        captions = dataset.captions(lang)
        pairs = [
            (t, index[key]) for t, key in zip(captions.texts, captions.image_keys) if key in index
        ]
        if not pairs:
            raise ConfigError(
                f"task '{task.name}': no caption in '{lang}' belongs to a usable "
                f"image of {dataset.description}"
            )
        text_emb = text.encode([p[0] for p in pairs], lang)
        ranks = retrieval_ranks(image_emb, text_emb, torch.tensor([p[1] for p in pairs]))
        views[lang] = retrieval_views(ranks, keys, pairs)
        metrics = {}
        for k in task.recall_at:
            metrics[f"text_to_image_R@{k}"] = float((views[lang]["texts"].ranks < k).mean())
            metrics[f"image_to_text_R@{k}"] = float((views[lang]["images"].ranks < k).mean())
        metrics.update(
            n_images=len(keys),
            n_texts=len(pairs),
            captions_dropped=len(captions.texts) - len(pairs) + sum(captions.skipped.values()),
        )
        per_language[lang] = metrics
        progress(f"{task.name} [{lang}] text->image R@1={metrics.get('text_to_image_R@1', 0):.4f}")
    tag_languages(per_language, task, dataset)
    return {
        "kind": task.kind,
        "languages": per_language,
        "views": views,
        "skipped": skipped,
        "data": {"images": dataset.fingerprint()},
    }


RUNNERS: dict[str, Callable] = {
    "zeroshot_classification": run_zeroshot,
    "retrieval": run_retrieval,
    "topic_matching": run_topic_matching,
    "bitext_retrieval": run_bitext,
    "image_to_image": run_image_to_image,
    "text_to_text": run_text_to_text,
}


def _attach_samples(name: str, result: dict, bootstrap: int, seed: int) -> None:
    """Move the task's per-sample views into its languages, with their intervals."""
    for lang, views in result.pop("views", {}).items():
        metrics = result["languages"][lang]
        if bootstrap > 0:
            metrics["ci"] = language_intervals(metrics, views, bootstrap, seed, name, lang)
        metrics["samples"] = {view: ranks.to_json() for view, ranks in views.items()}
    result["bootstrap"] = {"resamples": bootstrap, "seed": seed, "confidence": CONFIDENCE}


def run_tasks(
    model,
    tasks: list,
    device: str | torch.device = "cpu",
    batch_size: int = 256,
    limit: int | None = None,
    progress: Callable[[str], None] | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
    cache_dir: str | None = None,
    ranks: EvalRanks | None = None,
    embed_dims: list[int | None] | None = None,
    workers: int = 0,
    precision: str = "fp32",
    cost: dict | None = None,
) -> dict:
    """Run ``tasks`` on ``model`` (an adapter); returns {task name: {kind, languages, skipped,
    data, bootstrap, seconds}}. ``embed_dims`` (e.g. [32, 64, None]; None: the full size) scores
    every task also on those prefixes of the same embeddings (:mod:`mclip.eval.embed_dims`).

    Per-language metrics are fractions in [0, 1], each with a ``ci`` [low, high] percentile
    bootstrap interval over ``bootstrap`` resamples (0: none) and its per-sample ranks under
    ``samples``. ``limit`` keeps the first N images of every image set; ``cache_dir`` keeps
    embeddings on disk between runs; ``ranks`` splits the encoding over torch.distributed ranks
    (every rank returns the same results); ``workers`` processes decode images ahead of the
    forward pass; ``precision`` ('fp32' or 'bf16': autocast for the towers,
    :mod:`mclip.eval.encoding`). ``progress`` receives one line per image set, text
    batch group and language. A ``cost`` dict is filled with the model's cost
    (:func:`mclip.eval.cost.model_cost`: parameters, FLOPs, embedding size, measured throughput).
    """
    progress = progress or (lambda message: None)
    check_precision(precision)
    ranks = ranks or EvalRanks()
    device = torch.device(device)
    if hasattr(model, "to"):  # encoders get their inputs on ``device``: the weights go there too
        model.to(device)
    if hasattr(model, "eval"):
        model.eval()
    cache = None
    if cache_dir is not None and ranks.is_main:
        cache = EmbeddingCache(cache_dir, model, precision)
    has_cache = ranks.broadcast(cache is not None)
    images = ImageEmbeddings(
        model, device, batch_size, limit, progress, cache, ranks, workers, precision
    )
    dims = check_dims(embed_dims, int(model.embed_dim)) if embed_dims else [None]
    text = TextEmbeddings(
        model, batch_size, cache, ranks, progress, remember=len(dims) > 1, precision=precision
    )
    images.uses_cache = text.uses_cache = has_cache  # other ranks follow rank 0's cache reads
    if text.adapter_languages:
        progress(
            f"language adapters: {', '.join(text.adapter_languages)} (used for texts in "
            f"that language only)"
        )
    results = {}
    for task in tasks:
        if task.kind not in RUNNERS:
            raise ConfigError(
                f"task '{task.name}': unknown kind '{task.kind}'; known: {', '.join(RUNNERS)}"
            )
        for dim in dims:
            start, name = time.perf_counter(), task_name(task.name, dim)
            text.adapted = set()
            said = progress if dim is None else (lambda m, d=dim: progress(f"[{d}d] {m}"))
            result = RUNNERS[task.kind](
                task, PrefixImages(images, dim), PrefixTexts(text, dim), said
            )
            if text.adapter_languages:  # which of this task's languages had their adapter on
                result["language_adapters"] = sorted(text.adapted)
            if embed_dims:
                result.update(
                    base_task=task.name,
                    embed_dim=dim or int(model.embed_dim),
                    full_embed_dim=int(model.embed_dim),
                )
            result["precision"] = precision  # bf16 towers give other (close) numbers
            _attach_samples(name, result, bootstrap, seed)
            result["seconds"] = time.perf_counter() - start
            results[name] = result
    progress(
        f"texts: {text.encoded} encoded, {text.from_cache} read from the cache"
        + (f"; cache {cache.stats}" if cache is not None else "")
    )
    if cost is not None:
        cost.update(model_cost(model, device, images, text, precision, batch_size))
        progress(f"cost: {cost_line(cost)}")
    return results
