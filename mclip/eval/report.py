"""Evaluation reports: the results JSON, reading it back, and its Markdown table.

A results JSON holds, per task and language, scalar metrics (fractions in [0, 1], or counts named
``n_*``), a 95% bootstrap interval per metric under ``ci`` and per-sample ranks under ``samples``
(:mod:`mclip.eval.samples`). Older files may lack ``ci`` / ``samples`` / ``data``: every reader
here treats them as absent. Comparisons of several reports: :mod:`mclip.eval.compare`; CSV and
CLIP_benchmark files: :mod:`mclip.eval.export`; charts: :mod:`mclip.eval.plots`.
"""

from __future__ import annotations

import datetime
import json
import platform
from importlib import metadata
from pathlib import Path

from mclip.config import ConfigError
from mclip.eval.alignment import alignment_rows, alignment_table
from mclip.eval.bootstrap import language_intervals
from mclip.eval.cost_report import cost_line
from mclip.eval.frequency_report import frequency_table
from mclip.eval.metric_names import (HEADLINE, SHORT, format_value, headline,  # noqa: F401
                                     short_name)
from mclip.eval.samples import SampleRanks, metric_spec
from mclip.outputs import check_writable, write_text_atomically

_PACKAGES = ("mclip", "torch", "timm", "transformers", "open_clip_torch", "torchmetrics",
             "webdataset", "numpy")
# The count that says how many samples a view averages over, for files without "samples".
VIEW_COUNTS = {"images": "n_images", "texts": "n_texts", "sentences": "n_sentences",
               "sentences_text_only": "n_sentences_text_only", "bitext_to_pivot": "n_pairs",
               "bitext_from_pivot": "n_pairs",
               "image_queries": "n_queries", "text_queries": "n_queries",
               "pivot_text_queries": "n_pivot_queries"}
ENGLISH = "en"


# Babel-ImageNet's resource groups by the number of classes a language has (arXiv:2306.08658).
BABEL_GROUPS = ((100, "<=100"), (333, "101-333"), (666, "334-666"), (10**9, ">666"))
GROUP_ORDER = tuple(name for _, name in BABEL_GROUPS)


def resource_group(n_classes: int) -> str:
    """Babel-ImageNet's resource group of a language with ``n_classes`` classes."""
    return next(name for bound, name in BABEL_GROUPS if n_classes <= bound)


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages that determine the numbers."""
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def build_report(model_name: str, suite_name: str, results: dict,
                 model_versions: dict | None = None, cost: dict | None = None) -> dict:
    """The results document: model spec, its adapter's library versions, suite, time, package
    versions, per-task results and per-task means over languages (:func:`add_means`), and the
    model's ``cost`` when given (:mod:`mclip.eval.cost`)."""
    add_means(results)
    report = {"model": model_name, "model_versions": dict(model_versions or {}),
              "suite": suite_name,
              "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "versions": package_versions(), "tasks": results}
    if cost:
        report["cost"] = cost
    gaps = alignment_rows(report)
    if gaps:
        report["where_the_gap_is"] = gaps
    return report


def add_means(tasks: dict) -> dict:
    """Per task of ``tasks`` ({name: task}), the means of its headline metrics over languages:
    ``mean``, ``mean_non_english``, ``group_means`` per resource group and ``provenance_means``
    per provenance tag (:mod:`mclip.eval.provenance`), each only where it has languages.
    Modifies and returns ``tasks``."""
    from mclip.eval.provenance import provenance_means

    for task in tasks.values():
        keys = [k for k in headline(task["kind"]) if not k.startswith("n_")]
        means = language_means(task, keys)
        task["mean"] = means.pop("all", {})
        task["mean_non_english"] = means.pop("non-English", {})
        task.pop("group_means", None)
        if means:
            task["group_means"] = means
        by_tag = provenance_means(task, keys)
        task.pop("provenance_means", None)
        if by_tag:
            task["provenance_means"] = by_tag
    return tasks


def load_report(path: str | Path) -> dict:
    """Read a results JSON written by ``mclip eval``; ConfigError naming the file when it cannot
    be read or is not one."""
    path = Path(path)
    try:
        report = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read results file '{path}': {error}. Give the results.json "
                          "that 'mclip eval' wrote") from None
    if not isinstance(report, dict) or not isinstance(report.get("tasks"), dict):
        raise ConfigError(f"'{path}' is not an mclip results file (no 'tasks'); give the "
                          "results.json that 'mclip eval' wrote")
    for name, task in report["tasks"].items():
        if not isinstance(task, dict) or not isinstance(task.get("languages"), dict):
            raise ConfigError(f"'{path}': task '{name}' has no 'languages'; the file is damaged "
                              "or not written by 'mclip eval'")
    report.setdefault("model", path.stem)
    report.setdefault("suite", "")
    return report


