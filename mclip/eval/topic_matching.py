"""Topic matching (after MVL-SIB, arXiv:2502.12852, adapted to dual encoders).

MVL-SIB asks a vision-language model which of a few images shares a sentence's topic. A dual
encoder answers by similarity. Data: topics, each with a few images, and sentences about the
topics in many languages (:mod:`mclip.eval.datasets.topics`). Per language:

* **Image topic embedding** of topic t: the normalised mean of the normalised embeddings of t's
  images.
* ``topic_acc@1``: for each sentence, the rank of its true topic among all topics by cosine
  between the sentence embedding and the image topic embeddings, ties to the lower topic index
  (:func:`~mclip.eval.zeroshot.true_class_ranks`); the fraction of sentences with rank 0.
* ``text_only_topic_acc@1``: the same against **text topic embeddings**: the normalised mean of
  the normalised embeddings of t's sentences in the reference language (task key
  ``reference_language``, default ``en``). Leave-one-out: a sentence is never scored against a
  mean that holds itself or its own translation. A reference-language sentence is left out of its
  own topic's mean; where the data says which sentences are translations of each other
  (MVL-SIB's ``index_id``), a sentence in another language is scored with its reference
  translation left out of that translation's topic mean. (Without that, the text-only score would
  partly measure translation retrieval rather than topic matching.) A sentence whose own topic has
  no other reference sentence cannot be scored and is not counted (``n_sentences_text_only``).

The two read side by side: a language whose text-only accuracy is high but whose image accuracy is
low has a text tower that separates the topics and an image-text alignment that does not carry
them over; both low points at the text tower. ``mean_per_topic_recall`` and
``text_only_mean_per_topic_recall`` are the balanced versions (mean over topics of the per-topic
accuracy; SIB-200's topics are unbalanced). Also per language: ``n_sentences``, ``n_topics`` (the
topics ranked: those with an embedding), their ``_text_only`` counterparts, ``sentences_dropped``
(rows the reader skipped) and ``source_code`` (the language code as the data writes it).

A topic with no usable image (all unreadable, or cut by ``--limit``) has no image embedding: it is
not a candidate, and its sentences are not scored (the counts say so). Per-sample ranks are kept as
the views ``sentences`` and ``sentences_text_only`` (identities ``"{topic}\\t{sentence}"``,
labels the topic index) for bootstrap intervals and paired comparisons.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import torch
import torch.nn.functional as F

from mclip.config import ConfigError
from mclip.eval.datasets import TopicSentences, TopicSet, open_topics
from mclip.eval.provenance import tag_languages
from mclip.eval.samples import SampleRanks
from mclip.eval.zeroshot import per_class_recall, true_class_ranks


class TopicScores(NamedTuple):
    """The scored sentences of one language against one kind of topic embedding.

    ranks [n] LongTensor: rank of each scored sentence's true topic (0 = best); labels [n]: its
    topic index; scored [N] bool: which of the language's N sentences were scored; n_topics: how
    many topics were candidates.
    """

    ranks: torch.Tensor
    labels: torch.Tensor
    scored: torch.Tensor
    n_topics: int


def mean_embeddings(
    embeddings: torch.Tensor, labels: torch.Tensor, n_topics: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-topic sums of the L2-normalised ``embeddings`` [N, d] (float32) and counts.

    labels [N] in [0, n_topics). Returns (sums [n_topics, d], counts [n_topics] long); the topic
    embedding is ``F.normalize(sums)`` where the count is positive.
    """
    embeddings = F.normalize(embeddings.float(), dim=-1)
    sums = torch.zeros(n_topics, embeddings.shape[1]).index_add_(0, labels, embeddings)
    return sums, torch.bincount(labels, minlength=n_topics)


