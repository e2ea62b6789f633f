"""Accuracy against cost over several models: a table with the Pareto front, and its chart.

Each results file's ``cost`` block (:mod:`mclip.eval.cost`) gives a model's cost; its accuracy is
the mean, over the tasks every compared model has, of each task's first headline metric with a
value in every report, averaged over its languages (:func:`accuracy_metrics`,
:func:`mean_accuracy`). For each measure of :data:`COST_MEASURES` a model is on
the Pareto front when no other model costs no more and scores no less, one of the two strictly
(:func:`pareto_front`). Throughput is shown, not put on a front: it depends on the device each
evaluation ran on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from mclip.eval.metric_names import headline
from mclip.eval.figures import pyplot, save_figure


def _sum(a, b):
    return None if a is None or b is None else a + b


def _scaled(value, unit: float):
    return None if value is None else value / unit


COST_MEASURES: dict[str, tuple[str, Callable[[dict], float | None]]] = {
    "parameters": ("parameters (M)", lambda c: _scaled(c.get("parameters", {}).get("total"), 1e6)),
    "gflops": (
        "GFLOPs per image + text",
        lambda c: _scaled(
            _sum(c.get("flops", {}).get("image"), c.get("flops", {}).get("text")), 1e9
        ),
    ),
    "bytes": ("bytes per embedding (fp32)", lambda c: c.get("embedding_bytes", {}).get("fp32")),
}


def cost_line(cost: dict) -> str:
    """One line: parameters per tower (M), GFLOPs per image / text, embedding size, throughput."""
    params, flops, speed = cost["parameters"], cost["flops"], cost["throughput"]

    def shown(value, unit: float, fmt: str) -> str:
        return "n/a" if value is None else format(value / unit, fmt)

    return (
        f"parameters image {shown(params['image'], 1e6, '.2f')}M, text "
        f"{shown(params['text'], 1e6, '.2f')}M; GFLOPs per image "
        f"{shown(flops['image'], 1e9, '.3f')}, per text {shown(flops['text'], 1e9, '.3f')}; "
        f"{cost['embed_dim']}-d ({cost['embedding_bytes']['fp32']} bytes fp32); "
        f"{shown(speed['images_per_s'], 1, '.1f')} images/s, "
        f"{shown(speed['texts_per_s'], 1, '.1f')} texts/s on {cost['device']}"
    )


def cost_csv_rows(report: dict, model: str) -> list[dict]:
    """The model's cost as CSV rows (task ``cost``, no language): parameters per tower, FLOPs
    per image / text, embedding size and bytes, measured throughput; [] without a cost block."""
    cost = report.get("cost")
    if not cost:
        return []
    values = {f"parameters_{k}": v for k, v in cost.get("parameters", {}).items()}
    values.update({f"flops_{k}": v for k, v in cost.get("flops", {}).items()})
    values["embed_dim"] = cost.get("embed_dim")
    values.update({f"embedding_bytes_{k}": v for k, v in cost.get("embedding_bytes", {}).items()})
    values.update(cost.get("throughput", {}))
    return [
        {
            "model": model,
            "task": "cost",
            "kind": "cost",
            "language": None,
            "metric": key,
            "value": value,
        }
        for key, value in values.items()
    ]


def accuracy_metrics(reports: list[dict]) -> dict[str, str]:
    """{task: metric} the accuracy is averaged over: the tasks every report has (not the
    ``--embed-dims`` prefixes ``TASK@Dd``), each with its first headline metric that has a mean
    over languages in every report (a task with none, such as caption -> caption on a set with
    one caption per image, is left out)."""
    out = {}
    for name, task in reports[0]["tasks"].items():
        if task.get("base_task") or not all(name in r["tasks"] for r in reports):
            continue
        for metric in headline(task["kind"]):
            if not metric.startswith("n_") and all(
                r["tasks"][name].get("mean", {}).get(metric) is not None for r in reports
            ):
                out[name] = metric
                break
    return out


def mean_accuracy(report: dict, metrics: dict[str, str]) -> float | None:
    """The mean over ``metrics`` ({task: metric}) of the report's mean over languages, a
    fraction; None for no task."""
    values = [report["tasks"][name]["mean"][metric] for name, metric in metrics.items()]
    return sum(values) / len(values) if values else None


def pareto_front(points: Sequence[tuple[float | None, float | None]]) -> list[bool]:
    """For (cost, accuracy) points: whether each is on the front (no other point has cost <= and
    accuracy >= with one of them strict). A point with a None is not on it."""
    out = []
    for i, (cost, acc) in enumerate(points):
        if cost is None or acc is None:
            out.append(False)
            continue
        out.append(
            not any(
                j != i
                and c is not None
                and a is not None
                and c <= cost
                and a >= acc
                and (c < cost or a > acc)
                for j, (c, a) in enumerate(points)
            )
        )
    return out


def cost_rows(reports: list[dict], names: list[str]) -> list[dict]:
    """Per model: name, accuracy (over the shared tasks), tasks, each measure of
    :data:`COST_MEASURES` and whether it is on that measure's front (``{key}_front``),
    tower_parameters / tower_flops per tower, embed_dim, throughput, device; [] when fewer than
    two reports have a cost block."""
    if sum(1 for r in reports if r.get("cost")) < 2:
        return []
    metrics = accuracy_metrics(reports)
    rows: list[dict[str, Any]] = []
    for name, report in zip(names, reports):
        cost = report.get("cost") or {}
        row = {
            "model": name,
            "accuracy": mean_accuracy(report, metrics),
            "tasks": [f"{task} {metric}" for task, metric in metrics.items()],
            "tower_parameters": cost.get("parameters"),
            "tower_flops": cost.get("flops"),
            "embed_dim": cost.get("embed_dim"),
            "throughput": cost.get("throughput"),
            "device": cost.get("device"),
        }
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
    lines = [
        f"### Accuracy against cost (accuracy: mean of {', '.join(rows[0]['tasks'])}; "
        "† on the Pareto front of that cost)",
        "",
        "| model | accuracy (%) | params image (M) | params text (M) | params total (M) | "
        "GFLOPs image | GFLOPs text | dim | bytes | images/s | texts/s | device |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        params, flops = row["tower_parameters"] or {}, row["tower_flops"] or {}
        speed = row["throughput"] or {}
        mark = {key: " †" if row[f"{key}_front"] else "" for key in COST_MEASURES}
        lines.append(
            "| "
            + " | ".join(
                [
                    row["model"],
                    _cell(None if row["accuracy"] is None else 100 * row["accuracy"], ".1f"),
                    _cell(_scaled(params.get("image"), 1e6), ".2f"),
                    _cell(_scaled(params.get("text"), 1e6), ".2f"),
                    _cell(_scaled(params.get("total"), 1e6), ".2f") + mark["parameters"],
                    _cell(_scaled(flops.get("image"), 1e9), ".3f"),
                    _cell(_scaled(flops.get("text"), 1e9), ".3f") + mark["gflops"],
                    _cell(row["embed_dim"], "d"),
                    _cell(row["bytes"], "d") + mark["bytes"],
                    _cell(speed.get("images_per_s"), ".0f"),
                    _cell(speed.get("texts_per_s"), ".0f"),
                    str(row["device"] or "–"),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def cost_chart(rows: list[dict], path: str | Path) -> Path:
    """A panel per cost measure: accuracy (%) against the cost (log scale), a point per model
    (labelled), the Pareto front joined by a line and its points filled."""
    plt = pyplot()
    fig, axes = plt.subplots(
        1, len(COST_MEASURES), figsize=(4.2 * len(COST_MEASURES), 3.6), squeeze=False
    )
    for ax, (key, (label, _)) in zip(axes[0], COST_MEASURES.items()):
        points = [
            (r[key], 100 * r["accuracy"], r["model"], r[f"{key}_front"])
            for r in rows
            if r[key] is not None and r["accuracy"] is not None
        ]
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
    save_figure(fig, path)
    return Path(path)
