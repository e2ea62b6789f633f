"""Readers for evaluation data: labelled image shards, captioned image shards, class texts.

Class names and templates are read in the CLIP_benchmark layout: ``DIR/{code}_classnames.json``
and ``DIR/{code}_zeroshot_classification_templates.json``, each ``{dataset: [...]}``.
CLIP_benchmark names Chinese ``cn`` and Japanese ``jp``; mclip uses ISO 639-1 codes and maps
them explicitly (:data:`CLIP_BENCHMARK_CODES`), never by guessing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterator

import torch

from mclip.config import ConfigError
from mclip.data.shards import (SkipCounter, decode_captions, decode_image, expand_shards,
                               iter_raw_samples, read_metadata)

CLIP_BENCHMARK_CODES: dict[str, str] = {"zh": "cn", "ja": "jp"}


def _label(sample: dict) -> int | None:
    meta = read_metadata(sample)
    for key in ("label", "cls"):
        if isinstance(meta.get(key), int):
            return meta[key]
    if "cls" in sample:
        try:
            return int(sample["cls"].decode().strip())
        except ValueError:
            return None
    return None


def iter_image_batches(shards: str, transform: Callable, batch_size: int, counter: SkipCounter,
                       with_captions: bool = False) -> Iterator[tuple[torch.Tensor, list]]:
    """Batches (images [B, 3, S, S], per-sample info) read in order from ``shards``.

    The info is the label (int) or, with ``with_captions``, the captions dict {lang: [..]}.
    Samples with a corrupt image or no label / caption are skipped and counted in ``counter``.
    """
    images, infos = [], []
    for sample in iter_raw_samples(expand_shards(shards, "suite task data"), counter):
        if with_captions:
            info = decode_captions(sample, counter)
            if not info:
                continue
        else:
            info = _label(sample)
            if info is None:
                counter["missing_label"] += 1
                continue
        image = decode_image(sample, counter)
        if image is None:
            continue
        images.append(transform(image))
        infos.append(info)
        if len(images) == batch_size:
            yield torch.stack(images), infos
            images, infos = [], []
    if images:
        yield torch.stack(images), infos


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read {what} file '{path}': {error}") from None


def class_text_file(directory: str | Path, lang: str, kind: str) -> Path:
    """The file holding ``kind`` ('classnames' or 'zeroshot_classification_templates') for lang."""
    directory = Path(directory)
    for code in (lang, CLIP_BENCHMARK_CODES.get(lang)):
        if code and (directory / f"{code}_{kind}.json").is_file():
            return directory / f"{code}_{kind}.json"
    have = sorted({p.name.split("_", 1)[0] for p in directory.glob(f"*_{kind}.json")})
    raise ConfigError(f"no {kind} for language '{lang}' in '{directory}' (expected "
                      f"{lang}_{kind}.json); languages there: {', '.join(have) or 'none'}")


def load_class_texts(directory: str | Path, lang: str, dataset: str) -> tuple[list[str], list[str]]:
    """(class names, templates) of ``dataset`` in ``lang`` from a CLIP_benchmark-style folder."""
    out = []
    for kind in ("classnames", "zeroshot_classification_templates"):
        path = class_text_file(directory, lang, kind)
        table = _read_json(path, kind)
        if dataset not in table:
            raise ConfigError(f"'{path}' has no entry '{dataset}'; it has: "
                              f"{', '.join(sorted(table)[:10])}")
        out.append(list(table[dataset]))
    return out[0], out[1]
