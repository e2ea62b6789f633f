"""Text-only cross-lingual alignment: bitext retrieval (task kind ``bitext_retrieval``).

As in the text-embedding literature (LASER's Tatoeba similarity search, arXiv:1812.10464; LaBSE,
arXiv:2007.01852; MTEB's bitext mining, arXiv:2210.07316): each sentence of a language retrieves
its translation among *all* sentences of the pivot language (``pivot``, default ``en``) by cosine
similarity of the text tower's embeddings, and each pivot sentence retrieves its translation among
all sentences of the language. Ties go to the lower index
(:func:`~mclip.eval.zeroshot.true_class_ranks`).
Per language:

* ``bitext_to_pivot_acc@k``: the fraction of the language's sentences (with a translation in the
  pivot) whose translation ranks below k; view ``bitext_to_pivot``.
* ``bitext_from_pivot_acc@k``: the same from the pivot's sentences; view ``bitext_from_pivot``.
* ``bitext_acc@k``: both directions' queries together (their mean when both directions have the
  same number of queries, as on Flores and Tatoeba); view ``bitext``.
* counts ``n_pairs`` (matched sentences), ``n_sentences`` / ``n_pivot_sentences`` (the candidates
  on each side) and ``sentences_dropped`` (rows the reader skipped, both sides).

Read beside an image task of the same languages: a language with high bitext accuracy but low
image accuracy has a text tower that aligns it with the pivot and an image side that does not
carry it; both low point at the text tower. Data: :mod:`mclip.eval.datasets.bitext`.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from mclip.config import ConfigError
from mclip.eval.datasets.bitext import all_skipped, matched, open_bitext
from mclip.eval.provenance import tag_languages
from mclip.eval.samples import SampleRanks
from mclip.eval.zeroshot import true_class_ranks

QUERY_CHUNK = 4096  # query rows scored at once: QUERY_CHUNK x candidates floats


def translation_ranks(
    queries: torch.Tensor, candidates: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """Rank of each query's translation among all candidates (0 = nearest), ties to the lower
    index.

    queries [n, d], candidates [m, d] (L2-normalised float32), targets LongTensor [n] in [0, m)
    -> LongTensor [n]. Memory: :data:`QUERY_CHUNK` x m scores at a time.
    """
    ranks = torch.empty(len(targets), dtype=torch.long)
    for start in range(0, len(targets), QUERY_CHUNK):
        scores = queries[start : start + QUERY_CHUNK].float() @ candidates.float().T
        ranks[start : start + QUERY_CHUNK] = true_class_ranks(
            scores, targets[start : start + QUERY_CHUNK]
        )
    return ranks


def run_bitext(
    task: Any, images: Any, text: Any, progress: Callable[[str], None]
) -> dict[str, Any]:
    """Bitext retrieval against the pivot for each of the task's languages (``images`` unused:
    a text-only task)."""
    data = open_bitext(task.sentences, task.split or None)
    pivot = task.pivot
    available = data.languages()
    if pivot not in available:
        raise ConfigError(
            f"task '{task.name}': the pivot '{pivot}' has no sentences in "
            f"{data.description} (it has: {', '.join(available)}); set pivot "
            f"(--pivot) to one of them"
        )
    languages = [
        lang for lang in task.select_languages(available, data.description) if lang != pivot
    ]
    per_language, views, not_scored = {}, {}, []
    pivot_embeddings: dict[tuple[str, ...], torch.Tensor] = {}  # a pivot side encoded once
    for lang in languages:
        own, pivot_side = data.pair(lang, pivot)
        to_query, to_target = matched(own, pivot_side)
        from_query, from_target = matched(pivot_side, own)
        if not to_query:
            progress(
                f"{task.name} [{lang}] no sentence shares an id with the pivot '{pivot}': "
                f"not scored"
            )
            not_scored.append(lang)
            continue
        key = tuple(pivot_side.texts)
        if key not in pivot_embeddings:
            pivot_embeddings[key] = text.encode(pivot_side.texts, pivot)
        own_emb, pivot_emb = text.encode(own.texts, lang), pivot_embeddings[key]
        to_ranks = translation_ranks(own_emb[to_query], pivot_emb, torch.tensor(to_target))
        from_ranks = translation_ranks(pivot_emb[from_query], own_emb, torch.tensor(from_target))
        # identities name the direction, the other language, the id and the text: two runs pair
        # sample by sample only on the same sentences against the same pivot
        to_ids = [f">{pivot}\t{own.ids[i]}\t{own.texts[i]}" for i in to_query]
        from_ids = [f"<{lang}\t{pivot_side.ids[i]}\t{pivot_side.texts[i]}" for i in from_query]
        views[lang] = {
            "bitext_to_pivot": SampleRanks.build(to_ids, to_ranks),
            "bitext_from_pivot": SampleRanks.build(from_ids, from_ranks),
            "bitext": SampleRanks.build(to_ids + from_ids, torch.cat([to_ranks, from_ranks])),
        }
        metrics: dict[str, Any] = {}
        for k in task.top_k:
            metrics[f"bitext_acc@{k}"] = float((views[lang]["bitext"].ranks < k).mean())
            metrics[f"bitext_to_pivot_acc@{k}"] = float((to_ranks < k).double().mean())
            metrics[f"bitext_from_pivot_acc@{k}"] = float((from_ranks < k).double().mean())
        metrics.update(
            pivot=pivot,
            n_pairs=len(to_query),
            n_sentences=len(own.texts),
            n_pivot_sentences=len(pivot_side.texts),
            sentences_dropped=all_skipped([own, pivot_side]),
        )
        per_language[lang] = metrics
        progress(
            f"{task.name} [{lang}] bitext acc@1 ->{pivot} "
            f"{metrics.get('bitext_to_pivot_acc@1', 0):.4f}, {pivot}-> "
            f"{metrics.get('bitext_from_pivot_acc@1', 0):.4f} ({len(to_query)} pairs)"
        )
    tag_languages(per_language, task, data)
    result = {
        "kind": task.kind,
        "languages": per_language,
        "views": views,
        "skipped": dict(getattr(data, "skipped", {})),  # rows without a language (TSV)
        "data": {"sentences": data.fingerprint(), "pivot": pivot},
    }
    if not_scored:
        result["not_scored"] = not_scored  # languages without an id the pivot has
    return result
