"""Charts of per-language results for one or several models (matplotlib, Agg backend).

Per task, a chart of its main metrics per language, one colour per model, whiskers = the 95%
bootstrap interval where the file has one. Languages are grouped by resource group (Babel-ImageNet's
classes per language) when they have one.

* Up to :data:`MAX_BAR_LANGUAGES` languages (and :data:`MAX_BARS` bars per panel): a grouped bar
  chart, one bar group per language, groups of languages separated by a dashed line and labelled
  on top; one panel per metric, stacked.
* More: a dot plot, one row per language, sorted within its resource group by the baseline's (the
  first model's) value, dots per model with horizontal whiskers; one column per metric, sharing
  the rows; tall (about 0.17 inch per language).
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

from mclip.eval.metric_names import short_name
from mclip.eval.figures import pyplot, save_figure
from mclip.eval.results import GROUP_ORDER, interval_of, language_groups

CHART_METRICS = {
    "zeroshot_classification": ("acc@1",),
    "retrieval": ("text_to_image_R@1", "image_to_text_R@1"),
    "topic_matching": ("topic_acc@1", "text_only_topic_acc@1"),
    "bitext_retrieval": ("bitext_to_pivot_acc@1", "bitext_from_pivot_acc@1"),
    "image_to_image": ("image_to_image_R@1", "image_to_image_mAP"),
    "text_to_text": ("text_to_text_R@1", "text_to_pivot_text_R@1"),
}
MAX_BAR_LANGUAGES = 40
MAX_BARS = 120
_ROW = 0.17  # inches per dot-plot row
_BAR_HEIGHT = 3.4  # inches per bar panel


def chart_metrics(task: dict) -> list[str]:
    """The metrics charted for a task: those of :data:`CHART_METRICS` its languages have."""
    present = {k for m in task["languages"].values() for k in m}
    return [m for m in CHART_METRICS.get(task["kind"], ()) if m in present]


def _series(entries: list[tuple[str, dict]], task_name: str, metric: str) -> list[tuple]:
    """[(model name, {lang: (value %, low %, high %)})] for the models that have the task."""
    out = []
    for name, report in entries:
        task = report["tasks"].get(task_name)
        if task is None:
            continue
        values = {}
        for lang, metrics in task["languages"].items():
            value = metrics.get(metric)
            if value is None:
                continue
            ci = interval_of(metrics, metric)
            low, high = (100 * ci[0], 100 * ci[1]) if ci else (None, None)
            values[lang] = (100 * value, low, high)
        out.append((name, values))
    return out


def _blocks(entries: list[tuple[str, dict]], task_name: str) -> list[tuple[str | None, list[str]]]:
    """Languages of the task in blocks [(resource group or None, [lang])], groups smallest
    first, languages in the order the files list them."""
    tasks = [r["tasks"][task_name] for _, r in entries if task_name in r["tasks"]]
    languages = list(dict.fromkeys(lang for t in tasks for lang in t["languages"]))
    group_of = language_groups(tasks)
    if not group_of:
        return [(None, languages)]
    groups = [g for g in GROUP_ORDER if g in group_of.values()]
    groups += sorted(set(group_of.values()) - set(groups))
    blocks = [(g, [lang for lang in languages if group_of.get(lang) == g]) for g in groups]
    rest = [lang for lang in languages if lang not in group_of]
    return blocks + ([("no group", rest)] if rest else [])


def _group_label(group: str | None, n: int) -> str:
    if group is None:
        return ""
    if group in GROUP_ORDER:
        return f"{group.replace('<=', '≤')} classes ({n} lang.)"
    return f"{group} ({n} lang.)"


def uses_dots(n_languages: int, n_models: int) -> bool:
    """Whether a task with this many languages and models is drawn as a dot plot."""
    return n_languages > MAX_BAR_LANGUAGES or n_languages * n_models > MAX_BARS


def _draw_bars(ax, blocks, series, metric: str) -> None:
    n_models = len(series)
    width = min(0.8, 0.35 + 0.25 * n_models) / n_models
    positions, x, separators, centres = {}, 0.0, [], []
    for i, (group, langs) in enumerate(blocks):
        if i:  # a half-slot gap between blocks, a dashed line in its middle
            separators.append(x - 0.25)
            x += 0.5
        start = x
        for lang in langs:
            positions[lang] = x
            x += 1
        centres.append(((start + x - 1) / 2, _group_label(group, len(langs))))
    for m, (name, values) in enumerate(series):
        langs = [lang for lang in positions if lang in values]
        xs = [positions[lang] + width * (m + 0.5 - n_models / 2) for lang in langs]
        ys = [values[lang][0] for lang in langs]
        ax.bar(xs, ys, width * 0.92, color=f"C{m % 10}", label=name, zorder=2)
        with_ci = [
            (x_, v) for x_, v in zip(xs, (values[lang] for lang in langs)) if v[1] is not None
        ]
        if with_ci:
            ax.errorbar(
                [p for p, _ in with_ci],
                [v[0] for _, v in with_ci],
                yerr=[[v[0] - v[1] for _, v in with_ci], [v[2] - v[0] for _, v in with_ci]],
                fmt="none",
                ecolor="black",
                elinewidth=0.8,
                capsize=1.5,
                zorder=3,
            )
    for sep in separators:
        ax.axvline(sep, color="0.5", linestyle="--", linewidth=0.8)
    many = len(positions) > 16
    ax.set_xticks(
        list(positions.values()),
        list(positions),
        rotation=90 if many else 0,
        fontsize=8 if many else 9,
    )
    ax.set_xlim(-0.7, x - 0.3)
    ax.set_ylim(0, 100)
    ax.set_ylabel(f"{short_name(metric)} (%)")
    ax.grid(axis="y", alpha=0.3, zorder=0)
    if any(label for _, label in centres):
        top = ax.secondary_xaxis("top")
        top.set_xticks([c for c, _ in centres], [label for _, label in centres], fontsize=8)
        top.tick_params(length=0)


def _dot_rows(blocks, base: dict) -> tuple[list, list]:
    """Row layout of a dot plot: [(y, label, is_header)], and [(y, lang)] for the languages,
    sorted within each block by the baseline's value ``base[lang][0]`` (descending; missing
    last)."""
    rows: list[tuple[float, str, bool]] = []
    lang_rows: list[tuple[float, str]] = []
    y: float = 0
    for group, langs in blocks:
        if group is not None:
            rows.append((y, f"{_group_label(group, len(langs))}", True))
            y += 1
        for lang in sorted(langs, key=lambda lang: -base.get(lang, (-1,))[0]):
            rows.append((y, lang, False))
            lang_rows.append((y, lang))
            y += 1
        y += 0.5
    return rows, lang_rows


def _draw_dots(ax, rows, lang_rows, series, metric: str, labels: bool) -> None:
    n_models = len(series)
    step = min(0.22, 0.6 / max(n_models, 1))
    for i, (y, _) in enumerate(lang_rows):
        if i % 2:
            ax.axhspan(y - 0.5, y + 0.5, color="0.93", zorder=0, linewidth=0)
    for y, _, header in rows:
        if header:
            ax.axhline(y, color="0.6", linewidth=0.6, zorder=1)
    for m, (name, values) in enumerate(series):
        offset = (m - (n_models - 1) / 2) * step
        pts = [(values[lang], y + offset) for y, lang in lang_rows if lang in values]
        ax.plot(
            [v[0] for v, _ in pts],
            [y for _, y in pts],
            "o",
            markersize=3.2,
            color=f"C{m % 10}",
            label=name,
            zorder=3,
            linestyle="none",
        )
        ci = [(v, y) for v, y in pts if v[1] is not None]
        if ci:
            ax.errorbar(
                [v[0] for v, _ in ci],
                [y for _, y in ci],
                xerr=[[v[0] - v[1] for v, _ in ci], [v[2] - v[0] for v, _ in ci]],
                fmt="none",
                ecolor=f"C{m % 10}",
                elinewidth=0.9,
                alpha=0.8,
                zorder=2,
            )
    ax.set_ylim(max(y for y, _, _ in rows) + 0.8, -0.8)
    ax.set_xlim(0, 100)
    ax.set_yticks([y for y, _, _ in rows], [label for _, label, _ in rows], fontsize=7)
    for tick, (_, _, header) in zip(ax.get_yticklabels(), rows):
        if header:
            tick.set_fontweight("bold")
            tick.set_fontsize(8)
    if not labels:  # a later column: the rows are labelled on the first one (and on the right)
        ax.tick_params(axis="y", labelleft=False)
    ax.tick_params(axis="y", length=0)
    ax.tick_params(axis="x", labeltop=True, top=True, labelsize=8)
    ax.grid(axis="x", alpha=0.4, zorder=0)
    ax.set_xlabel(f"{short_name(metric)} (%)")


def _legend(fig, axes, n_models: int, title: str) -> None:
    """The models' colours above the panels, under ``title`` (wrapped to the figure width)."""
    handles, labels = [], []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    title = textwrap.fill(title, max(40, int(fig.get_figwidth() * 13)))
    if handles:
        fig.legend(
            handles,
            labels,
            loc="outside upper center",
            ncols=min(n_models, 4),
            fontsize=9,
            frameon=False,
            title=title,
            title_fontsize=10,
        )
    else:
        fig.suptitle(title, fontsize=10)


