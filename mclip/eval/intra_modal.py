"""Intra-modal retrieval: image -> image and caption -> caption (kinds ``image_to_image``,
``text_to_text``).

Contrastive image-text training aligns each modality with the other, not with itself; the
image-image and text-text geometry it leaves can be poor ("Cross the Gap", arXiv:2502.14985, and
the modality gap, arXiv:2203.02053). These tasks make that visible with the model's normalised
embeddings and cosine similarity:

* ``image_to_image`` (a labelled image set): each image queries all *other* images; its positives
  are the other images of its class. Reported under the language key ``images``:
  ``image_to_image_R@k`` (a positive among the first k), ``image_to_image_mAP`` (mean over
  queries of the average precision over all positives), ``n_images``, ``n_queries`` (images with
  at least one other image of their class), ``n_classes``.
* ``text_to_text`` (a caption set): within a language, each caption queries the language's other
  captions, positives the other captions of the same image (``text_to_text_R@k``,
  ``text_to_text_mAP``, ``n_queries``: captions whose image has another caption there); across
  languages, each caption queries all captions of the pivot language (task key ``pivot``, default
  ``en``), positives the pivot captions of its image (``text_to_pivot_text_R@k``,
  ``text_to_pivot_text_mAP``, ``n_pivot_queries``). A caption set with one caption per image and
  language (XTD10) has only the cross-language scores.

Order: by score, ties to the lower candidate index (as everywhere in mclip's evaluation); the
query itself is never a candidate. Per-sample ranks of the first positive are kept (views
``image_queries``, ``text_queries``, ``pivot_text_queries``) for intervals and paired tests of
R@k; mAP is a point value.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import torch

from mclip.config import ConfigError
from mclip.eval.datasets import open_image_set, open_retrieval
from mclip.eval.metric_names import shown
from mclip.eval.provenance import tag_languages
from mclip.eval.samples import SampleRanks

QUERY_CHUNK = 512  # query rows sorted at once: QUERY_CHUNK x candidates scores
IMAGES_KEY = "images"  # the language key of the image-only task


class PositiveRanks(NamedTuple):
    """Scored queries: ranks [n] LongTensor (rank of each query's best positive, 0 = first),
    average_precision [n] float64, queries [n] (indices into the query set: those with at least
    one positive)."""

    ranks: torch.Tensor
    average_precision: torch.Tensor
    queries: torch.Tensor


def positive_ranks(
    queries: torch.Tensor,
    candidates: torch.Tensor,
    query_labels: torch.Tensor,
    candidate_labels: torch.Tensor,
    same_set: bool,
) -> PositiveRanks:
    """Rank of the first positive and the average precision of each query.

    queries [n, d], candidates [m, d] (L2-normalised float32); query_labels [n], candidate_labels
    [m] (LongTensor): a candidate is a positive of a query with the same label. ``same_set``: the
    queries are the candidates (n == m, row i is candidate i) and a query never retrieves itself.
    Candidates are ordered by cosine, ties to the lower index. A query without a positive is left
    out (``queries`` lists the others). Memory: :data:`QUERY_CHUNK` x m scores and their sort.
    """
    if same_set and queries.shape[0] != candidates.shape[0]:
        raise ValueError("same_set needs the queries to be the candidates")
    n_labels = 1 + max(
        [int(t.max()) for t in (query_labels, candidate_labels) if len(t)], default=0
    )
    n_positives = torch.bincount(candidate_labels, minlength=n_labels)[query_labels] - int(same_set)
    keep = (n_positives > 0).nonzero().flatten()
    ranks, precision = (
        torch.empty(len(keep), dtype=torch.long),
        torch.empty(len(keep), dtype=torch.float64),
    )
    for start in range(0, len(keep), QUERY_CHUNK):
        rows = keep[start : start + QUERY_CHUNK]
        scores = queries[rows].float() @ candidates.float().T
        positive = query_labels[rows, None] == candidate_labels[None, :]
        if same_set:
            scores[torch.arange(len(rows)), rows] = -torch.inf
            positive[torch.arange(len(rows)), rows] = False
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices
        hits = positive.gather(1, order)
        ranks[start : start + len(rows)] = hits.to(torch.int8).argmax(dim=1)
        found = hits.cumsum(1, dtype=torch.float64)
        at = torch.arange(1, hits.shape[1] + 1, dtype=torch.float64)
        precision[start : start + len(rows)] = ((found / at) * hits).sum(1) / n_positives[rows]
    return PositiveRanks(ranks, precision, keep)


def _scores(name: str, result: PositiveRanks, recall_at: list[int]) -> dict[str, Any]:
    metrics: dict[str, Any] = {
        f"{name}_R@{k}": float((result.ranks < k).double().mean()) if len(result.ranks) else None
        for k in recall_at
    }
    metrics[f"{name}_mAP"] = float(result.average_precision.mean()) if len(result.ranks) else None
    return metrics


def run_image_to_image(
    task: Any, images: Any, text: Any, progress: Callable[[str], None]
) -> dict[str, Any]:
    """Image -> image retrieval with same-class positives on ``task.images`` (``text`` unused)."""
    image_set = open_image_set(task.images)
    emb, keys, labels, skipped = images.get(image_set)
    label_tensor = torch.tensor(labels, dtype=torch.long)
    if len(label_tensor) and (label_tensor < 0).any():
        raise ConfigError(
            f"task '{task.name}': images without a label in '{task.images}'; "
            f"image_to_image needs a class per image (ImageFolder or labelled "
            f"shards)"
        )
    result = positive_ranks(emb, emb, label_tensor, label_tensor, same_set=True)
    metrics = _scores("image_to_image", result, task.recall_at)
    metrics.update(n_images=len(keys), n_queries=len(result.queries), n_classes=len(set(labels)))
    view = SampleRanks.build(
        (f"{keys[i]}\t{labels[i]}" for i in result.queries.tolist()),
        result.ranks,
        label_tensor[result.queries],
    )
    progress(
        f"{task.name} image->image R@1={shown(metrics.get('image_to_image_R@1'))} "
        f"mAP={shown(metrics['image_to_image_mAP'])} ({len(result.queries)} queries)"
    )
    return {
        "kind": task.kind,
        "languages": {IMAGES_KEY: metrics},
        "views": {IMAGES_KEY: {"image_queries": view}},
        "skipped": skipped,
        "data": {"images": image_set.fingerprint()},
    }


def run_text_to_text(
    task: Any, images: Any, text: Any, progress: Callable[[str], None]
) -> dict[str, Any]:
    """Caption -> caption of the same image, within each language and against the pivot's
    (``images`` unused: the captions' image keys are the labels)."""
    dataset = open_retrieval(task.captions, task.images or None, split=task.split or None)
    available = dataset.languages()
    languages = task.select_languages(available, dataset.description)
    pivot = task.pivot if task.pivot in available else None
    if pivot is None:
        progress(
            f"{task.name}: no captions in the pivot '{task.pivot}' ({dataset.description}): "
            f"within-language scores only"
        )
    image_ids: dict[str, int] = {}

    def encoded(lang: str) -> tuple[Any, torch.Tensor, torch.Tensor]:
        captions = dataset.captions(lang)
        ids = torch.tensor(
            [image_ids.setdefault(k, len(image_ids)) for k in captions.image_keys], dtype=torch.long
        )
        return captions, ids, text.encode(captions.texts, lang)

    pivot_side = encoded(pivot) if pivot is not None else None
    per_language, views = {}, {}
    for lang in languages:
        captions, ids, emb = pivot_side if pivot_side and lang == pivot else encoded(lang)
        within = positive_ranks(emb, emb, ids, ids, same_set=True)
        metrics = _scores("text_to_text", within, task.recall_at)
        metrics.update(
            n_texts=len(captions.texts),
            n_queries=len(within.queries),
            captions_dropped=sum(captions.skipped.values()),
        )
        views[lang] = {
            "text_queries": SampleRanks.build(
                (f"{captions.image_keys[i]}\t{captions.texts[i]}" for i in within.queries.tolist()),
                within.ranks,
            )
        }
        if pivot_side is not None and lang != pivot:
            across = positive_ranks(emb, pivot_side[2], ids, pivot_side[1], same_set=False)
            metrics.update(_scores("text_to_pivot_text", across, task.recall_at))
            metrics.update(pivot=pivot, n_pivot_queries=len(across.queries))
            views[lang]["pivot_text_queries"] = SampleRanks.build(
                (
                    f"{pivot}\t{captions.image_keys[i]}\t{captions.texts[i]}"
                    for i in across.queries.tolist()
                ),
                across.ranks,
            )
        per_language[lang] = metrics
        progress(
            f"{task.name} [{lang}] text->text R@1={shown(metrics.get('text_to_text_R@1'))}"
            + (
                f", ->{pivot} R@1={shown(metrics.get('text_to_pivot_text_R@1'))}"
                if "pivot" in metrics
                else ""
            )
        )
    tag_languages(per_language, task, dataset)
    return {
        "kind": task.kind,
        "languages": per_language,
        "views": views,
        "skipped": {},
        "data": {"captions": dataset.fingerprint(), "pivot": pivot},
    }
