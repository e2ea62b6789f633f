"""Accuracy against cost over several models: a table with the Pareto front, and its chart.

Each results file's ``cost`` block (:mod:`mclip.eval.cost`) gives a model's cost; its accuracy is
the mean, over the tasks every compared model has, of each task's first headline metric averaged
over its languages (:func:`mean_accuracy`). For each measure of :data:`COST_MEASURES` a model is on
the Pareto front when no other model costs no more and scores no less, one of the two strictly
(:func:`pareto_front`). Throughput is shown, not put on a front: it depends on the device each
evaluation ran on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from mclip.eval.metric_names import headline


def _sum(a, b):
    return None if a is None or b is None else a + b


def _scaled(value, unit: float):
    return None if value is None else value / unit


COST_MEASURES: dict[str, tuple[str, Callable[[dict], float | None]]] = {
    "parameters": ("parameters (M)",
                   lambda c: _scaled(c.get("parameters", {}).get("total"), 1e6)),
    "gflops": ("GFLOPs per image + text",
               lambda c: _scaled(_sum(c.get("flops", {}).get("image"),
                                      c.get("flops", {}).get("text")), 1e9)),
    "bytes": ("bytes per embedding (fp32)",
              lambda c: c.get("embedding_bytes", {}).get("fp32")),
}


def mean_accuracy(report: dict, tasks: Sequence[str]) -> float | None:
    """The mean over ``tasks`` of each one's first headline metric, averaged over its languages
    (the report's ``mean``), a fraction; None when a task has no such mean."""
    values = []
    for name in tasks:
        task = report["tasks"][name]
        keys = [k for k in headline(task["kind"]) if not k.startswith("n_")]
        value = task.get("mean", {}).get(keys[0]) if keys else None
        if value is None:
            return None
        values.append(value)
    return sum(values) / len(values) if values else None


def pareto_front(points: Sequence[tuple[float | None, float | None]]) -> list[bool]:
    """For (cost, accuracy) points: whether each is on the front (no other point has cost <= and
    accuracy >= with one of them strict). A point with a None is not on it."""
    out = []
    for i, (cost, acc) in enumerate(points):
        if cost is None or acc is None:
            out.append(False)
            continue
        out.append(not any(j != i and c is not None and a is not None and c <= cost and a >= acc
                           and (c < cost or a > acc) for j, (c, a) in enumerate(points)))
    return out


def cost_rows(reports: list[dict], names: list[str]) -> list[dict]:
    """Per model: name, accuracy (over the shared tasks), tasks, each measure of
    :data:`COST_MEASURES` and whether it is on that measure's front (``{key}_front``),
    tower_parameters / tower_flops per tower, embed_dim, throughput, device; [] when fewer than
    two reports have a cost block."""
    if sum(1 for r in reports if r.get("cost")) < 2:
        return []
    shared = [t for t in reports[0]["tasks"] if all(t in r["tasks"] for r in reports)]
    rows = []
    for name, report in zip(names, reports):
        cost = report.get("cost") or {}
        row = {"model": name, "accuracy": mean_accuracy(report, shared), "tasks": shared,
               "tower_parameters": cost.get("parameters"), "tower_flops": cost.get("flops"),
               "embed_dim": cost.get("embed_dim"), "throughput": cost.get("throughput"),
               "device": cost.get("device")}
        row.update({key: measure(cost) for key, (_, measure) in COST_MEASURES.items()})
        rows.append(row)
    for key in COST_MEASURES:
        for row, on in zip(rows, pareto_front([(r[key], r["accuracy"]) for r in rows])):
            row[f"{key}_front"] = on
    return rows


def _cell(value, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def cost_markdown(rows: list[dict]) -> str:
    """The cost table of :func:`cost_rows` ("" for none): accuracy, parameters per tower,
    GFLOPs per image and text, embedding size, throughput; ``†`` marks each front."""
    if not rows:
        return ""
    lines = [f"### Accuracy against cost (accuracy: mean of {', '.join(rows[0]['tasks'])}; "
             "† on the Pareto front of that cost)", "",
             "| model | accuracy (%) | params image (M) | params text (M) | params total (M) | "
             "GFLOPs image | GFLOPs text | dim | bytes | images/s | texts/s | device |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        params, flops = row["tower_parameters"] or {}, row["tower_flops"] or {}
        speed = row["throughput"] or {}
        mark = {key: " †" if row[f"{key}_front"] else "" for key in COST_MEASURES}
        lines.append("| " + " | ".join([
            row["model"], _cell(None if row["accuracy"] is None else 100 * row["accuracy"], ".1f"),
            _cell(_scaled(params.get("image"), 1e6), ".2f"),
            _cell(_scaled(params.get("text"), 1e6), ".2f"),
            _cell(_scaled(params.get("total"), 1e6), ".2f")
            + mark["parameters"],
            _cell(_scaled(flops.get("image"), 1e9), ".3f"),
            _cell(_scaled(flops.get("text"), 1e9), ".3f") + mark["gflops"],
            _cell(row["embed_dim"], "d"), _cell(row["bytes"], "d") + mark["bytes"],
            _cell(speed.get("images_per_s"), ".0f"), _cell(speed.get("texts_per_s"), ".0f"),
            str(row["device"] or "–")]) + " |")
    return "\n".join(lines)


def cost_chart(rows: list[dict], path: str | Path) -> Path:
    """A panel per cost measure: accuracy (%) against the cost (log scale), a point per model
    (labelled), the Pareto front joined by a line and its points filled."""
    from mclip.eval.plots import _pyplot, _save

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(COST_MEASURES), figsize=(4.2 * len(COST_MEASURES), 3.6),
                             squeeze=False)
    for ax, (key, (label, _)) in zip(axes[0], COST_MEASURES.items()):
        points = [(r[key], 100 * r["accuracy"], r["model"], r[f"{key}_front"]) for r in rows
                  if r[key] is not None and r["accuracy"] is not None]
        for x, y, name, on in points:
            ax.scatter([x], [y], s=36, color="C0", facecolors="C0" if on else "none", zorder=3)
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        front = sorted((x, y) for x, y, _, on in points if on)
        if len(front) > 1:
            ax.plot(*zip(*front), color="C0", linewidth=1, zorder=2)
        if points and all(x > 0 for x, *_ in points):
            ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
        if not points:
            ax.text(0.5, 0.5, "not measured", ha="center", transform=ax.transAxes)
    fig.suptitle("Accuracy against cost (filled: on the Pareto front)", fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    return Path(path)
