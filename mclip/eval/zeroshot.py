"""Zero-shot classification: a text classifier per language and its metrics.

Each class embedding is the normalised mean of its normalised template embeddings (CLIP,
arXiv:2103.00020). Classes without a name in a language are removed for that language
(Babel-ImageNet protocol, arXiv:2306.08658), and so are the images of those classes; the result
says how many classes and images each language kept. Ties between classes (duplicate names give
identical classifier rows) go to the lower class index.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from mclip.eval.ranking import tie_free_scores


def fill_template(template: str, name: str) -> str:
    """Put a class name into a template: ``{c}`` (CLIP_benchmark) or ``{}`` (Babel-ImageNet)."""
    if "{c}" in template:
        return template.replace("{c}", name)
    if "{}" in template:
        return template.replace("{}", name)
    return f"{template} {name}".strip()


def build_classifier(encode_text: Callable[[list[str]], torch.Tensor], class_names: Sequence[str],
                     templates: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """Class embeddings [C, d] (L2-normalised) from names and templates.

    Identical names share one computation, so duplicate classes get bit-identical rows.
    """
    unique = list(dict.fromkeys(class_names))
    prompts = [fill_template(t, name) for name in unique for t in templates]
    chunks = [encode_text(prompts[i:i + batch_size]).float()
              for i in range(0, len(prompts), batch_size)]
    embeddings = F.normalize(torch.cat(chunks), dim=-1).view(len(unique), len(templates), -1)
    rows = F.normalize(embeddings.mean(1), dim=-1)
    where = {name: i for i, name in enumerate(unique)}
    return rows[torch.tensor([where[name] for name in class_names])]


def zeroshot_metrics(logits: torch.Tensor, labels: torch.Tensor, top_k: Sequence[int] = (1, 5)
                     ) -> dict[str, float | None]:
    """acc@k (micro) and mean per-class recall (macro over classes present in ``labels``).

    logits [N, C], labels LongTensor [N] in [0, C). Ties go to the lower class index. acc@k with
    k larger than C is None (not applicable). Returns fractions in [0, 1].
    """
    n_classes = logits.shape[1]
    scores = tie_free_scores(logits)
    labels = labels.to(scores.device)
    out = {}
    for k in top_k:
        if k > n_classes:  # not applicable (CLIP_benchmark reports acc5 as NaN under 5 classes)
            out[f"acc@{k}"] = None
            continue
        metric = MulticlassAccuracy(num_classes=n_classes, top_k=k, average="micro")
        out[f"acc@{k}"] = metric(scores, labels).item()
    out["mean_per_class_recall"] = mean_per_class_recall(scores.argmax(1), labels, n_classes)
    return out


def mean_per_class_recall(predicted: torch.Tensor, labels: torch.Tensor, n_classes: int) -> float:
    """Recall of each class that has an image in ``labels``, averaged over those classes.

    predicted, labels: LongTensor [N] in [0, n_classes). A class with no image is left out even
    when it is predicted (it has no recall), as in scikit-learn's ``balanced_accuracy_score``,
    which CLIP_benchmark reports. Returns a fraction in [0, 1].
    """
    support = torch.bincount(labels, minlength=n_classes)
    hits = torch.bincount(labels[predicted == labels], minlength=n_classes)
    present = support > 0
    return (hits[present].double() / support[present]).mean().item()


def evaluate_language(image_emb: torch.Tensor, labels: torch.Tensor,
                      encode_text: Callable[[list[str]], torch.Tensor],
                      class_names: Sequence[str | None], templates: Sequence[str],
                      top_k: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Zero-shot metrics for one language.

    image_emb [N, d] normalised, labels [N] indices into ``class_names``; a name that is None or
    empty means "no translation": that class and its images are left out. Adds ``n_classes``
    and ``n_images`` (what was kept) to the metrics.
    """
    kept = [i for i, name in enumerate(class_names) if name]
    if not kept:
        return {"n_classes": 0, "n_images": 0}
    classifier = build_classifier(encode_text, [class_names[i] for i in kept], templates)
    remap = torch.full((len(class_names),), -1, dtype=torch.long)
    remap[torch.tensor(kept)] = torch.arange(len(kept))
    new_labels = remap[labels.cpu()]
    keep_images = new_labels >= 0
    logits = image_emb[keep_images.to(image_emb.device)].float() @ classifier.to(image_emb.device).T
    out = zeroshot_metrics(logits, new_labels[keep_images], top_k) if keep_images.any() else {}
    out.update(n_classes=len(kept), n_images=int(keep_images.sum()))
    return out
