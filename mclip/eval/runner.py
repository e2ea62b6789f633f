"""Run evaluation tasks on any model adapter: each image set embedded once, every language after.

The runner only sees the task objects of :mod:`mclip.eval.datasets` and the adapter interface of
:mod:`mclip.models.adapters.base`, so an mclip checkpoint, an open_clip model and a Hugging Face
CLIP / SigLIP model are evaluated by the same code on the same images.

Work is done once: an image set is embedded once per model and reused by every language and
task that names it; the prompts of many languages go through the text tower together, deduplicated
and sorted by length into full batches; with a cache (:mod:`mclip.eval.cache`) embeddings also
survive between runs. Under torchrun the images and texts are split over the ranks
(:mod:`mclip.eval.distributed`). Every per-language metric keeps its per-sample ranks
(:mod:`mclip.eval.samples`) and a bootstrap interval (:mod:`mclip.eval.bootstrap`).
"""

from __future__ import annotations

import time
from typing import Callable

import torch

from mclip.config import ConfigError
from mclip.data.shards import SkipCounter
from mclip.eval.bootstrap import CONFIDENCE, language_intervals
from mclip.eval.cache import EmbeddingCache, text_hashes, transform_fingerprint
from mclip.eval.datasets import ImageSet, open_class_texts, open_image_set, open_retrieval
from mclip.eval.datasets.babel_imagenet import BabelImageNetTexts
from mclip.eval.distributed import EvalRanks
from mclip.eval.embed_dims import PrefixImages, PrefixTexts, check_dims, task_name
from mclip.eval.report import resource_group
from mclip.eval.retrieval import retrieval_ranks
from mclip.eval.samples import SampleRanks
from mclip.eval.topic_matching import run_topic_matching
from mclip.eval.zeroshot import classify_language, fill_template

# prompts of this many distinct texts are encoded together (about 100 MB of fp32 at d = 512)
PROMPT_GROUP = 50_000


class ImageEmbeddings:
    """Embeds image sets with one model, once each: ``get(image_set)`` -> (emb [N, d] float32,
    keys [N], labels [N], skipped counts). Unreadable images are skipped and counted; ``limit``
    keeps the first N images the set lists (unreadable ones among them are skipped)."""

    def __init__(self, model, device: torch.device, batch_size: int = 256,
                 limit: int | None = None, progress: Callable[[str], None] = lambda m: None,
                 cache: EmbeddingCache | None = None, ranks: EvalRanks | None = None):
        self.model, self.device, self.batch_size, self.limit = model, device, batch_size, limit
        self.transform = model.image_transform(train=False)
        self.progress, self.cache, self.ranks = progress, cache, ranks or EvalRanks()
        self.uses_cache = cache is not None
        self._done: dict[str, tuple] = {}

    def set_key(self, image_set: ImageSet, state: bool = False) -> str:
        """What the embeddings of ``image_set`` depend on besides the model: the set, its files'
        names and sizes, the transform and the limit; ``state`` adds every file's modification
        time and a hash of its ends (the on-disk cache's key: a rewritten file misses)."""
        return (f"{image_set.description}|{image_set.fingerprint(state=state)}|"
                f"{transform_fingerprint(self.transform)}|limit={self.limit}")

    def get(self, image_set: ImageSet) -> tuple[torch.Tensor, list[str], list, dict]:
        """(emb [N, d] float32, keys [N], labels [N], skip counts) of ``image_set``."""
        key = self.set_key(image_set)
        if key not in self._done:
            cached, cache_key = None, None
            if self.uses_cache:  # rank 0 reads the cache and shares what it found
                if self.ranks.is_main:
                    cache_key = self.set_key(image_set, state=True)
                cached = self.ranks.broadcast(self.cache.load_images(cache_key)
                                              if self.ranks.is_main else None)
            if cached is not None:
                self.progress(f"{len(cached[1])} image embeddings of {image_set.description} "
                              f"read from the cache")
            else:
                cached = self._embed(image_set)
                if cache_key is not None:
                    self.cache.save_images(cache_key, *cached, description=image_set.description)
            self._done[key] = cached
        return self._done[key]

    @torch.no_grad()
    def _embed(self, image_set: ImageSet):
        listing, unreadable = SkipCounter(), SkipCounter()
        rows, positions, keys, labels, pending = [], [], {}, {}, []
        start, total = time.perf_counter(), 0

        def flush():
            images = torch.stack([p[0] for p in pending]).to(self.device)
            rows.append(self.model.encode_image(images).float().cpu())
            positions.extend(p[1] for p in pending)
            pending.clear()

        for index, item in enumerate(image_set.items(listing)):
            if self.limit is not None and index >= self.limit:
                break
            total = index + 1
            if not self.ranks.mine(index):
                continue
            try:
                tensor = self.transform(item.open())
            except Exception:  # PIL raises many types for missing / corrupt files
                unreadable["unreadable_image"] += 1
                continue
            pending.append((tensor, index))
            keys[index], labels[index] = item.key, item.label
            if len(pending) == self.batch_size:
                flush()
        if pending:
            flush()
        local = torch.cat(rows) if rows else torch.zeros(0, 0)
        gathered = self.ranks.gather_rows(local, positions, total, width=self.model.embed_dim)
        metadata = self.ranks.gather_objects((keys, labels, dict(unreadable)))
        keys, labels, skipped = {}, {}, dict(listing)
        for part_keys, part_labels, part_skipped in metadata:
            keys.update(part_keys)
            labels.update(part_labels)
            for reason, count in part_skipped.items():
                skipped[reason] = skipped.get(reason, 0) + count
        order = sorted(keys)
        if not order:
            raise ConfigError(f"no usable image in {image_set.description} (skipped: "
                              f"{skipped}); check the images path")
        self.progress(f"embedded {len(order)} images of {image_set.description} in "
                      f"{time.perf_counter() - start:.1f} s")
        return (gathered[torch.tensor(order)], [keys[i] for i in order],
                [labels[i] for i in order], skipped)


