"""Telling layouts apart by what a path holds, and opening the right reader.

Detection looks at names and content, never at what a path is called by convention alone, and
a path that fits no layout raises a ConfigError that lists the layouts accepted.
"""

from __future__ import annotations

from pathlib import Path

from mclip.config import ConfigError

from .babel_imagenet import BabelImageNetTexts, looks_like_babel_labels
from .babel_retrieval import BabelRetrievalSet, looks_like_babel_retrieval
from .base import ClassTextSource, ImageSet, RetrievalSet
from .caption_shards import CaptionShardSet
from .clip_benchmark import ClipBenchmarkTexts, is_clip_benchmark_folder
from .csv_captions import CsvCaptionSet
from .imagefolder import ImageFolderSet
from .labelled_shards import LabelledShardSet
from .multi30k import multi30k_task, open_multi30k
from .textfiles import read_json, strip_gz
from .xm3600 import XM3600Set
from .xtd10 import IMAGE_LIST, XTD10Set, is_xtd10_folder

CLASS_TEXT_LAYOUTS = """\
  - a CLIP_benchmark folder: {code}_classnames.json and \
{code}_zeroshot_classification_templates.json
  - a Babel-ImageNet label file: JSON {LANG: [[class indices], [labels]]}"""

RETRIEVAL_LAYOUTS = """\
  - an XTD10 folder: test_image_names.txt + test_1kcaptions_{lang}.txt
  - a Multi30K task folder (data/task1 or data/task2): image_splits/ + raw/
  - an XM3600 captions.jsonl (or a folder holding one)
  - a Babel-ImageNet retrieval JSON: {"images": [...], "captions": {lang: [[...], ...]}}
  - a .csv / .tsv caption table (columns filepath, title by default)
  - WebDataset shards: a .tar file, a brace or glob pattern, a list, or a folder of .tar files"""

IMAGE_SET_LAYOUTS = """\
  - an ImageFolder tree: ROOT/<class>/<image>.jpg
  - WebDataset shards with a cls member or json "label": a .tar file, pattern, list or folder"""


def is_shard_spec(path: str | Path) -> bool:
    """True when ``path`` names shards: a .tar file, a brace / glob pattern, a comma-separated
    list, or a folder whose only data files are .tar shards."""
    text = str(path)
    if Path(text).is_file():
        return text.endswith(".tar")
    if Path(text).is_dir():
        return any(Path(text).glob("*.tar"))
    return any(ch in text for ch in "{*?,") or text.endswith(".tar")


def open_class_texts(
    path: str | Path, prompts: str | Path | None = None, n_classes: int = 1000
) -> ClassTextSource:
    """The class-text reader for ``path``: ClipBenchmarkTexts for a folder of
    ``*_classnames.json``, BabelImageNetTexts (with the ``prompts`` file, if given) for a JSON
    file mapping codes to ``[[ints], [strings]]``. ConfigError listing both layouts otherwise."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(
            f"class texts '{path}' do not exist; expected one of:\n{CLASS_TEXT_LAYOUTS}"
        )
    if is_clip_benchmark_folder(path):
        return ClipBenchmarkTexts(path)
    if path.is_file() and strip_gz(path.name).endswith(".json"):
        if looks_like_babel_labels(read_json(path, "class texts")):
            return BabelImageNetTexts(path, prompts=prompts, n_classes=n_classes)
    raise ConfigError(
        f"class texts '{path}' fit no known layout; expected one of:\n{CLASS_TEXT_LAYOUTS}"
    )


def open_image_set(path: str | Path) -> ImageSet:
    """The classification image reader for ``path``: LabelledShardSet for shards, ImageFolderSet
    for a folder of class folders. ConfigError listing both layouts otherwise."""
    if is_shard_spec(path):
        return LabelledShardSet(str(path))
    if Path(path).is_dir():
        return ImageFolderSet(path)
    raise ConfigError(
        f"classification images '{path}' fit no known layout (or do not exist); "
        f"expected one of:\n{IMAGE_SET_LAYOUTS}"
    )


def open_retrieval(
    path: str | Path,
    images_dir: str | Path | None = None,
    *,
    split: str | None = None,
    language: str = "en",
    image_column: str = "filepath",
    caption_column: str = "title",
    language_column: str | None = None,
) -> RetrievalSet:
    """The retrieval reader for the caption layout at ``path`` (see :data:`RETRIEVAL_LAYOUTS`).

    ``images_dir`` is the folder of the images for the file-based layouts (required for XTD10,
    Multi30K, XM3600 and Babel-ImageNet JSON; optional for CSV). ``split`` picks a Multi30K
    split. ``language`` is the language of captions whose language the data does not write (a
    CSV without ``language_column``, a shard's ``KEY.txt`` without a ``LANGUAGE`` field).
    """
    if is_shard_spec(path):
        return CaptionShardSet(str(path), default_language=language)
    path = Path(path)
    if path.is_dir():
        if multi30k_task(path) is not None:
            return open_multi30k(path, images_dir, split)  # type: ignore[arg-type]
        if is_xtd10_folder(path):
            return XTD10Set(path, images_dir)  # type: ignore[arg-type]
        for name in ("captions.jsonl", "captions.jsonl.gz"):
            if (path / name).is_file():
                return XM3600Set(path / name, images_dir)  # type: ignore[arg-type]
        tasks = [p.name for p in sorted(path.iterdir()) if multi30k_task(p) is not None]
        if tasks:
            raise ConfigError(
                f"'{path}' holds Multi30K tasks {', '.join(tasks)}: give one of "
                f"them, e.g. '{path / tasks[0]}'"
            )
    elif path.is_file():
        name = strip_gz(path.name)
        if name == IMAGE_LIST:
            return XTD10Set(path.parent, images_dir)  # type: ignore[arg-type]
        if name.endswith(".jsonl"):
            return XM3600Set(path, images_dir)  # type: ignore[arg-type]
        if name.endswith((".csv", ".tsv")):
            return CsvCaptionSet(
                path,
                images_dir,
                image_column=image_column,
                caption_column=caption_column,
                language_column=language_column,
                language=language,
            )
        if name.endswith(".json"):
            data = read_json(path, "captions")
            if looks_like_babel_retrieval(data):
                return BabelRetrievalSet(path, images_dir)  # type: ignore[arg-type]
            if looks_like_babel_labels(data):
                raise ConfigError(
                    f"'{path}' is a Babel-ImageNet label file (class names for "
                    f"zero-shot classification), not captions; use it as class texts"
                )
    else:
        raise ConfigError(f"captions '{path}' do not exist; expected one of:\n{RETRIEVAL_LAYOUTS}")
    raise ConfigError(
        f"captions '{path}' fit no known layout; expected one of:\n{RETRIEVAL_LAYOUTS}"
    )