def is_fraction_metric(key: str, value) -> bool:
    """Whether a language entry's ``key`` is a metric in [0, 1] (or None: not applicable), as
    opposed to a count (``n_*``, ``*_dropped``), a label or a nested block."""
    if key.startswith("n_") or key.endswith("_dropped") or key in ("ci", "samples"):
        return False
    return value is None or (isinstance(value, float) and not isinstance(value, bool))


def fraction_metrics(languages: dict) -> list[str]:
    """The fraction metrics present in any of ``languages`` ({lang: metrics}), first-seen order."""
    return list(dict.fromkeys(k for m in languages.values() for k, v in m.items()
                              if is_fraction_metric(k, v)))


def metric_view(metrics: dict, metric: str) -> SampleRanks | None:
    """The per-sample ranks a language's ``metric`` averages over, or None when the file has none
    (older files, or a metric without a per-sample definition)."""
    spec = metric_spec(metric)
    if spec is None:
        return None
    packed = metrics.get("samples", {}).get(spec[0])
    return None if packed is None else SampleRanks.from_json(packed)


def sample_count(metrics: dict, metric: str) -> int | None:
    """How many samples (images, captions, sentences) ``metric`` averages over, or None."""
    spec = metric_spec(metric)
    if spec is None:
        return None
    packed = metrics.get("samples", {}).get(spec[0])
    if packed is not None:
        return int(packed["n"])
    count = metrics.get(VIEW_COUNTS.get(spec[0], ""))
    return int(count) if isinstance(count, (int, float)) else None


def interval_of(metrics: dict, metric: str) -> tuple[float, float] | None:
    """The stored 95% interval (low, high) of ``metric``, fractions, or None."""
    ci = metrics.get("ci", {}).get(metric)
    return (float(ci[0]), float(ci[1])) if ci else None


def recompute_intervals(report: dict, n_resamples: int, seed: int) -> dict:
    """Replace every language's ``ci`` by intervals from its stored per-sample ranks, with
    ``n_resamples`` resamples (0: remove intervals) and ``seed``; languages without ``samples``
    keep what they have. Modifies and returns ``report``."""
    for name, task in report["tasks"].items():
        for lang, metrics in task["languages"].items():
            if n_resamples == 0:
                metrics.pop("ci", None)
                continue
            views = {view: SampleRanks.from_json(packed)
                     for view, packed in metrics.get("samples", {}).items()}
            if views:
                metrics["ci"] = language_intervals(metrics, views, n_resamples, seed, name, lang)
        if n_resamples:
            task["bootstrap"] = {**task.get("bootstrap", {}), "resamples": n_resamples,
                                 "seed": seed}
    return report


def ordered_languages(tasks: list[dict]) -> list[str]:
    """Languages of ``tasks`` (first-seen order), grouped by resource group (smallest first)
    when they have one; languages without a group come last."""
    languages = list(dict.fromkeys(lang for t in tasks for lang in t["languages"]))
    group_of = language_groups(tasks)
    if group_of:
        languages.sort(key=lambda lang: GROUP_ORDER.index(group_of[lang])
                       if group_of.get(lang) in GROUP_ORDER else len(GROUP_ORDER))
    return languages


def language_groups(tasks: list[dict]) -> dict[str, str]:
    """{language: resource group} for the languages of ``tasks`` that have one."""
    return {lang: m["resource_group"] for t in tasks for lang, m in t["languages"].items()
            if "resource_group" in m}