class TextEmbeddings:
    """Encodes texts with one model: distinct texts once, sorted by length into full batches,
    split over the ranks, read from and written to the cache. ``encode(texts)`` -> [len, d].

    ``adapter_languages``: the languages the model has a language adapter for (an mclip model
    with ``adapters/<lang>/``); ``encode(texts, language)`` uses it for those languages only, and
    ``adapted`` collects the languages that were encoded with one.
    """

    def __init__(self, model, batch_size: int = 256, cache: EmbeddingCache | None = None,
                 ranks: EvalRanks | None = None, progress: Callable[[str], None] = lambda m: None,
                 remember: bool = False):
        self.model, self.batch_size, self.cache = model, batch_size, cache
        self.ranks, self.progress = ranks or EvalRanks(), progress
        self.uses_cache = cache is not None
        self.encoded, self.from_cache = 0, 0
        self.adapter_languages = tuple(getattr(model, "adapter_languages", ()))
        self.adapted: set[str] = set()
        # with ``remember`` every embedding stays in memory for the run (a task scored again, at
        # another embedding size, encodes nothing twice)
        self._memory: dict[tuple[str | None, str], torch.Tensor] | None = {} if remember else None

    @torch.no_grad()
    def encode(self, texts: list[str], language: str | None = None) -> torch.Tensor:
        """Normalised embeddings float32 [len(texts), d] on the CPU, in the order of ``texts``.

        ``language``: the language of all ``texts``; when the model has an adapter for it they
        are encoded with the adapter on (and cached apart from the base model's), otherwise (and
        for None) by the base model.
        """
        if language not in self.adapter_languages:
            return self._encode(texts, None)
        self.adapted.add(language)
        with self.model.text_language(language):
            return self._encode(texts, language)

    def _encode(self, texts: list[str], adapter: str | None) -> torch.Tensor:
        memory = self._memory
        if memory is not None and all((adapter, t) in memory for t in texts):
            return torch.stack([memory[adapter, t] for t in texts]) if texts else torch.empty(
                0, self.model.embed_dim)
        distinct = list(dict.fromkeys(texts))
        hashes = None
        if self.cache is not None:  # an adapter's embeddings are cached under their own keys
            hashes = text_hashes([f"\x00adapter:{adapter}\x00{t}" if adapter else t
                                  for t in distinct])
        found: dict[int, torch.Tensor] = {}
        missing = list(range(len(distinct)))
        if self.uses_cache:
            found, missing = self.ranks.broadcast(self.cache.lookup_texts(hashes)
                                                  if self.ranks.is_main else None)
        out = torch.empty(len(distinct), self.model.embed_dim)
        for position, row in found.items():
            out[position] = row
        if missing:
            start = time.perf_counter()
            new = self._encode_missing([distinct[i] for i in missing])
            self.progress(f"encoded {len(missing)} distinct texts in "
                          f"{time.perf_counter() - start:.1f} s ({len(found)} read from the cache)")
            out[torch.tensor(missing)] = new
            if self.cache is not None and self.ranks.is_main:
                self.cache.save_texts(hashes[missing], new)
        self.encoded += len(missing)
        self.from_cache += len(found)
        if memory is not None:
            memory.update(((adapter, text), out[i]) for i, text in enumerate(distinct))
        where = {text: i for i, text in enumerate(distinct)}
        return out[torch.tensor([where[t] for t in texts], dtype=torch.long)]

    def _encode_missing(self, texts: list[str]) -> torch.Tensor:
        order = sorted(range(len(texts)), key=lambda i: (len(texts[i]), i))
        mine = [p for p in range(len(order)) if self.ranks.mine(p)]
        chunks = []
        for start in range(0, len(mine), self.batch_size):
            batch = [texts[order[p]] for p in mine[start:start + self.batch_size]]
            chunks.append(self.model.encode_text(batch).float().cpu())
        local = torch.cat(chunks) if chunks else torch.zeros(0, 0)
        by_order = self.ranks.gather_rows(local, mine, len(texts), width=self.model.embed_dim)
        out = torch.empty_like(by_order)
        out[torch.tensor(order)] = by_order
        return out