def rank_topics(
    sentence_emb: torch.Tensor,
    labels: torch.Tensor,
    sums: torch.Tensor,
    counts: torch.Tensor,
    left_out: torch.Tensor | None = None,
    left_out_emb: torch.Tensor | None = None,
) -> TopicScores:
    """Rank each sentence's true topic among the topic means by cosine, ties to the lower index.

    sentence_emb [N, d], labels [N]; sums [T, d] and counts [T] from :func:`mean_embeddings`.
    Leave-one-out: ``left_out`` [N] (long) is, per sentence, the topic of one member of the means
    to leave out of that topic's mean (-1: none), and ``left_out_emb`` [N, d] that member's
    embedding (rows with -1 are ignored). A topic with no member (count 0, or 1 whose member is
    left out) is no candidate; a sentence whose own topic is no candidate is not scored.
    """
    sentence_emb = F.normalize(sentence_emb.float(), dim=-1)
    n, n_topics = sentence_emb.shape[0], sums.shape[0]
    available = (counts > 0).unsqueeze(0).expand(n, n_topics).clone()
    scores = sentence_emb @ F.normalize(sums, dim=-1).T
    if left_out is not None and left_out_emb is not None:
        rows = (left_out >= 0).nonzero().flatten()
        topic = left_out[rows]
        rest = sums[topic] - F.normalize(left_out_emb[rows].float(), dim=-1)
        scores[rows, topic] = (sentence_emb[rows] * F.normalize(rest, dim=-1)).sum(-1)
        available[rows, topic] = counts[topic] > 1
    scores = scores.masked_fill(~available, float("-inf"))
    scored = available[torch.arange(n), labels]
    ranks = true_class_ranks(scores[scored], labels[scored])
    return TopicScores(ranks, labels[scored], scored, int((counts > 0).sum()))


def _accuracy(scores: TopicScores) -> float | None:
    return float((scores.ranks == 0).double().mean()) if len(scores.ranks) else None


def _balanced(scores: TopicScores, n_topics: int) -> float | None:
    return (
        per_class_recall(scores.ranks == 0, scores.labels, n_topics) if len(scores.ranks) else None
    )


def _view(sentences: TopicSentences, topics: list[str], scores: TopicScores) -> SampleRanks:
    kept = scores.scored.nonzero().flatten().tolist()
    return SampleRanks.build(
        (f"{topics[sentences.topics[j]]}\t{sentences.texts[j]}" for j in kept),
        scores.ranks,
        scores.labels,
    )


