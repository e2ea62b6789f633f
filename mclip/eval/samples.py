"""Per-sample results, kept compactly in the results JSON for intervals and paired comparisons.

Every fractional metric mclip reports is an average over samples of one *view* of a language's
evaluation: acc@k and mean per-class recall over images (the rank of each image's true class),
text->image R@k over captions, image->text R@k over images that have a caption, topic accuracy
over sentences. A view stores, per sample, the rank of its positive (0 = first, capped at 255:
only rank < k matters, and k <= 255) and, where a metric needs it, the sample's class. ``ids``
hashes the ordered identities of the samples (image keys, captions), so two results files are
compared sample by sample only when they scored the same samples in the same order.

In JSON a view is ``{"ids": sha1, "n": N, "ranks": base64(zlib(uint8)), "labels": ...}``: a
50,000-image language takes a few kilobytes.
"""

from __future__ import annotations

import base64
import hashlib
import re
import zlib
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
from numpy.typing import ArrayLike

RANK_CAP = 255

# metric name (without "@k") -> the view whose samples it averages over
METRIC_VIEWS = {
    "acc": "images",
    "text_to_image_R": "texts",
    "image_to_text_R": "images",
    "topic_acc": "sentences",
    "text_only_topic_acc": "sentences_text_only",
    "bitext_acc": "bitext",
    "bitext_to_pivot_acc": "bitext_to_pivot",
    "bitext_from_pivot_acc": "bitext_from_pivot",
    "image_to_image_R": "image_queries",
    "text_to_text_R": "text_queries",
    "text_to_pivot_text_R": "pivot_text_queries",
}
# mean per-class recall (hits at 1, averaged within each label, then over labels) -> its view
RECALL_VIEWS = {
    "mean_per_class_recall": "images",
    # per-class recall within a training-frequency bin (mclip.eval.concept_frequency)
    "recall_freq_0": "images_freq_0",
    "recall_freq_1-9": "images_freq_1-9",
    "recall_freq_10-99": "images_freq_10-99",
    "recall_freq_100+": "images_freq_100+",
    "mean_per_topic_recall": "sentences",
    "text_only_mean_per_topic_recall": "sentences_text_only",
}


@dataclass
class SampleRanks:
    """One view of one language's evaluation: ranks [n] (uint8, capped at 255), optional
    labels [n] (int, the class of each sample, for mean per-class recall), and ``ids``, a hash of
    the ordered sample identities."""

    ids: str
    ranks: np.ndarray
    labels: np.ndarray | None = None

    @classmethod
    def build(
        cls, identities: Iterable[str], ranks: ArrayLike, labels: ArrayLike | None = None
    ) -> "SampleRanks":
        """From sample identities (strings, in order), ranks [n] (ints, tensor or array) and
        optional labels [n]."""
        ranks = np.minimum(np.asarray(ranks, dtype=np.int64), RANK_CAP).astype(np.uint8)
        labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        return cls(identity_hash(identities), ranks, labels)

    def __len__(self) -> int:
        return int(self.ranks.shape[0])

    def to_json(self) -> dict[str, Any]:
        """The compact JSON form (see the module docstring)."""
        out = {"ids": self.ids, "n": len(self), "ranks": _pack(self.ranks)}
        if self.labels is not None:
            dtype = np.uint16 if self.labels.size == 0 or self.labels.max() < 2**16 else np.int64
            out["labels"] = _pack(self.labels.astype(dtype))
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "SampleRanks":
        """Inverse of :meth:`to_json`."""
        ranks = _unpack(data["ranks"]).astype(np.uint8)
        labels = _unpack(data["labels"]).astype(np.int64) if "labels" in data else None
        if ranks.shape[0] != data["n"]:
            raise ValueError(
                f"per-sample ranks hold {ranks.shape[0]} entries, expected {data['n']}"
            )
        return cls(data["ids"], ranks, labels)


def identity_hash(identities: Iterable[str]) -> str:
    """sha1 of the ordered sample identities (one string each)."""
    digest = hashlib.sha1()
    for identity in identities:
        digest.update(identity.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()


def metric_spec(metric: str) -> tuple[str, int | None] | None:
    """(view, k) of a fractional metric name: ``acc@5`` -> ("images", 5), ``mean_per_class_recall``
    -> ("images", None: a mean per-label recall); None for a name that is not a per-sample
    average (counts, names)."""
    if metric in RECALL_VIEWS:
        return RECALL_VIEWS[metric], None
    match = re.fullmatch(r"(.+)@(\d+)", metric)
    if match is None or match.group(1) not in METRIC_VIEWS:
        return None
    return METRIC_VIEWS[match.group(1)], int(match.group(2))


def _pack(array: np.ndarray) -> dict[str, Any]:
    return {
        "dtype": array.dtype.str,
        "data": base64.b64encode(zlib.compress(np.ascontiguousarray(array).tobytes(), 6)).decode(
            "ascii"
        ),
    }


def _unpack(packed: dict[str, Any]) -> np.ndarray:
    array: np.ndarray = np.frombuffer(
        zlib.decompress(base64.b64decode(packed["data"])), dtype=np.dtype(packed["dtype"])
    ).copy()
    return array