def _prompt_groups(texts, languages: list[str], dataset: str | None):
    """Languages in groups whose distinct prompts fit :data:`PROMPT_GROUP`: [(langs, class
    texts per language, distinct prompts)]."""
    groups, current, prompts = [], {}, {}
    for lang in languages:
        class_texts = texts.load(lang, dataset)
        mine = {fill_template(t, name): None for name in class_texts.names if name
                for t in class_texts.templates}
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
    groups = (isinstance(texts, BabelImageNetTexts) if task.resource_groups is None
              else task.resource_groups)  # auto: Babel-ImageNet's groups for its labels files
    label_tensor = torch.tensor(labels, dtype=torch.long)
    if (label_tensor < 0).any():
        raise ConfigError(f"task '{task.name}': images without a label in '{task.images}'")
    languages = task.select_languages(texts.languages(), texts.description)
    per_language, views = {}, {}
    for class_texts_of, prompts in _prompt_groups(texts, languages, task.dataset or None):
        prompt_emb = text.encode(prompts)
        row = {prompt: i for i, prompt in enumerate(prompts)}

        def encode(batch: list[str]) -> torch.Tensor:
            return prompt_emb[torch.tensor([row[t] for t in batch], dtype=torch.long)]

        for lang, class_texts in class_texts_of.items():
            if int(label_tensor.max()) >= len(class_texts.names):
                raise ConfigError(f"task '{task.name}': labels go up to {int(label_tensor.max())}"
                                  f" but {lang} has {len(class_texts.names)} classes in "
                                  f"{class_texts.source or texts.description}")
            own = encode if lang not in text.adapter_languages else (  # its adapter on
                lambda batch, lang=lang: text.encode(batch, lang))
            scores = classify_language(image_emb, label_tensor, own, class_texts.names,
                                       class_texts.templates, task.top_k)
            metrics = scores.metrics
            if groups:
                metrics["resource_group"] = resource_group(metrics["n_classes"])
            kept_keys = [k for k, kept in zip(keys, scores.kept_images.tolist()) if kept]
            views[lang] = {"images": SampleRanks.build(
                (f"{k}\t{y}" for k, y in zip(kept_keys, scores.labels.tolist())),
                scores.ranks, scores.labels)}
            per_language[lang] = metrics
            progress(f"{task.name} [{lang}] classes={metrics['n_classes']} "
                     f"acc@1={_shown(metrics.get('acc@1'))}")
    return {"kind": task.kind, "languages": per_language, "views": views, "skipped": skipped,
            "data": {"images": image_set.fingerprint()}}


def retrieval_views(ranks: tuple[torch.Tensor, torch.Tensor], image_keys: list[str],
                    pairs: list[tuple[str, int]]) -> dict[str, SampleRanks]:
    """Per-sample views of one retrieval language: "texts" (text->image rank per caption) and
    "images" (image->text rank per image that has a caption)."""
    t2i, i2t = ranks
    captioned = (i2t >= 0).nonzero().flatten().tolist()
    return {"texts": SampleRanks.build((f"{image_keys[i]}\t{t}" for t, i in pairs), t2i),
            "images": SampleRanks.build((image_keys[i] for i in captioned), i2t[captioned])}


def run_retrieval(task, images: ImageEmbeddings, text: TextEmbeddings, progress) -> dict:
    """Image<->text retrieval per language, every caption of every image kept."""
    dataset = open_retrieval(task.captions, task.images or None, split=task.split or None)
    image_emb, keys, _, skipped = images.get(dataset)
    index = {key: i for i, key in enumerate(keys)}
    per_language, views = {}, {}
    for lang in task.select_languages(dataset.languages(), dataset.description):
        captions = dataset.captions(lang)
        pairs = [(t, index[key]) for t, key in zip(captions.texts, captions.image_keys)
                 if key in index]
        if not pairs:
            raise ConfigError(f"task '{task.name}': no caption in '{lang}' belongs to a usable "
                              f"image of {dataset.description}")
        text_emb = text.encode([p[0] for p in pairs], lang)
        ranks = retrieval_ranks(image_emb, text_emb, torch.tensor([p[1] for p in pairs]))
        views[lang] = retrieval_views(ranks, keys, pairs)
        metrics = {}
        for k in task.recall_at:
            metrics[f"text_to_image_R@{k}"] = float((views[lang]["texts"].ranks < k).mean())
            metrics[f"image_to_text_R@{k}"] = float((views[lang]["images"].ranks < k).mean())
        metrics.update(n_images=len(keys), n_texts=len(pairs),
                       captions_dropped=len(captions.texts) - len(pairs)
                       + sum(captions.skipped.values()))
        per_language[lang] = metrics
        progress(f"{task.name} [{lang}] text->image R@1={metrics.get('text_to_image_R@1', 0):.4f}")
    return {"kind": task.kind, "languages": per_language, "views": views, "skipped": skipped,
            "data": {"images": dataset.fingerprint()}}