def mean_groups(languages: list[str], group_of: dict[str, str]) -> dict[str, list[str]]:
    """The language sets means are taken over: "all", "non-English" (all but ``en``; only when
    ``en`` is there) and each resource group, in that order."""
    out = {"all": list(languages)}
    if ENGLISH in languages and len(languages) > 1:
        out["non-English"] = [lang for lang in languages if lang != ENGLISH]
    for group in GROUP_ORDER + tuple(sorted(set(group_of.values()) - set(GROUP_ORDER))):
        members = [lang for lang in languages if group_of.get(lang) == group]
        if members:
            out[group] = members
    return out


def language_means(task: dict, keys: list[str]) -> dict[str, dict[str, float]]:
    """{"all" | "non-English" | resource group: {metric: mean over its languages}} for ``keys``;
    a language whose value is None (not applicable) is left out of that metric's mean."""
    group_of = language_groups([task])
    out = {}
    for label, members in mean_groups(list(task["languages"]), group_of).items():
        out[label] = _mean([task["languages"][lang] for lang in members], keys)
    return out


def _mean(rows: list[dict], keys: list[str]) -> dict:
    out = {}
    for k in keys:
        values = [m[k] for m in rows if m.get(k) is not None]
        if values:
            out[k] = sum(values) / len(values)
    return out


INTERVAL_LEGEND = ("Values in %; `±`: half the width of the 95% percentile-bootstrap interval, "
                   "or `[low, high]` where the interval is lopsided (near 0 or 100%); exact "
                   "bounds in the CSV. Means carry no interval.")


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
    means = {name: language_means(task, [k for k in headline(task["kind"])
                                         if not k.startswith("n_")])
             for name, task in tasks.items()}
    labels = list(dict.fromkeys(label for m in means.values() for label in m))
    for label in labels:
        title = "**mean**" if label == "all" else f"**mean {label}**"
        cells = ["" if key.startswith("n_") or label not in means[name]
                 else format_value(means[name][label].get(key), key) for name, key in columns]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    if any_ci:
        lines += ["", INTERVAL_LEGEND]
    sizes = dims_table(report)
    if sizes:
        lines += ["", sizes]
    prompts = prompt_table(report)
    if prompts:
        lines += ["", prompts]
    origins = provenance_table(report)
    if origins:
        lines += ["", origins]
    frequencies = frequency_table(report)
    if frequencies:
        lines += ["", frequencies]
    gaps = alignment_table(report)
    if gaps:
        lines += ["", gaps]
    if report.get("cost"):
        lines += ["", f"Cost: {cost_line(report['cost'])}."]
    if report.get("provenance_filter"):
        lines += ["", f"Only languages whose texts are {', '.join(report['provenance_filter'])} "
                      f"(mclip report --provenance)."]
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
    return "\n".join(["Means by the provenance of the texts (human, machine_translated, lexicon, "
                      "unknown)", "", "| task | provenance | languages | means (%) |",
                      "|---|---|---|---|", *lines])


def prompt_table(report: dict) -> str:
    """The acc@1 of each template alone, per language of every zero-shot task that has it:
    min, max and std (percent) and a flag where the templates disagree by 10 points or more;
    "" when no task has it."""
    lines = []
    for name, task in report["tasks"].items():
        for lang, metrics in task["languages"].items():
            if "acc@1_template_min" not in metrics:
                continue
            cells = [format_value(metrics[f"acc@1_template_{k}"], "acc@1")
                     for k in ("min", "max", "std")]
            flag = "**prompt-sensitive**" if metrics.get("prompt_sensitive") else ""
            lines.append(f"| {name} | {lang} | {len(metrics['template_acc@1'])} | "
                         + " | ".join(cells) + f" | {flag} |")
    if not lines:
        return ""
    return "\n".join(["Prompt sensitivity: acc@1 of each template alone", "",
                      "| task | lang | templates | min | max | std | |",
                      "|---|---|---|---|---|---|---|", *lines])


def plot_languages(report: dict, path: str | Path) -> None:
    """The overview chart of one report: a panel per task, its main metric per language with 95%
    interval whiskers (see :func:`mclip.eval.plots.overview_chart`)."""
    from mclip.eval.plots import overview_chart

    overview_chart([(report.get("model", "model"), report)], path)


