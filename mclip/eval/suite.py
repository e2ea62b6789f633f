"""Evaluation suites: a YAML list of tasks, run against any model adapter.

    name: demo
    data_root: demo_data          # relative task paths resolve here (CLI: --data-root)
    tasks:
      - name: shapes
        kind: zeroshot_classification
        images: eval              # ImageFolder tree or labelled shards
        class_texts: classnames   # CLIP_benchmark folder, or a Babel-ImageNet labels file
        prompts: null             # Babel-ImageNet translated prompts file (optional)
        dataset: demo_shapes      # the key inside CLIP_benchmark files
        languages: [en, de]       # or: all (every language the class texts have)
        top_k: [1, 5]
        resource_groups: null     # Babel-ImageNet's resource group per language: true, false,
                                  # or null (default): for Babel-ImageNet labels files only
        template_scores: true     # with several templates, each one's acc@1 and their spread
        concept_counts: null      # 'mclip data concepts' counts: recall by training frequency
        provenance: null          # the texts' origin: human, machine_translated, lexicon or
                                  # unknown, or {lang: tag, default: tag}; null: what the
                                  # reader knows of its format (mclip.eval.provenance)
      - name: shapes_retrieval
        kind: retrieval
        captions: retrieval       # XTD10 / Multi30K folder, XM3600 jsonl, Babel JSON, CSV, shards
        images: null              # the images folder of file-based caption layouts
        split: null               # a Multi30K split (default test_2016_flickr / test_2016)
        languages: [en, de]
        recall_at: [1, 5, 10]
      - name: shape_topics
        kind: topic_matching
        sentences: topics         # MVL-SIB folder, or topic image folders + sentences.tsv
        images: null              # the topic images (default: found beside the sentences)
        split: null               # MVL-SIB / SIB-200 split(s), e.g. test (default all three)
        reference_language: en    # the text-only variant's topic embeddings
        languages: [en, de]
      - name: shape_bitext
        kind: bitext_retrieval    # text only: translations found among all pivot sentences
        sentences: topics         # Flores/SIB-200 folders (as MVL-SIB), Tatoeba pair files, or
                                  # a TSV id<TAB>language<TAB>sentence
        split: null               # SIB-200 split(s) (default all three)
        pivot: en                 # every language is matched against this one, both ways
        languages: all
        top_k: [1, 5]
      - name: shapes_image_to_image
        kind: image_to_image      # same-class images as positives, the query left out
        images: eval              # any labelled image set
        recall_at: [1, 5, 10]     # and mAP
      - name: caption_to_caption
        kind: text_to_text        # captions of the same image, within and across languages
        captions: retrieval       # any caption layout of the retrieval kind
        pivot: en                 # the cross-language scores match every language against it
        languages: [en, de]
        recall_at: [1, 5, 10]

Paths are resolved against ``data_root``; the readers (:mod:`mclip.eval.datasets`) say which file
they expected where when something is missing. The runner is :mod:`mclip.eval.runner`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import yaml

from mclip.config import ConfigError
from mclip.data.remote import is_remote
from mclip.eval.provenance import check_provenance
from mclip.eval.runner import run_tasks

KINDS = (
    "zeroshot_classification",
    "retrieval",
    "topic_matching",
    "bitext_retrieval",
    "image_to_image",
    "text_to_text",
)
_COMMON = {"name", "kind", "languages", "provenance"}
_TASK_KEYS = {
    "zeroshot_classification": _COMMON
    | {
        "images",
        "class_texts",
        "prompts",
        "dataset",
        "top_k",
        "resource_groups",
        "template_scores",
        "concept_counts",
    },
    "retrieval": _COMMON | {"captions", "images", "split", "recall_at", "data"},
    "topic_matching": _COMMON | {"images", "sentences", "split", "reference_language"},
    "bitext_retrieval": _COMMON | {"sentences", "split", "pivot", "top_k"},
    "image_to_image": {"name", "kind", "languages", "images", "recall_at"},
    "text_to_text": _COMMON | {"captions", "images", "split", "pivot", "recall_at", "data"},
}
_REQUIRED = {
    "zeroshot_classification": ["images", "class_texts"],
    "retrieval": ["captions"],
    "topic_matching": ["sentences"],
    "bitext_retrieval": ["sentences"],
    "image_to_image": ["images"],
    "text_to_text": ["captions"],
}
_PATHS = ("images", "class_texts", "prompts", "captions", "sentences", "concept_counts")


@dataclass
class Task:
    """One evaluation task of a suite (fields as in the YAML; paths already resolved).

    ``languages`` is a list of mclip codes or ``"all"``.
    """

    name: str
    kind: str
    languages: list[str] | str
    images: str = ""
    class_texts: str = ""
    prompts: str = ""
    dataset: str = ""
    captions: str = ""
    split: str = ""
    top_k: list[int] = field(default_factory=lambda: [1, 5])
    recall_at: list[int] = field(default_factory=lambda: [1, 5, 10])
    resource_groups: bool | None = None
    template_scores: bool = True
    sentences: str = ""
    reference_language: str = "en"
    pivot: str = "en"
    provenance: str | dict[str, str] | None = None
    concept_counts: str = ""

    def select_languages(self, available: list[str], where: str) -> list[str]:
        """The task's languages: all of ``available`` for ``"all"``, else its own list, each of
        which must be in ``available`` (else a ConfigError naming ``where`` and what it has)."""
        if self.languages in ("all", ["all"]):
            return list(available)
        missing = [lang for lang in self.languages if lang not in available]
        if missing:
            raise ConfigError(
                f"task '{self.name}': language(s) {', '.join(missing)} not in "
                f"{where}; it has: {', '.join(available)}"
            )
        return list(self.languages)


@dataclass
class Suite:
    """A named list of tasks."""

    name: str
    tasks: list[Task]
    data_root: str = "."


def _resolve(root: Path, path: str) -> str:
    """Relative paths of a (comma-separated) spec against ``root``; URLs stay as they are."""
    parts = [p.strip() for p in path.split(",") if p.strip()]
    return ",".join(p if Path(p).is_absolute() or is_remote(p) else str(root / p) for p in parts)


def make_task(raw: dict, root: Path, where: str) -> Task:
    """A checked :class:`Task` from one YAML mapping; relative paths resolve against ``root``."""
    if not isinstance(raw, dict) or raw.get("kind") not in KINDS:
        raise ConfigError(f"{where}: 'kind' must be one of {', '.join(KINDS)}")
    unknown = set(raw) - _TASK_KEYS[raw["kind"]]
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))}; valid: "
            f"{', '.join(sorted(_TASK_KEYS[raw['kind']]))}"
        )
    raw = {k: v for k, v in raw.items() if v is not None}
    if "data" in raw:  # shards holding both the images and their captions
        raw.setdefault("captions", raw.pop("data"))
    if raw["kind"] == "image_to_image":  # images have no language
        raw.setdefault("languages", "all")
    missing = [k for k in ["name", "languages"] + _REQUIRED[raw["kind"]] if not raw.get(k)]
    if missing:
        raise ConfigError(f"{where}: missing {', '.join(missing)}")
    if isinstance(raw["languages"], str) and raw["languages"] != "all":
        raw["languages"] = [code.strip() for code in raw["languages"].split(",") if code.strip()]
    check_provenance(raw.get("provenance"), f"{where} ('{raw['name']}')")
    if not isinstance(raw.get("template_scores", True), bool):
        raise ConfigError(f"{where}: template_scores must be true or false")
    task = Task(**raw)
    for key in _PATHS:
        if getattr(task, key):
            setattr(task, key, _resolve(root, str(getattr(task, key))))
    return task


def load_suite(path: str | Path, data_root: str | Path | None = None) -> Suite:
    """Parse and check a suite YAML; task paths are resolved against ``data_root``
    (argument, else the suite's ``data_root`` relative to the current directory)."""
    path = Path(path)
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise ConfigError(f"suite file '{path}' {what} (see eval_suites/ for examples)")
    try:
        spec = yaml.safe_load(path.read_text("utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError(
            f"suite '{path}' is not valid YAML: {' '.join(str(error).split())}"
        ) from None
    if not isinstance(spec, dict) or not isinstance(spec.get("tasks"), list) or not spec["tasks"]:
        raise ConfigError(f"suite '{path}' needs a non-empty 'tasks' list")
    root = Path(data_root if data_root is not None else spec.get("data_root", "."))
    tasks = [
        make_task(raw, root, f"suite '{path}' task {i + 1}") for i, raw in enumerate(spec["tasks"])
    ]
    return Suite(name=spec.get("name", path.stem), tasks=tasks, data_root=str(root))


def use_concept_counts(suite: Suite, path: str) -> Suite:
    """Every zero-shot task of ``suite`` reports recall by training frequency from the counts at
    ``path`` (``mclip eval --concept-counts``; :mod:`mclip.eval.concept_frequency`)."""
    for task in suite.tasks:
        if task.kind == "zeroshot_classification":
            task.concept_counts = str(path)
    return suite


def narrow_languages(suite: Suite, languages: list[str]) -> Suite:
    """The suite with every task restricted to ``languages`` (``mclip eval --languages``)."""
    for task in suite.tasks:
        task.languages = list(languages)
    return suite


def run_suite(
    model,
    suite: Suite,
    device: str | torch.device = "cpu",
    batch_size: int = 256,
    progress: Callable[[str], None] | None = None,
    limit: int | None = None,
    **options,
) -> dict:
    """Run every task of ``suite`` on ``model``; returns {task name: {kind, languages, ...}}.

    Per-language metrics are fractions in [0, 1] with bootstrap intervals; ``progress`` receives
    one line per language. A model with ``.to`` is moved to ``device`` first (its inputs are
    sent there). ``options`` go to :func:`~mclip.eval.runner.run_tasks` (``bootstrap``,
    ``seed``, ``cache_dir``, ``ranks``, ``embed_dims``).
    """
    return run_tasks(model, suite.tasks, device, batch_size, limit, progress, **options)
