"""The names of metrics in tables: each task kind's headline metrics, their short labels, and how
a value is shown (:func:`format_value` in tables, :func:`shown` in progress lines)."""

from __future__ import annotations

# Task kinds without texts: their one "language" is the key "images", not a language.
TEXT_FREE_KINDS = ("image_to_image",)
# Metrics shown in the table, per task kind, in order.
HEADLINE = {
    "zeroshot_classification": ("acc@1", "acc@5", "mean_per_class_recall", "n_classes"),
    "retrieval": (
        "text_to_image_R@1",
        "text_to_image_R@5",
        "image_to_text_R@1",
        "image_to_text_R@5",
    ),
    "topic_matching": ("topic_acc@1", "text_only_topic_acc@1", "n_topics"),
    "bitext_retrieval": ("bitext_to_pivot_acc@1", "bitext_from_pivot_acc@1", "bitext_acc@1"),
    "image_to_image": ("image_to_image_R@1", "image_to_image_R@5", "image_to_image_mAP"),
    "text_to_text": (
        "text_to_text_R@1",
        "text_to_text_mAP",
        "text_to_pivot_text_R@1",
        "text_to_pivot_text_mAP",
    ),
}
SHORT = {
    "acc@1": "acc@1",
    "acc@5": "acc@5",
    "mean_per_class_recall": "mpcr",
    "n_classes": "classes",
    "text_to_image_R@1": "t2i R@1",
    "text_to_image_R@5": "t2i R@5",
    "image_to_text_R@1": "i2t R@1",
    "image_to_text_R@5": "i2t R@5",
    "topic_acc@1": "topic acc@1",
    "text_only_topic_acc@1": "text-only acc@1",
    "n_topics": "topics",
    "bitext_to_pivot_acc@1": "bitext ->pivot",
    "bitext_from_pivot_acc@1": "bitext pivot->",
    "bitext_acc@1": "bitext acc@1",
    "image_to_image_R@1": "i2i R@1",
    "image_to_image_R@5": "i2i R@5",
    "image_to_image_mAP": "i2i mAP",
    "text_to_text_R@1": "t2t R@1",
    "text_to_text_mAP": "t2t mAP",
    "text_to_pivot_text_R@1": "t2t ->pivot R@1",
    "text_to_pivot_text_mAP": "t2t ->pivot mAP",
}


def headline(kind: str) -> tuple[str, ...]:
    """The table's metrics for a task kind (an unknown kind has none)."""
    return HEADLINE.get(kind, ())


def short_name(metric: str) -> str:
    """A metric's column label (its own name where no short one is defined)."""
    return SHORT.get(metric, metric)


def format_value(value, key: str = "", ci: tuple[float, float] | None = None) -> str:
    """A table cell: percent with one decimal (``61.2``), integers for counts, ``–`` for None (not
    applicable); with an interval (fractions) ``61.2 ±2.3`` (half its width) when it is about
    symmetric around the value, else its bounds ``2.1 [0.0, 6.2]`` (near 0 or 100%)."""
    if value is None:
        return "–"
    if key.startswith("n_"):
        return str(int(value))
    text = f"{100 * value:.1f}"
    if ci is not None:
        below, above = value - ci[0], ci[1] - value
        if abs(above - below) <= 0.25 * (ci[1] - ci[0]):
            text += f" ±{100 * (ci[1] - ci[0]) / 2:.1f}"
        else:
            text += f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
    return text


def shown(value: float | None) -> str:
    """A metric for a progress line: 4 decimals, ``n/a`` when not computed (0.0 is 0.0000)."""
    return "n/a" if value is None else f"{value:.4f}"
