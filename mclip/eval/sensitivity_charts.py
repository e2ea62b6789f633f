"""How a score moves with one setting of the evaluation: embedding size (:func:`dims_chart`,
``mclip eval --embed-dims``) and prompt template (:func:`prompts_chart`, per-template acc@1)."""

from __future__ import annotations

from pathlib import Path

from mclip.eval.figures import pyplot, save_figure
from mclip.eval.metric_names import headline, short_name
from mclip.eval.results import dims_families


def dims_chart(entries: list[tuple[str, dict]], path: str | Path) -> Path:
    """Accuracy against embedding size (``mclip eval --embed-dims``): a panel per task scored at
    several sizes, its first headline metric's mean over languages (%) against the number of
    dimensions (log scale), a line per model. Returns ``path``."""

    plt = pyplot()
    bases = list(dict.fromkeys(b for _, r in entries for b in dims_families(r)))
    fig, axes = plt.subplots(
        1, len(bases), figsize=(4.5 * len(bases), 3.4), squeeze=False, layout="constrained"
    )
    for ax, base in zip(axes[0], bases):
        for name, report in entries:
            sized = dims_families(report).get(base)
            if not sized:
                continue
            metric = next(m for m in headline(sized[-1][1]["kind"]) if not m.startswith("n_"))
            points = [
                (size, 100 * task["mean"][metric])
                for size, task in sized
                if task.get("mean", {}).get(metric) is not None
            ]
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
            ax.set_ylabel(f"mean {short_name(metric)} (%)")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("embedding dimensions")
        ax.set_title(base, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    save_figure(fig, path)
    return Path(path)


def has_template_scores(report: dict) -> bool:
    """Whether any zero-shot language of ``report`` has per-template acc@1."""
    return any(
        "acc@1_template_min" in metrics
        for task in report["tasks"].values()
        for metrics in task["languages"].values()
    )


def prompts_chart(entries: list[tuple[str, dict]], path: str | Path) -> Path:
    """Prompt sensitivity: per task and language, the range of acc@1 over single templates (a
    bar from min to max) and the acc@1 of their averaged classifier (a dot), a colour per model;
    languages whose templates disagree by 10 points or more are starred. Returns ``path``."""
    plt = pyplot()
    rows = [
        (name, task_name, lang, metrics)
        for name, report in entries
        for task_name, task in report["tasks"].items()
        for lang, metrics in task["languages"].items()
        if "acc@1_template_min" in metrics
    ]
    labels = list(dict.fromkeys(f"{task} {lang}" for _, task, lang, _ in rows))
    models = list(dict.fromkeys(name for name, *_ in rows))
    fig, ax = plt.subplots(
        figsize=(6.5, 1.2 + 0.28 * len(labels) * max(1, len(models))), layout="constrained"
    )
    step = 0.7 / max(len(models), 1)
    for name, task_name, lang, metrics in rows:
        m = models.index(name)
        y = labels.index(f"{task_name} {lang}") + (m - (len(models) - 1) / 2) * step
        low, high = 100 * metrics["acc@1_template_min"], 100 * metrics["acc@1_template_max"]
        ax.plot(
            [low, high],
            [y, y],
            color=f"C{m % 10}",
            linewidth=4,
            alpha=0.5,
            label=name
            if (task_name, lang) == next((t, la) for n, t, la, _ in rows if n == name)
            else None,
        )
        if metrics.get("acc@1") is not None:
            ax.plot([100 * metrics["acc@1"]], [y], "o", color=f"C{m % 10}", markersize=4)
        if metrics.get("prompt_sensitive"):
            ax.text(high + 1, y, "*", va="center", fontsize=10)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylim(len(labels) - 0.5, -0.5)
    ax.set_xlim(0, 100)
    ax.set_xlabel("acc@1 (%): bar = single templates, min to max; dot = all templates")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    save_figure(fig, path)
    return Path(path)
