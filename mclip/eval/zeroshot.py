"""Zero-shot classification: a text classifier per language and its metrics.

Each class embedding is the normalised mean of its normalised template embeddings (CLIP,
arXiv:2103.00020). Classes without a name in a language are removed for that language
(Babel-ImageNet protocol, arXiv:2306.08658), and so are the images of those classes; the result
says how many classes and images each language kept. Ties between classes (duplicate names give
identical classifier rows) go to the lower class index.

Metrics come from the rank of each image's true class (:func:`true_class_ranks`), which is also
what the bootstrap intervals resample (:mod:`mclip.eval.bootstrap`); the tests check them against
torchmetrics' top-k accuracy and scikit-learn's balanced accuracy.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F


def fill_template(template: str, name: str) -> str:
    """Put a class name into a template: ``{c}`` (CLIP_benchmark) or ``{}`` (Babel-ImageNet)."""
    if "{c}" in template:
        return template.replace("{c}", name)
    if "{}" in template:
        return template.replace("{}", name)
    return f"{template} {name}".strip()


def prompt_embeddings(
    encode_text: Callable[[list[str]], torch.Tensor],
    class_names: Sequence[str],
    templates: Sequence[str],
    batch_size: int = 256,
) -> torch.Tensor:
    """Normalised embeddings [C, T, d] of every class name in every template.

    Identical names share one computation, so duplicate classes get bit-identical rows.
    """
    unique = list(dict.fromkeys(class_names))
    prompts = [fill_template(t, name) for name in unique for t in templates]
    chunks = [
        encode_text(prompts[i : i + batch_size]).float() for i in range(0, len(prompts), batch_size)
    ]
    embeddings = F.normalize(torch.cat(chunks), dim=-1).view(len(unique), len(templates), -1)
    where = {name: i for i, name in enumerate(unique)}
    return embeddings[torch.tensor([where[name] for name in class_names])]


def build_classifier(
    encode_text: Callable[[list[str]], torch.Tensor],
    class_names: Sequence[str],
    templates: Sequence[str],
    batch_size: int = 256,
) -> torch.Tensor:
    """Class embeddings [C, d] (L2-normalised): the mean of each class's template embeddings."""
    return classifier_of(prompt_embeddings(encode_text, class_names, templates, batch_size))


def classifier_of(embeddings: torch.Tensor) -> torch.Tensor:
    """[C, T, d] normalised prompt embeddings -> the normalised mean over templates [C, d]."""
    return F.normalize(embeddings.mean(1), dim=-1)


PROMPT_SENSITIVE = 0.10
"""A language whose single-template acc@1 values span at least this much is flagged."""


def template_sensitivity(
    image_emb: torch.Tensor,
    labels: torch.Tensor,
    embeddings: torch.Tensor,
    templates: Sequence[str],
) -> dict[str, Any]:
    """acc@1 of each template alone and their spread, from the embeddings already computed.

    image_emb [N, d] normalised, labels [N] in [0, C), embeddings [C, T, d] normalised. Returns
    ``template_acc@1`` ({template: fraction}), ``acc@1_template_min`` / ``_max`` / ``_std``
    (population std) and ``prompt_sensitive`` (max - min >= :data:`PROMPT_SENSITIVE`).
    """
    scores = []
    for t in range(len(templates)):
        logits = image_emb.float() @ embeddings[:, t].to(image_emb.device).T
        scores.append((true_class_ranks(logits, labels) == 0).double().mean().item())
    values = torch.tensor(scores, dtype=torch.float64)
    spread = float(values.max() - values.min())
    return {
        "template_acc@1": dict(zip(templates, scores)),
        "acc@1_template_min": float(values.min()),
        "acc@1_template_max": float(values.max()),
        "acc@1_template_std": float(values.std(unbiased=False)),
        "prompt_sensitive": spread >= PROMPT_SENSITIVE - 1e-12,
    }