def write_report(report: dict, out_dir: str | Path,
                 formats: tuple[str, ...] = ("json", "markdown", "csv", "png")) -> dict[str, Path]:
    """Write the report into ``out_dir``: ``results.json``, ``results.md``, ``results.csv``,
    ``results.png`` (overview) with ``results_<task>.png`` (a chart per task), and with
    "clip_benchmark" in ``formats`` a ``clip_benchmark/`` folder of CLIP_benchmark-style JSON files.
    Returns {"json", "markdown", "csv", "plot", "charts", "clip_benchmark": path(s)} for what was
    written. Every file is written whole or not at all (:mod:`mclip.outputs`); a failure is an
    :class:`~mclip.outputs.OutputError` naming the path."""
    from mclip.eval import export, plots
    from mclip.eval.frequency_report import frequency_chart, has_frequency_bins

    out_dir = check_writable(out_dir, "the output folder")
    paths: dict = {}
    if "json" in formats:
        paths["json"] = write_text_atomically(out_dir / "results.json",
                                              json.dumps(report, indent=1, ensure_ascii=False))
    if "markdown" in formats:
        paths["markdown"] = write_text_atomically(
            out_dir / "results.md",
            f"# {report['model']} on {report['suite']}\n\n" + markdown_table(report) + "\n")
    entries = [(report.get("model", "model"), report)]
    if "csv" in formats:
        paths["csv"] = export.write_csv(export.report_rows(report, report.get("model", "model")),
                                        out_dir / "results.csv")
    if "png" in formats:
        paths["plot"] = plots.overview_chart(entries, out_dir / "results.png")
        paths["charts"] = plots.write_task_charts(entries, out_dir, prefix="results")
        if dims_families(report):
            paths["charts"].append(plots.dims_chart(entries, out_dir / "results_dims.png"))
        if plots.has_template_scores(report):
            paths["charts"].append(plots.prompts_chart(entries, out_dir / "results_prompts.png"))
        if has_frequency_bins(report):
            paths["charts"].append(frequency_chart(entries, out_dir / "results_concepts.png"))
    if "clip_benchmark" in formats:
        paths["clip_benchmark"] = export.write_clip_benchmark(report, out_dir / "clip_benchmark")
    return paths


def dims_families(report: dict) -> dict[str, list[tuple[int, dict]]]:
    """{base task: [(embedding size, task), ...] ascending} for tasks scored at several sizes
    (``mclip eval --embed-dims``; :mod:`mclip.eval.embed_dims`)."""
    families: dict[str, list[tuple[int, dict]]] = {}
    for name, task in report["tasks"].items():
        if task.get("embed_dim") is not None:
            families.setdefault(task.get("base_task", name), []).append((task["embed_dim"], task))
    return {base: sorted(sized, key=lambda pair: pair[0]) for base, sized in families.items()
            if len(sized) > 1}


def dims_table(report: dict) -> str:
    """Markdown: per base task, a row per embedding size with the mean of each headline metric
    over the languages (in %), and its share of the largest size's value (the full embedding's
    when it was scored); "" when the report has no task scored at several sizes."""
    lines = []
    for base, sized in dims_families(report).items():
        largest, full = sized[-1]
        metrics = [m for m in headline(full["kind"]) if not m.startswith("n_")
                   and m in full.get("mean", {})]
        of = "full" if largest == full.get("full_embed_dim", largest) else f"{largest}d"
        header = ["dimensions"] + [f"{short_name(m)}" for m in metrics] + [
            f"% of {of} {short_name(metrics[0])}" if metrics else ""]
        lines += ["", f"### {base}: accuracy against embedding size (mean over languages, %)", "",
                  "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for size, task in sized:
            mean = task.get("mean", {})
            cells = [str(size)] + [f"{100 * mean[m]:.1f}" for m in metrics]
            base_value = full.get("mean", {}).get(metrics[0]) if metrics else None
            cells.append(f"{100 * mean[metrics[0]] / base_value:.1f}" if base_value else "–")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines).strip()