def task_chart(entries: list[tuple[str, dict]], task_name: str, path: str | Path) -> Path | None:
    """Chart one task of ``entries`` ([(model name, results document)], the first is the baseline)
    into ``path`` (PNG): bars for few languages, a sorted dot plot for many (module docstring).
    Returns the path, or None when the task has no charted metric."""
    plt = pyplot()
    task = next(r["tasks"][task_name] for _, r in entries if task_name in r["tasks"])
    metrics = chart_metrics(task)
    if not metrics:
        return None
    blocks = _blocks(entries, task_name)
    n_languages = sum(len(langs) for _, langs in blocks)
    n_models = sum(task_name in r["tasks"] for _, r in entries)
    title = (
        f"{task_name} ({task['kind'].replace('_', ' ')}) per language; whiskers: 95% "
        "bootstrap interval"
    )
    if uses_dots(n_languages, n_models):
        first = _series(entries, task_name, metrics[0])[0]
        rows, lang_rows = _dot_rows(blocks, first[1])
        height = 1.6 + _ROW * len(rows)
        fig, axes = plt.subplots(
            1,
            len(metrics),
            figsize=(2.4 + 5.2 * len(metrics), height),
            sharey=True,
            squeeze=False,
            layout="constrained",
        )
        for i, (ax, metric) in enumerate(zip(axes[0], metrics)):
            _draw_dots(ax, rows, lang_rows, _series(entries, task_name, metric), metric, i == 0)
            ax.set_title(f"{short_name(metric)} (%)", fontsize=10)
        if len(metrics) > 1:
            axes[0, -1].tick_params(axis="y", labelright=True)
        title += f"; sorted by {first[0]}"
    else:
        width = min(30.0, max(7.0, 1.5 + (n_languages + len(blocks)) * (0.14 * n_models + 0.2)))
        fig, axes = plt.subplots(
            len(metrics),
            1,
            figsize=(width, 0.6 + _BAR_HEIGHT * len(metrics)),
            squeeze=False,
            layout="constrained",
        )
        for ax, metric in zip(axes[:, 0], metrics):
            _draw_bars(ax, blocks, _series(entries, task_name, metric), metric)
    _legend(fig, axes.flatten(), n_models, title)
    save_figure(fig, path)
    return Path(path)