def true_class_ranks(logits: torch.Tensor, labels: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Rank of each image's true class (0 = predicted at top-1), ties to the lower class index.

    logits [N, C], labels LongTensor [N] in [0, C) -> LongTensor [N]: the number of classes that
    score higher than the true class, plus those that score the same with a lower index. The same
    rule as :func:`~mclip.eval.ranking.tie_free_scores`, without sorting (O(N * C), rows in
    chunks of ``chunk``). acc@k is the fraction of ranks below k.
    """
    labels = labels.to(logits.device).long()
    ranks = torch.empty(logits.shape[0], dtype=torch.long, device=logits.device)
    class_index = torch.arange(logits.shape[1], device=logits.device)
    for start in range(0, logits.shape[0], chunk):
        rows, y = logits[start : start + chunk], labels[start : start + chunk]
        true = rows.gather(1, y[:, None])
        above = (rows > true) | ((rows == true) & (class_index[None, :] < y[:, None]))
        ranks[start : start + chunk] = above.sum(1)
    return ranks


def metrics_from_ranks(
    ranks: torch.Tensor, labels: torch.Tensor, n_classes: int, top_k: Sequence[int] = (1, 5)
) -> dict[str, float | None]:
    """acc@k (micro) and mean per-class recall from true-class ranks.

    ranks, labels: LongTensor [N] (ranks from :func:`true_class_ranks`). acc@k with k larger than
    ``n_classes`` is None (not applicable: CLIP_benchmark reports acc5 as NaN under 5 classes).
    Returns fractions in [0, 1].
    """
    out: dict[str, float | None] = {}
    for k in top_k:
        out[f"acc@{k}"] = None if k > n_classes else (ranks < k).double().mean().item()
    out["mean_per_class_recall"] = per_class_recall(ranks == 0, labels, n_classes)
    return out


def zeroshot_metrics(
    logits: torch.Tensor, labels: torch.Tensor, top_k: Sequence[int] = (1, 5)
) -> dict[str, float | None]:
    """acc@k (micro) and mean per-class recall (macro over classes present in ``labels``).

    logits [N, C], labels LongTensor [N] in [0, C). Ties go to the lower class index. acc@k with
    k larger than C is None (not applicable). Returns fractions in [0, 1].
    """
    labels = labels.to(logits.device)
    return metrics_from_ranks(true_class_ranks(logits, labels), labels, logits.shape[1], top_k)


def mean_per_class_recall(predicted: torch.Tensor, labels: torch.Tensor, n_classes: int) -> float:
    """Recall of each class that has an image in ``labels``, averaged over those classes.

    predicted, labels: LongTensor [N] in [0, n_classes). A class with no image is left out even
    when it is predicted (it has no recall), as in scikit-learn's ``balanced_accuracy_score``,
    which CLIP_benchmark reports. Returns a fraction in [0, 1].
    """
    return per_class_recall(predicted == labels, labels, n_classes)


def per_class_recall(hits: torch.Tensor, labels: torch.Tensor, n_classes: int) -> float:
    """Mean over the classes present in ``labels`` [N] of the fraction of hits [N] (bool)."""
    labels = labels.to(hits.device)
    support = torch.bincount(labels, minlength=n_classes)
    correct = torch.bincount(labels[hits], minlength=n_classes)
    present = support > 0
    return (correct[present].double() / support[present]).mean().item()


class LanguageScores(NamedTuple):
    """What one language's zero-shot run produced.

    metrics: acc@k, mean_per_class_recall (fractions), n_classes, n_images (what was kept);
    ranks [n_images]: the rank of each kept image's true class among the kept classes;
    labels [n_images]: that class, renumbered over the kept classes; kept_images bool [N]: which
    of the input images were kept (their class has a name in this language).
    """

    metrics: dict[str, Any]
    ranks: torch.Tensor
    labels: torch.Tensor
    kept_images: torch.Tensor


def classify_language(
    image_emb: torch.Tensor,
    labels: torch.Tensor,
    encode_text: Callable[[list[str]], torch.Tensor],
    class_names: Sequence[str | None],
    templates: Sequence[str],
    top_k: Sequence[int] = (1, 5),
    template_scores: bool = True,
) -> LanguageScores:
    """Zero-shot scores of one language, with the per-image ranks the intervals are built from.

    image_emb [N, d] normalised, labels [N] indices into ``class_names``; a name that is None or
    empty means "no translation": that class and its images are left out. With several
    templates and ``template_scores``, also each template's own acc@1 and their spread
    (:func:`template_sensitivity`).
    """
    kept = [i for i, name in enumerate(class_names) if name]
    kept_images = torch.zeros(labels.shape[0], dtype=torch.bool)
    empty = torch.zeros(0, dtype=torch.long)
    if not kept:
        return LanguageScores({"n_classes": 0, "n_images": 0}, empty, empty, kept_images)
    embeddings = prompt_embeddings(encode_text, [name for name in class_names if name], templates)
    classifier = classifier_of(embeddings)
    remap = torch.full((len(class_names),), -1, dtype=torch.long)
    remap[torch.tensor(kept)] = torch.arange(len(kept))
    new_labels = remap[labels.cpu()]
    kept_images = new_labels >= 0
    new_labels = new_labels[kept_images]
    logits = image_emb[kept_images.to(image_emb.device)].float() @ classifier.to(image_emb.device).T
    ranks = true_class_ranks(logits, new_labels).cpu()
    metrics = metrics_from_ranks(ranks, new_labels, len(kept), top_k) if len(ranks) else {}
    metrics.update(n_classes=len(kept), n_images=int(kept_images.sum()))
    if template_scores and len(templates) > 1 and len(ranks):
        metrics.update(
            template_sensitivity(
                image_emb[kept_images.to(image_emb.device)], new_labels, embeddings, templates
            )
        )
    return LanguageScores(metrics, ranks, new_labels, kept_images)


def evaluate_language(
    image_emb: torch.Tensor,
    labels: torch.Tensor,
    encode_text: Callable[[list[str]], torch.Tensor],
    class_names: Sequence[str | None],
    templates: Sequence[str],
    top_k: Sequence[int] = (1, 5),
) -> dict[str, float]:
    """Zero-shot metrics for one language (the ``metrics`` of :func:`classify_language`).

    image_emb [N, d] normalised, labels [N] indices into ``class_names``; a name that is None or
    empty means "no translation": that class and its images are left out. Adds ``n_classes``
    and ``n_images`` (what was kept) to the metrics.
    """
    return classify_language(image_emb, labels, encode_text, class_names, templates, top_k).metrics