def run_topic_matching(
    task: Any, images: Any, text: Any, progress: Callable[[str], None]
) -> dict[str, Any]:
    """Topic matching per language (definitions in the module docstring).

    ``images``: the runner's ImageEmbeddings (``get(image_set)`` -> (emb [N, d], keys, labels,
    skipped)); ``text``: its TextEmbeddings (``encode(texts)`` -> normalised [len, d]), called
    once with the sentences of every evaluated language and of the reference language (and once
    more per language in its ``adapter_languages``, with that language's adapter on). Returns
    {"kind", "languages": {lang: metrics}, "views": {lang: {view: SampleRanks}}, "skipped",
    "data": {"images": fingerprint}}; accuracies are fractions in [0, 1].
    """
    topic_set: TopicSet = open_topics(task.sentences, task.images or None, split=task.split or None)
    reference = task.reference_language or "en"
    available = topic_set.languages()
    languages = task.select_languages(available, topic_set.description)
    if reference not in available:
        raise ConfigError(
            f"task '{task.name}': the reference language '{reference}' (for the "
            f"text-only topic embeddings) is not in {topic_set.description}; set "
            f"reference_language to one of: {', '.join(available)}"
        )
    # an unknown code is kept as written, so it is its own mclip code
    unmapped = [code for code in topic_set.unmapped_codes() if code in languages + [reference]]
    if unmapped:
        progress(
            f"{task.name}: language code(s) {', '.join(unmapped)} are not in mclip's "
            f"{topic_set.layout} table; reported as written"
        )

    image_emb, _, image_labels, skipped = images.get(topic_set)
    n_topics = len(topic_set.topics)
    image_sums, image_counts = mean_embeddings(
        image_emb, torch.tensor(image_labels, dtype=torch.long), n_topics
    )
    missing = [topic_set.topics[t] for t in range(n_topics) if image_counts[t] == 0]
    if missing:
        progress(
            f"{task.name}: topic(s) {', '.join(missing)} have no usable image: they are no "
            f"candidates and their sentences are not scored"
        )

    read = list(dict.fromkeys(languages + [reference]))
    sentences = {lang: topic_set.sentences(lang) for lang in read}
    for lang in read:
        if not sentences[lang].texts:
            raise ConfigError(
                f"task '{task.name}': no usable sentence in '{lang}' in "
                f"{sentences[lang].source or topic_set.description} (skipped: "
                f"{dict(sentences[lang].skipped) or 'none'})"
            )
    offsets: dict[str, int] = {}
    all_texts: list[str] = []
    for lang in read:
        offsets[lang] = len(all_texts)
        all_texts.extend(sentences[lang].texts)
    encoded: torch.Tensor = text.encode(all_texts)
    adapted: dict[str, torch.Tensor] = {
        lang: text.encode(sentences[lang].texts, lang)  # languages with an adapter
        for lang in read
        if lang in getattr(text, "adapter_languages", ())
    }

    def embeddings_of(lang: str) -> torch.Tensor:
        if lang in adapted:
            return adapted[lang]
        return encoded[offsets[lang] : offsets[lang] + len(sentences[lang].texts)]

    ref = sentences[reference]
    ref_emb, ref_labels = embeddings_of(reference), torch.tensor(ref.topics, dtype=torch.long)
    ref_sums, ref_counts = mean_embeddings(ref_emb, ref_labels, n_topics)
    ref_row = {item: j for j, item in reversed(list(enumerate(ref.items))) if item is not None}

    per_language, views = {}, {}
    for lang in languages:
        batch = sentences[lang]
        emb, labels = embeddings_of(lang), torch.tensor(batch.topics, dtype=torch.long)
        by_image = rank_topics(emb, labels, image_sums, image_counts)
        if lang == reference:
            rows = torch.arange(len(batch.texts))
        else:
            rows = torch.tensor(
                [ref_row.get(item, -1) if item is not None else -1 for item in batch.items],
                dtype=torch.long,
            )
        left_out = torch.where(rows >= 0, ref_labels[rows.clamp(min=0)], rows)
        by_text = rank_topics(
            emb, labels, ref_sums, ref_counts, left_out, ref_emb[rows.clamp(min=0)]
        )
        if not len(by_image.ranks):
            raise ConfigError(
                f"task '{task.name}': no sentence in '{lang}' has a topic with a "
                f"usable image in {topic_set.description}"
            )
        per_language[lang] = {
            "topic_acc@1": _accuracy(by_image),
            "text_only_topic_acc@1": _accuracy(by_text),
            "mean_per_topic_recall": _balanced(by_image, n_topics),
            "text_only_mean_per_topic_recall": _balanced(by_text, n_topics),
            "n_sentences": len(by_image.ranks),
            "n_topics": by_image.n_topics,
            "n_sentences_text_only": len(by_text.ranks),
            "n_topics_text_only": by_text.n_topics,
            "sentences_dropped": sum(batch.skipped.values()),
            "source_code": topic_set.source_code(lang),
        }
        views[lang] = {
            "sentences": _view(batch, topic_set.topics, by_image),
            "sentences_text_only": _view(batch, topic_set.topics, by_text),
        }
        text_only = per_language[lang]["text_only_topic_acc@1"]
        progress(
            f"{task.name} [{lang}] topics={by_image.n_topics} sentences={len(by_image.ranks)} "
            f"topic_acc@1={per_language[lang]['topic_acc@1']:.4f} text_only_topic_acc@1="
            f"{text_only if text_only is not None else float('nan'):.4f}"
        )
    skipped = dict(skipped)
    for counter in [topic_set.skipped] + [sentences[lang].skipped for lang in read]:
        for reason, count in counter.items():
            skipped[reason] = skipped.get(reason, 0) + count
    tag_languages(per_language, task, topic_set)
    return {
        "kind": task.kind,
        "languages": per_language,
        "views": views,
        "skipped": skipped,
        "data": {"images": topic_set.fingerprint()},
    }