def overview_chart(entries: list[tuple[str, dict]], path: str | Path) -> Path:
    """One figure with a panel per task: its first charted metric per language, bars or a dot
    plot as :func:`task_chart` would choose, whiskers = 95% intervals. Returns ``path``."""
    plt = pyplot()
    tasks = list(dict.fromkeys(t for _, r in entries for t in r["tasks"]))
    panels: list[tuple[Any, ...]] = []
    for task_name in tasks:
        task = next(r["tasks"][task_name] for _, r in entries if task_name in r["tasks"])
        metrics = chart_metrics(task)
        if not metrics:
            continue
        blocks = _blocks(entries, task_name)
        n_languages = sum(len(langs) for _, langs in blocks)
        n_models = sum(task_name in r["tasks"] for _, r in entries)
        dots = uses_dots(n_languages, n_models)
        series = _series(entries, task_name, metrics[0])
        if dots:
            rows, lang_rows = _dot_rows(blocks, series[0][1])
            panels.append(
                (
                    task_name,
                    metrics[0],
                    True,
                    (rows, lang_rows),
                    series,
                    1.0 + _ROW * len(rows),
                    9.0,
                )
            )
        else:
            width = 1.5 + (n_languages + len(blocks)) * (0.14 * n_models + 0.2)
            panels.append(
                (
                    task_name,
                    metrics[0],
                    False,
                    blocks,
                    series,
                    _BAR_HEIGHT,
                    min(30.0, max(7.0, width)),
                )
            )
    if not panels:
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.text(0.5, 0.5, "no per-language metric to chart", ha="center", va="center")
        ax.axis("off")
        save_figure(fig, path)
        return Path(path)
    fig, axes = plt.subplots(
        len(panels),
        1,
        squeeze=False,
        layout="constrained",
        figsize=(max(p[6] for p in panels), 0.8 + sum(p[5] for p in panels)),
        gridspec_kw={"height_ratios": [p[5] for p in panels]},
    )
    for ax, (task_name, metric, dots, layout, series, _, _) in zip(axes[:, 0], panels):
        if dots:
            _draw_dots(ax, layout[0], layout[1], series, metric, True)
        else:
            _draw_bars(ax, layout, series, metric)
        ax.set_title(f"{task_name}: {short_name(metric)} (%)", fontsize=10, loc="left")
    _legend(fig, axes[:, 0], len(entries), "Per language; whiskers: 95% bootstrap interval")
    save_figure(fig, path)
    return Path(path)


def write_task_charts(
    entries: list[tuple[str, dict]], out_dir: str | Path, prefix: str = "chart"
) -> list[Path]:
    """:func:`task_chart` for every task into ``out_dir/<prefix>_<task>.png``; returns the paths."""
    out_dir = Path(out_dir)
    tasks = list(dict.fromkeys(t for _, r in entries for t in r["tasks"]))
    paths = []
    for task_name in tasks:
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", task_name)
        path = task_chart(entries, task_name, out_dir / f"{prefix}_{slug}.png")
        if path is not None:
            paths.append(path)
    return paths
