"""Evaluation suites: a YAML list of tasks, run against any dual encoder.

    name: demo
    data_root: demo_data          # relative task paths resolve here (CLI: --data-root)
    tasks:
      - name: shapes
        kind: zeroshot_classification
        images: eval              # shards: directory, brace pattern, glob or list
        class_texts: classnames   # CLIP_benchmark-style {lang}_classnames.json + templates
        dataset: demo_shapes      # the key inside those files
        languages: [en, de]
        top_k: [1, 5]
      - name: shapes_retrieval
        kind: retrieval
        data: retrieval           # shards whose KEY.json holds {"captions": {lang: [...]}}
        languages: [en, de]
        recall_at: [1, 5, 10]

A model for evaluation is anything with ``encode_image(images)``, ``encode_text(list[str])``
(both returning L2-normalised [N, d]) and ``image_transform(train=False)``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import yaml

from mclip.config import ConfigError
from mclip.data.shards import SkipCounter
from mclip.eval.data import iter_image_batches, load_class_texts
from mclip.eval.retrieval import retrieval_metrics
from mclip.eval.zeroshot import evaluate_language

KINDS = ("zeroshot_classification", "retrieval")
_TASK_KEYS = {
    "zeroshot_classification": {"name", "kind", "images", "class_texts", "dataset", "languages",
                                "top_k"},
    "retrieval": {"name", "kind", "data", "languages", "recall_at"},
}


@dataclass
class Task:
    """One evaluation task of a suite (fields as in the YAML; paths already resolved)."""
    name: str
    kind: str
    languages: list[str]
    images: str = ""
    class_texts: str = ""
    dataset: str = ""
    data: str = ""
    top_k: list[int] = field(default_factory=lambda: [1, 5])
    recall_at: list[int] = field(default_factory=lambda: [1, 5, 10])


@dataclass
class Suite:
    """A named list of tasks."""
    name: str
    tasks: list[Task]
    data_root: str = "."


def _resolve(root: Path, path: str) -> str:
    parts = [p.strip() for p in path.split(",") if p.strip()]
    return ",".join(p if Path(p).is_absolute() else str(root / p) for p in parts)


def load_suite(path: str | Path, data_root: str | Path | None = None) -> Suite:
    """Parse and check a suite YAML; task paths are resolved against ``data_root``
    (argument, else the suite's ``data_root`` relative to the current directory)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"suite file '{path}' does not exist (see eval_suites/ for examples)")
    spec = yaml.safe_load(path.read_text("utf-8")) or {}
    if not isinstance(spec, dict) or not isinstance(spec.get("tasks"), list) or not spec["tasks"]:
        raise ConfigError(f"suite '{path}' needs a non-empty 'tasks' list")
    root = Path(data_root if data_root is not None else spec.get("data_root", "."))
    tasks = []
    for i, raw in enumerate(spec["tasks"]):
        where = f"suite '{path}' task {i + 1}"
        if not isinstance(raw, dict) or raw.get("kind") not in KINDS:
            raise ConfigError(f"{where}: 'kind' must be one of {', '.join(KINDS)}")
        unknown = set(raw) - _TASK_KEYS[raw["kind"]]
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; valid: "
                              f"{', '.join(sorted(_TASK_KEYS[raw['kind']]))}")
        needed = ["name", "languages"] + (["images", "class_texts", "dataset"]
                                          if raw["kind"] == "zeroshot_classification" else ["data"])
        missing = [k for k in needed if not raw.get(k)]
        if missing:
            raise ConfigError(f"{where}: missing {', '.join(missing)}")
        task = Task(**raw)
        for key in ("images", "data", "class_texts"):
            if getattr(task, key):
                setattr(task, key, _resolve(root, getattr(task, key)))
        tasks.append(task)
    return Suite(name=spec.get("name", path.stem), tasks=tasks, data_root=str(root))