RUNNERS: dict[str, Callable] = {"zeroshot_classification": run_zeroshot,
                                "retrieval": run_retrieval,
                                "topic_matching": run_topic_matching}


def _attach_samples(name: str, result: dict, bootstrap: int, seed: int) -> None:
    """Move the task's per-sample views into its languages, with their intervals."""
    for lang, views in result.pop("views", {}).items():
        metrics = result["languages"][lang]
        if bootstrap > 0:
            metrics["ci"] = language_intervals(metrics, views, bootstrap, seed, name, lang)
        metrics["samples"] = {view: ranks.to_json() for view, ranks in views.items()}
    result["bootstrap"] = {"resamples": bootstrap, "seed": seed, "confidence": CONFIDENCE}


def run_tasks(model, tasks: list, device: str | torch.device = "cpu", batch_size: int = 256,
              limit: int | None = None, progress: Callable[[str], None] | None = None,
              bootstrap: int = 1000, seed: int = 0, cache_dir: str | None = None,
              ranks: EvalRanks | None = None, embed_dims: list[int | None] | None = None
              ) -> dict:
    """Run ``tasks`` on ``model`` (an adapter); returns {task name: {kind, languages, skipped,
    data, bootstrap, seconds}}. ``embed_dims`` (e.g. [32, 64, None]; None: the full size) scores
    every task also on those prefixes of the same embeddings (:mod:`mclip.eval.embed_dims`).

    Per-language metrics are fractions in [0, 1], each with a ``ci`` [low, high] percentile
    bootstrap interval over ``bootstrap`` resamples (0: none) and its per-sample ranks under
    ``samples``. ``limit`` keeps the first N images of every image set; ``cache_dir`` keeps
    embeddings on disk between runs; ``ranks`` splits the encoding over torch.distributed ranks
    (every rank returns the same results). ``progress`` receives one line per image set, text
    batch group and language.
    """
    progress = progress or (lambda message: None)
    ranks = ranks or EvalRanks()
    device = torch.device(device)
    if hasattr(model, "to"):  # encoders get their inputs on ``device``: the weights go there too
        model.to(device)
    if hasattr(model, "eval"):
        model.eval()
    cache = None
    if cache_dir is not None and ranks.is_main:
        cache = EmbeddingCache(cache_dir, model)
    has_cache = ranks.broadcast(cache is not None)
    images = ImageEmbeddings(model, device, batch_size, limit, progress, cache, ranks)
    dims = check_dims(embed_dims, int(model.embed_dim)) if embed_dims else [None]
    text = TextEmbeddings(model, batch_size, cache, ranks, progress, remember=len(dims) > 1)
    images.uses_cache = text.uses_cache = has_cache  # other ranks follow rank 0's cache reads
    if text.adapter_languages:
        progress(f"language adapters: {', '.join(text.adapter_languages)} (used for texts in "
                 f"that language only)")
    results = {}
    for task in tasks:
        if task.kind not in RUNNERS:
            raise ConfigError(f"task '{task.name}': unknown kind '{task.kind}'; known: "
                              f"{', '.join(RUNNERS)}")
        for dim in dims:
            start, name = time.perf_counter(), task_name(task.name, dim)
            text.adapted = set()
            said = progress if dim is None else (lambda m, d=dim: progress(f"[{d}d] {m}"))
            result = RUNNERS[task.kind](task, PrefixImages(images, dim), PrefixTexts(text, dim),
                                        said)
            if text.adapter_languages:  # which of this task's languages had their adapter on
                result["language_adapters"] = sorted(text.adapted)
            if embed_dims:
                result.update(base_task=task.name, embed_dim=dim or int(model.embed_dim),
                              full_embed_dim=int(model.embed_dim))
            _attach_samples(name, result, bootstrap, seed)
            result["seconds"] = time.perf_counter() - start
            results[name] = result
    progress(f"texts: {text.encoded} encoded, {text.from_cache} read from the cache"
             + (f"; cache {cache.stats}" if cache is not None else ""))
    return results


def _shown(value: float | None) -> str:
    """A metric for a progress line: 4 decimals, ``n/a`` when not computed (0.0 is 0.0000)."""
    return "n/a" if value is None else f"{value:.4f}"
