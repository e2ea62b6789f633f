"""Classification images in WebDataset shards: ``KEY.jpg`` (or jpeg/png/webp) with a label.

The label is the ``KEY.cls`` member (an integer as text, as CLIP_benchmark's webdataset exports
write it), else ``KEY.json``'s ``"label"`` field. Samples without a usable label
(``missing_label``), without an image member (``missing_image``) or repeating an earlier key
(``duplicate_key``) are counted in the SkipCounter and left out, never raised.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterator

from mclip.data.remote import is_remote, redact, shard_stamps
from mclip.data.shards import (
    IMAGE_KEYS,
    SkipCounter,
    expand_shards,
    iter_raw_samples,
    read_metadata,
)

from .base import ImageItem, file_fingerprint


def sample_label(sample: dict) -> int | None:
    """The class index of a raw shard sample (``cls`` member, else ``json["label"]``), or None."""
    if "cls" in sample:
        try:
            return int(sample["cls"].decode("utf-8").strip())
        except (ValueError, UnicodeDecodeError):
            pass
    label = read_metadata(sample).get("label")
    if isinstance(label, int) and not isinstance(label, bool):
        return label
    return None


def sample_image(sample: dict) -> bytes | None:
    """The encoded image bytes of a raw shard sample, or None when it has no image member."""
    return next((sample[key] for key in IMAGE_KEYS if key in sample), None)


def shard_fingerprint(paths: list[str], extra: str = "", state: bool = False) -> str:
    """A hash of the shard files' names (relative to their common folder) and sizes; ``state``
    as in :func:`~mclip.eval.datasets.base.file_fingerprint`. Remote shards
    (:mod:`mclip.data.remote`) are hashed by their redacted URL, size and version."""
    if any(is_remote(p) for p in paths):
        digest = hashlib.sha256(extra.encode())
        for path, stamp in zip(paths, shard_stamps(paths)):
            digest.update(f"{redact(path)}\0{json.dumps(stamp, sort_keys=True)}\n".encode())
        return digest.hexdigest()[:16]
    root = Path(os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths]))
    return file_fingerprint(root, [Path(os.path.abspath(p)) for p in paths], extra, state)


class LabelledShardSet:
    """The labelled images of a set of shards, read in shard order."""

    def __init__(self, shards: str):
        self.spec = shards
        self.paths = expand_shards(shards, "classification image shards")
        self.description = f"shards '{shards}'"

    def items(self, skipped: SkipCounter) -> Iterator[ImageItem]:
        """Every labelled sample as an ImageItem with ``data`` (encoded bytes) and ``label``;
        samples without a label or image are counted in ``skipped`` and left out."""
        seen: set[str] = set()
        for sample in iter_raw_samples(self.paths, skipped):
            key = sample["__key__"]
            label = sample_label(sample)
            data = sample_image(sample)
            if label is None:
                skipped["missing_label"] += 1
            elif data is None:
                skipped["missing_image"] += 1
            elif key in seen:
                skipped["duplicate_key"] += 1
            else:
                seen.add(key)
                yield ImageItem(key=key, data=data, label=label)

    def fingerprint(self, state: bool = False) -> str:
        """A hash of the shard files' names and sizes (``state``: and their mtimes and ends)."""
        return shard_fingerprint(self.paths, extra="labelled", state=state)