class _Encoder:
    """Batched, no-grad access to a model's encoders on one device."""

    def __init__(self, model, device: torch.device):
        self.model, self.device = model, device

    @torch.no_grad()
    def images(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(images.to(self.device)).float()

    @torch.no_grad()
    def texts(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode_text(texts).float()


def _embed_images(task_name: str, shards: str, enc: _Encoder, transform: Callable,
                  batch_size: int, skipped: SkipCounter, with_captions: bool = False
                  ) -> tuple[torch.Tensor, list]:
    """Image embeddings [N, d] of every usable sample in ``shards``, and each sample's label
    (or captions dict with ``with_captions``)."""
    embeddings, infos = [], []
    for images, batch_infos in iter_image_batches(shards, transform, batch_size, skipped,
                                                  with_captions):
        embeddings.append(enc.images(images))
        infos.extend(batch_infos)
    if not embeddings:
        raise ConfigError(f"task '{task_name}': no usable sample in '{shards}' "
                          f"(skipped: {dict(skipped)})")
    return torch.cat(embeddings), infos


def _zeroshot(task: Task, enc: _Encoder, transform: Callable, batch_size: int,
              progress: Callable[[str], None]) -> dict:
    skipped = SkipCounter()
    image_emb, labels = _embed_images(task.name, task.images, enc, transform, batch_size, skipped)
    label_tensor = torch.tensor(labels)
    per_language = {}
    for lang in task.languages:
        names, templates = load_class_texts(task.class_texts, lang, task.dataset)
        if label_tensor.max() >= len(names):
            raise ConfigError(f"task '{task.name}': labels go up to {int(label_tensor.max())} but "
                              f"{lang} has {len(names)} class names")
        per_language[lang] = evaluate_language(image_emb, label_tensor, enc.texts, names, templates,
                                               task.top_k)
        progress(f"{task.name} [{lang}] acc@1={per_language[lang].get('acc@1', float('nan')):.4f}")
    return {"kind": task.kind, "languages": per_language, "skipped": dict(skipped)}


def _retrieval(task: Task, enc: _Encoder, transform: Callable, batch_size: int,
               progress: Callable[[str], None]) -> dict:
    skipped = SkipCounter()
    image_emb, captions = _embed_images(task.name, task.data, enc, transform, batch_size, skipped,
                                        with_captions=True)
    per_language = {}
    for lang in task.languages:
        texts, owner = [], []
        for index, by_lang in enumerate(captions):
            for caption in by_lang.get(lang, []):
                texts.append(caption)
                owner.append(index)
        if not texts:
            raise ConfigError(f"task '{task.name}': no caption in language '{lang}' in "
                              f"'{task.data}'")
        text_emb = torch.cat([enc.texts(texts[i:i + batch_size])
                              for i in range(0, len(texts), batch_size)])
        per_language[lang] = retrieval_metrics(image_emb, text_emb, torch.tensor(owner),
                                               tuple(task.recall_at))
        progress(f"{task.name} [{lang}] text->image R@1="
                 f"{per_language[lang]['text_to_image_R@1']:.4f}")
    return {"kind": task.kind, "languages": per_language, "skipped": dict(skipped)}


def run_suite(model, suite: Suite, device: str | torch.device = "cpu", batch_size: int = 256,
              progress: Callable[[str], None] | None = None) -> dict:
    """Run every task of ``suite`` on ``model``; returns {task name: {kind, languages, skipped}}.

    Per-language metrics are fractions in [0, 1]; ``progress`` receives one line per language.
    """
    progress = progress or (lambda message: None)
    device = torch.device(device)
    if hasattr(model, "eval"):
        model.eval()
    enc = _Encoder(model, device)
    transform = model.image_transform(train=False)
    results = {}
    for task in suite.tasks:
        start = time.perf_counter()
        run = _zeroshot if task.kind == "zeroshot_classification" else _retrieval
        results[task.name] = run(task, enc, transform, batch_size, progress)
        results[task.name]["seconds"] = time.perf_counter() - start
    return results
