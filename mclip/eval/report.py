"""Evaluation reports: the results JSON, reading it back, its Markdown table and its files.

The document's contents and the helpers that read them (intervals, languages, groups, means) are
in :mod:`mclip.eval.results`; this module builds the document, renders the table and writes the
files. Comparisons of several reports: :mod:`mclip.eval.compare`; CSV and CLIP_benchmark files:
:mod:`mclip.eval.export`; charts: :mod:`mclip.eval.plots`.
"""

from __future__ import annotations

import datetime
import json
import platform
from importlib import metadata
from pathlib import Path

from mclip.config import ConfigError
from mclip.eval import export, plots, sensitivity_charts
from mclip.eval.alignment import alignment_rows, alignment_table
from mclip.eval.cost_report import cost_line
from mclip.eval.frequency_report import frequency_chart, frequency_table, has_frequency_bins

from mclip.eval.metric_names import format_value, headline, short_name
from mclip.eval.results import (
    add_means,
    dims_families,
    interval_of,
    language_groups,
    language_means,
    ordered_languages,
)
from mclip.outputs import check_writable, write_text_atomically

_PACKAGES = (
    "mclip",
    "torch",
    "timm",
    "transformers",
    "open_clip_torch",
    "torchmetrics",
    "webdataset",
    "numpy",
)


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages that determine the numbers."""
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def build_report(
    model_name: str,
    suite_name: str,
    results: dict,
    model_versions: dict | None = None,
    cost: dict | None = None,
) -> dict:
    """The results document: model spec, its adapter's library versions, suite, time, package
    versions, per-task results and per-task means over languages (:func:`add_means`), and the
    model's ``cost`` when given (:mod:`mclip.eval.cost`)."""
    add_means(results)
    report = {
        "model": model_name,
        "model_versions": dict(model_versions or {}),
        "suite": suite_name,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": package_versions(),
        "tasks": results,
    }
    if cost:
        report["cost"] = cost
    gaps = alignment_rows(report)
    if gaps:
        report["where_the_gap_is"] = gaps
    return report


def load_report(path: str | Path) -> dict:
    """Read a results JSON written by ``mclip eval``; ConfigError naming the file when it cannot
    be read or is not one."""
    path = Path(path)
    try:
        report = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"cannot read results file '{path}': {error}. Give the results.json "
            "that 'mclip eval' wrote"
        ) from None
    if not isinstance(report, dict) or not isinstance(report.get("tasks"), dict):
        raise ConfigError(
            f"'{path}' is not an mclip results file (no 'tasks'); give the "
            "results.json that 'mclip eval' wrote"
        )
    for name, task in report["tasks"].items():
        if not isinstance(task, dict) or not isinstance(task.get("languages"), dict):
            raise ConfigError(
                f"'{path}': task '{name}' has no 'languages'; the file is damaged "
                "or not written by 'mclip eval'"
            )
    report.setdefault("model", path.stem)
    report.setdefault("suite", "")
    return report


INTERVAL_LEGEND = (
    "Values in %; `±`: half the width of the 95% percentile-bootstrap interval, "
    "or `[low, high]` where the interval is lopsided (near 0 or 100%); exact "
    "bounds in the CSV. Means carry no interval."
)


def markdown_table(report: dict) -> str:
    """One row per language (grouped by resource group), columns = headline metrics of every task
    (percent, ``±`` half the 95% interval width where the file has intervals), then means over all
    languages, over all but English, and per resource group; a legend line when intervals show."""
    tasks = report["tasks"]
    columns = [(name, key) for name, task in tasks.items() for key in headline(task["kind"])]
    languages = ordered_languages(list(tasks.values()))
    group_of = language_groups(list(tasks.values()))
    header = "| lang | " + " | ".join(f"{name} {short_name(key)}" for name, key in columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 1)]
    any_ci = False
    for lang in languages:
        cells = []
        for name, key in columns:
            metrics = tasks[name]["languages"].get(lang, {})
            ci = interval_of(metrics, key)
            any_ci |= ci is not None
            cells.append(format_value(metrics.get(key), key, ci))
        label = f"{lang} ({group_of[lang]})" if lang in group_of else lang
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    means = {
        name: language_means(task, [k for k in headline(task["kind"]) if not k.startswith("n_")])
        for name, task in tasks.items()
    }
    labels = list(dict.fromkeys(label for m in means.values() for label in m))
    for label in labels:
        title = "**mean**" if label == "all" else f"**mean {label}**"
        cells = [
            ""
            if key.startswith("n_") or label not in means[name]
            else format_value(means[name][label].get(key), key)
            for name, key in columns
        ]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    if any_ci:
        lines += ["", INTERVAL_LEGEND]
    for section in (dims_table, prompt_table, provenance_table, frequency_table, alignment_table):
        text = section(report)  # "" when the report has nothing for it
        if text:
            lines += ["", text]
    if report.get("cost"):
        lines += ["", f"Cost: {cost_line(report['cost'])}."]
    if report.get("provenance_filter"):
        lines += [
            "",
            f"Only languages whose texts are {', '.join(report['provenance_filter'])} "
            f"(mclip report --provenance).",
        ]
    return "\n".join(lines)


