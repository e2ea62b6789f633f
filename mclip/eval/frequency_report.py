"""Recall by training frequency in reports: a Markdown table and a chart (``results_concepts.png``
for one model, ``comparison_concepts.png`` for several). The numbers come from
:mod:`mclip.eval.concept_frequency`."""

from __future__ import annotations

from pathlib import Path

from mclip.eval.concept_frequency import BIN_NAMES
from mclip.eval.metric_names import format_value
from mclip.eval.figures import pyplot, save_figure


def has_frequency_bins(report: dict) -> bool:
    """Whether any zero-shot language of ``report`` has recall by training frequency."""
    return any(
        f"n_classes_freq_{BIN_NAMES[0]}" in m
        for t in report["tasks"].values()
        for m in t["languages"].values()
    )


def frequency_table(report: dict) -> str:
    """Per task and language: the recall (%) of each training-frequency bin with its number of
    classes; a mean row per task over the languages that have the bin; "" when none has bins."""
    lines = []
    for name, task in report["tasks"].items():
        rows = {
            lang: m
            for lang, m in task["languages"].items()
            if f"n_classes_freq_{BIN_NAMES[0]}" in m
        }
        for lang, m in rows.items():
            cells = [
                f"{format_value(m[f'recall_freq_{b}'])} ({m[f'n_classes_freq_{b}']})"
                for b in BIN_NAMES
            ]
            lines.append(f"| {name} | {lang} | " + " | ".join(cells) + " |")
        if len(rows) > 1:
            means = []
            for b in BIN_NAMES:
                values = [
                    m[f"recall_freq_{b}"]
                    for m in rows.values()
                    if m[f"recall_freq_{b}"] is not None
                ]
                means.append(format_value(sum(values) / len(values)) if values else "–")
            lines.append(f"| {name} | **mean** | " + " | ".join(means) + " |")
    if not lines:
        return ""
    header = " | ".join(f"{b} captions" for b in BIN_NAMES)
    return "\n".join(
        [
            "Recall@1 by how many training captions name the class (mean per-class "
            "recall %, classes in the bin in parentheses)",
            "",
            f"| task | lang | {header} |",
            "|---|---|" + "---|" * len(BIN_NAMES),
            *lines,
        ]
    )


def frequency_chart(entries: list[tuple[str, dict]], path: str | Path) -> Path:
    """A panel per zero-shot task with bins: recall (%) against the training-frequency bin. One
    model: a thin line per language and the mean over languages bold; several: each model's
    mean."""
    plt = pyplot()
    tasks = list(
        dict.fromkeys(
            name
            for _, report in entries
            for name, task in report["tasks"].items()
            if any(f"n_classes_freq_{BIN_NAMES[0]}" in m for m in task["languages"].values())
        )
    )
    fig, axes = plt.subplots(
        1, max(1, len(tasks)), figsize=(4.6 * max(1, len(tasks)), 3.6), squeeze=False
    )
    x = list(range(len(BIN_NAMES)))
    for ax, name in zip(axes[0], tasks):
        for colour, (model, report) in enumerate(entries):
            languages = report["tasks"].get(name, {}).get("languages", {})
            series = {
                lang: [m.get(f"recall_freq_{b}") for b in BIN_NAMES]
                for lang, m in languages.items()
                if f"n_classes_freq_{BIN_NAMES[0]}" in m
            }
            if len(entries) == 1:
                for values in series.values():
                    ax.plot(
                        x,
                        [None if v is None else 100 * v for v in values],
                        color="0.75",
                        linewidth=0.8,
                        marker=".",
                    )
            mean = []
            for i in x:
                values = [v[i] for v in series.values() if v[i] is not None]
                mean.append(100 * sum(values) / len(values) if values else None)
            ax.plot(
                x,
                mean,
                color=f"C{colour}",
                linewidth=2,
                marker="o",
                label=f"{model} (mean of {len(series)} languages)",
            )
        ax.set_xticks(x, [f"{b}" for b in BIN_NAMES])
        ax.set_xlabel("training captions naming the class")
        ax.set_ylabel("recall@1 (%)")
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    return Path(path)