def provenance_table(report: dict) -> str:
    """Per task, the mean of its headline metrics over the languages of each provenance tag
    (percent); "" when no task has languages of two tags or a tag other than human."""
    lines = []
    for name, task in report["tasks"].items():
        by_tag = task.get("provenance_means") or {}
        if not by_tag or set(by_tag) == {"human"}:
            continue
        keys = [k for k in headline(task["kind"]) if not k.startswith("n_")]
        for tag, means in by_tag.items():
            cells = [f"{short_name(k)} {format_value(means[k], k)}" for k in keys if k in means]
            lines.append(f"| {name} | {tag} | {means['languages']} | {', '.join(cells)} |")
    if not lines:
        return ""
    return "\n".join(
        [
            "Means by the provenance of the texts (human, machine_translated, lexicon, unknown)",
            "",
            "| task | provenance | languages | means (%) |",
            "|---|---|---|---|",
            *lines,
        ]
    )


def prompt_table(report: dict) -> str:
    """The acc@1 of each template alone, per language of every zero-shot task that has it:
    min, max and std (percent) and a flag where the templates disagree by 10 points or more;
    "" when no task has it."""
    lines = []
    for name, task in report["tasks"].items():
        for lang, metrics in task["languages"].items():
            if "acc@1_template_min" not in metrics:
                continue
            cells = [
                format_value(metrics[f"acc@1_template_{k}"], "acc@1") for k in ("min", "max", "std")
            ]
            flag = "**prompt-sensitive**" if metrics.get("prompt_sensitive") else ""
            lines.append(
                f"| {name} | {lang} | {len(metrics['template_acc@1'])} | "
                + " | ".join(cells)
                + f" | {flag} |"
            )
    if not lines:
        return ""
    return "\n".join(
        [
            "Prompt sensitivity: acc@1 of each template alone",
            "",
            "| task | lang | templates | min | max | std | |",
            "|---|---|---|---|---|---|---|",
            *lines,
        ]
    )


def plot_languages(report: dict, path: str | Path) -> None:
    """The overview chart of one report: a panel per task, its main metric per language with 95%
    interval whiskers (see :func:`mclip.eval.plots.overview_chart`)."""
    plots.overview_chart([(report.get("model", "model"), report)], path)


def write_report(
    report: dict, out_dir: str | Path, formats: tuple[str, ...] = ("json", "markdown", "csv", "png")
) -> dict[str, Path]:
    """Write the report into ``out_dir``: ``results.json``, ``results.md``, ``results.csv``,
    ``results.png`` (overview) with ``results_<task>.png`` (a chart per task), and with
    "clip_benchmark" in ``formats`` a ``clip_benchmark/`` folder of CLIP_benchmark-style JSON files.
    Returns {"json", "markdown", "csv", "plot", "charts", "clip_benchmark": path(s)} for what was
    written. Every file is written whole or not at all (:mod:`mclip.outputs`); a failure is an
    :class:`~mclip.outputs.OutputError` naming the path."""
    out_dir = check_writable(out_dir, "the output folder")
    paths: dict = {}
    if "json" in formats:
        paths["json"] = write_text_atomically(
            out_dir / "results.json", json.dumps(report, indent=1, ensure_ascii=False)
        )
    if "markdown" in formats:
        paths["markdown"] = write_text_atomically(
            out_dir / "results.md",
            f"# {report['model']} on {report['suite']}\n\n" + markdown_table(report) + "\n",
        )
    entries = [(report.get("model", "model"), report)]
    if "csv" in formats:
        paths["csv"] = export.write_csv(
            export.report_rows(report, report.get("model", "model")), out_dir / "results.csv"
        )
    if "png" in formats:
        paths["plot"] = plots.overview_chart(entries, out_dir / "results.png")
        paths["charts"] = plots.write_task_charts(entries, out_dir, prefix="results")
        if dims_families(report):
            paths["charts"].append(
                sensitivity_charts.dims_chart(entries, out_dir / "results_dims.png")
            )
        if sensitivity_charts.has_template_scores(report):
            paths["charts"].append(
                sensitivity_charts.prompts_chart(entries, out_dir / "results_prompts.png")
            )
        if has_frequency_bins(report):
            paths["charts"].append(frequency_chart(entries, out_dir / "results_concepts.png"))
    if "clip_benchmark" in formats:
        paths["clip_benchmark"] = export.write_clip_benchmark(report, out_dir / "clip_benchmark")
    return paths


def dims_table(report: dict) -> str:
    """Markdown: per base task, a row per embedding size with the mean of each headline metric
    over the languages (in %), and its share of the largest size's value (the full embedding's
    when it was scored); "" when the report has no task scored at several sizes."""
    lines = []
    for base, sized in dims_families(report).items():
        largest, full = sized[-1]
        metrics = [
            m
            for m in headline(full["kind"])
            if not m.startswith("n_") and m in full.get("mean", {})
        ]
        of = "full" if largest == full.get("full_embed_dim", largest) else f"{largest}d"
        header = (
            ["dimensions"]
            + [f"{short_name(m)}" for m in metrics]
            + [f"% of {of} {short_name(metrics[0])}" if metrics else ""]
        )
        lines += [
            "",
            f"### {base}: accuracy against embedding size (mean over languages, %)",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
        ]
        for size, task in sized:
            mean = task.get("mean", {})
            cells = [str(size)] + [f"{100 * mean[m]:.1f}" for m in metrics]
            base_value = full.get("mean", {}).get(metrics[0]) if metrics else None
            cells.append(f"{100 * mean[metrics[0]] / base_value:.1f}" if base_value else "–")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines).strip()
