"""Paired comparison of several results files, per task, language and metric.

The first report is the baseline. For every other model and every (task, language, metric) both
have, the difference model - baseline; where both files kept the per-sample ranks of that
metric's view and those ranks are of the same samples in the same order (equal
:attr:`~mclip.eval.samples.SampleRanks.ids`), a paired bootstrap
(:func:`mclip.eval.bootstrap.paired_comparison`, one generator per (seed, task, language,
metric)) gives the 95% interval of the difference, a two-sided p-value and whether the interval
excludes 0. Otherwise the difference is reported unpaired, with the reason. With many languages,
about one in twenty differences between two equally good models is marked by chance: the marks
are per comparison, not corrected for multiplicity.
"""

from __future__ import annotations

from pathlib import Path

from mclip.eval.bootstrap import CONFIDENCE, generator, paired_comparison
from mclip.eval.cost_report import cost_markdown, cost_rows
from mclip.eval.export import metric_row
from mclip.eval.metric_names import format_value, headline, short_name
from mclip.eval.results import (
    fraction_metrics,
    language_groups,
    mean_groups,
    metric_view,
    ordered_languages,
)
from mclip.eval.samples import metric_spec

NOT_PAIRED = {
    "no_bootstrap": "bootstrap off (--bootstrap 0)",
    "no_samples": "a file has no per-sample results (written before they were kept; re-run "
    "'mclip eval')",
    "different_data": "different data (the image sets, captions or sentences differ)",
    "different_samples": "different samples (same image set, other images or captions scored: "
    "another --limit, other classes kept, or other captions)",
    "no_per_sample_metric": "the metric has no per-sample definition",
    "different_kind": "the task kinds differ",
}


def model_names(reports: list[dict], files: list[str | Path]) -> list[str]:
    """A display name per report: its ``model`` field; duplicates get their file in brackets
    (and a running number if the files are the same too)."""
    names = [str(r.get("model") or Path(f).stem) for r, f in zip(reports, files)]
    counts = {n: names.count(n) for n in names}
    names = [f"{n} ({f})" if counts[n] > 1 else n for n, f in zip(names, files)]
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} #{seen[name]}")
    return out


def compare_reports(
    reports: list[dict],
    names: list[str],
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> dict:
    """Compare ``reports`` (results documents; the first is the baseline) named ``names``.

    Returns {"baseline", "models": [{name, model, suite, created}], "bootstrap": {resamples, seed,
    confidence}, "results": [row], "means": [row]}. A result row is one (model, task, language,
    metric): value, ci_low, ci_high (fractions), n_samples, resource_group, and for non-baseline
    models baseline, difference (model - baseline, fractions), diff_low, diff_high, p_value,
    significant, paired, not_paired_reason (a key of :data:`NOT_PAIRED`). A mean row is one
    (task, metric, language set: "all", "non-English" or a resource group) with n_languages
    (languages every model has a value for) and values / differences per model. "cost": each
    model's cost next to its accuracy, with the Pareto fronts (:mod:`mclip.eval.cost_report`;
    [] unless two or more files have a cost).
    """
    base_name = names[0]
    rows, means = [], []
    task_names = list(dict.fromkeys(t for r in reports for t in r["tasks"]))
    for task_name in task_names:
        tasks = [r["tasks"].get(task_name) for r in reports]
        present = [t for t in tasks if t is not None]
        group_of = language_groups(present)
        languages = ordered_languages(present)
        metrics = list(dict.fromkeys(m for t in present for m in fraction_metrics(t["languages"])))
        base_task = tasks[0]
        for lang in languages:
            for metric in metrics:
                base_metrics = (base_task or {}).get("languages", {}).get(lang)
                for i, (name, task) in enumerate(zip(names, tasks)):
                    entry = None if task is None else task["languages"].get(lang)
                    if entry is None or metric not in entry:
                        continue
                    row = metric_row(name, task_name, task, lang, entry, metric, group_of.get(lang))
                    if i > 0 and base_metrics is not None and metric in base_metrics:
                        row["baseline"] = base_name
                        row.update(
                            _difference(
                                task_name,
                                lang,
                                metric,
                                base_task,
                                base_metrics,
                                task,
                                entry,
                                n_resamples,
                                seed,
                                confidence,
                            )
                        )
                    rows.append(row)
        means += _means(task_name, tasks, names, languages, group_of, metrics)
    return {
        "baseline": base_name,
        "models": [
            {
                "name": n,
                "model": r.get("model"),
                "suite": r.get("suite"),
                "created": r.get("created"),
            }
            for n, r in zip(names, reports)
        ],
        "bootstrap": {"resamples": n_resamples, "seed": seed, "confidence": confidence},
        "results": rows,
        "means": means,
        "cost": cost_rows(reports, names),
    }


def _difference(
    task_name: str,
    lang: str,
    metric: str,
    base_task: dict,
    base_metrics: dict,
    task: dict,
    entry: dict,
    n_resamples: int,
    seed: int,
    confidence: float,
) -> dict:
    """The comparison columns of one non-baseline row (see :func:`compare_reports`)."""
    a, b = entry[metric], base_metrics[metric]
    out = {
        "difference": None if a is None or b is None else a - b,
        "diff_low": None,
        "diff_high": None,
        "p_value": None,
        "significant": None,
        "paired": False,
        "not_paired_reason": None,
    }
    if out["difference"] is None:
        return out
    view, base_view = metric_view(entry, metric), metric_view(base_metrics, metric)
    if task["kind"] != base_task["kind"]:
        out["not_paired_reason"] = "different_kind"
    elif metric_spec(metric) is None:
        out["not_paired_reason"] = "no_per_sample_metric"
    elif n_resamples <= 0:
        out["not_paired_reason"] = "no_bootstrap"
    elif view is None or base_view is None:
        out["not_paired_reason"] = "no_samples"
    elif view.ids != base_view.ids or len(view) != len(base_view):
        data, base_data = (t.get("data") for t in (task, base_task))  # images, captions, ...
        same = bool(data) and data == base_data
        out["not_paired_reason"] = "different_samples" if same else "different_data"
    else:
        result = paired_comparison(
            view,
            base_view,
            metric,
            n_resamples,
            generator(seed, task_name, lang, metric),
            confidence,
        )
        out.update(
            difference=result["difference"],
            diff_low=result["interval"][0],
            diff_high=result["interval"][1],
            p_value=result["p_value"],
            significant=result["significant"],
            paired=True,
        )
    return out


def _means(task_name, tasks, names, languages, group_of, metrics) -> list[dict]:
    """Means over the languages every model has a value for, per language set and metric."""
    out = []
    for metric in metrics:
        common = [
            lang
            for lang in languages
            if all(
                t is not None and t["languages"].get(lang, {}).get(metric) is not None
                for t in tasks
            )
        ]
        if not common:
            continue
        for label, members in mean_groups(common, group_of).items():
            values = {
                name: sum(t["languages"][lang][metric] for lang in members) / len(members)
                for name, t in zip(names, tasks)
            }
            base = values[names[0]]
            out.append(
                {
                    "task": task_name,
                    "metric": metric,
                    "languages": label,
                    "n_languages": len(members),
                    "values": values,
                    "differences": {n: v - base for n, v in list(values.items())[1:]},
                }
            )
    return out


def model_letters(n: int) -> list[str]:
    """Short column labels for ``n`` models: A, B, ..., Z, AA, AB, ..."""
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return [letters[i] if i < 26 else letters[i // 26 - 1] + letters[i % 26] for i in range(n)]


def comparison_markdown(comparison: dict, max_listed: int = 12) -> str:
    """Markdown of a :func:`compare_reports` result: a key naming the models A (the baseline),
    B, ...; then per task and headline metric a table, rows = languages (grouped by resource
    group), columns = n (the samples scored; each model's, A / B / ..., where they differ), each
    model's value ``±`` half its 95% interval,
    and per other model its difference to the baseline in points, ``*`` when significant, ``°``
    when not paired (reasons under the table); then means over all languages, all but English and
    per resource group."""
    names = [m["name"] for m in comparison["models"]]
    letter = dict(zip(names, model_letters(len(names))))
    base = comparison["baseline"]
    index = {(r["task"], r["language"], r["metric"], r["model"]): r for r in comparison["results"]}
    lines = [
        "Models: "
        + "; ".join(
            f"**{letter[n]}** = `{n}`" + (" (baseline)" if n == base else "") for n in names
        )
        + ".",
        "",
        _legend(comparison["bootstrap"]),
    ]
    tasks = list(dict.fromkeys((r["task"], r["kind"]) for r in comparison["results"]))
    for task_name, kind in tasks:
        task_rows = [r for r in comparison["results"] if r["task"] == task_name]
        languages = list(dict.fromkeys(r["language"] for r in task_rows))
        present = {r["metric"] for r in task_rows}
        shown = [m for m in headline(kind) if m in present and not m.startswith("n_")]
        for metric in shown or sorted(present):
            header = ["lang", "n", letter[base]] + [
                c for n in names[1:] for c in (letter[n], f"{letter[n]} − {letter[base]}")
            ]
            lines += [
                "",
                f"### {task_name}: {short_name(metric)} (%)",
                "",
                "| " + " | ".join(header) + " |",
                "|" + "---|" * len(header),
            ]
            unpaired: dict[tuple[str, str], list[str]] = {}
            for lang in languages:
                base_row = index.get((task_name, lang, metric, base))
                group = next(
                    (
                        r["resource_group"]
                        for r in task_rows
                        if r["language"] == lang and r["resource_group"]
                    ),
                    None,
                )
                rows = [index.get((task_name, lang, metric, name)) for name in names]
                cells = [f"{lang} ({group})" if group else lang, _counts(rows), _value(base_row)]
                for name, row in zip(names[1:], rows[1:]):
                    cells += [_value(row), _diff(row)]
                    if row and row.get("not_paired_reason") and row.get("difference") is not None:
                        unpaired.setdefault((row["not_paired_reason"], name), []).append(lang)
                lines.append("| " + " | ".join(cells) + " |")
            for mean in comparison["means"]:
                if mean["task"] != task_name or mean["metric"] != metric:
                    continue
                label = "mean" if mean["languages"] == "all" else f"mean {mean['languages']}"
                cells = [
                    f"**{label}**",
                    f"{mean['n_languages']} lang.",
                    f"{100 * mean['values'][base]:.1f}",
                ]
                for name in names[1:]:
                    cells += [
                        f"{100 * mean['values'][name]:.1f}",
                        f"{100 * mean['differences'][name]:+.1f}",
                    ]
                lines.append("| " + " | ".join(cells) + " |")
            if unpaired:
                lines.append("")
            compared = {
                name: sum(
                    1
                    for lang in languages
                    if (index.get((task_name, lang, metric, name)) or {}).get("difference")
                    is not None
                )
                for name in names[1:]
            }
            for (reason, name), langs in unpaired.items():
                if len(langs) == compared[name]:
                    which = f"all {len(langs)} languages" if len(langs) > 1 else langs[0]
                else:
                    more = len(langs) - max_listed
                    which = ", ".join(langs[:max_listed]) + (
                        f" and {more} more" if more > 0 else ""
                    )
                lines.append(f"° {letter[name]} not paired, {NOT_PAIRED[reason]}: {which}  ")
    costs = cost_markdown(comparison.get("cost", []))
    if costs:
        lines += ["", costs]
    return "\n".join(lines)


def _legend(boot: dict) -> str:
    return (
        "Values in %, `±` half the width of the 95% bootstrap interval (`[low, high]` where "
        "it is lopsided, near 0 or 100%); `B − A` columns: "
        f"difference to the baseline A in points; `*`: significant at "
        f"{round(100 * boot['confidence'])}% (paired bootstrap over the same images or "
        f"captions, {boot['resamples']} resamples, seed {boot['seed']}: the interval of the "
        "difference excludes 0; intervals and p-values in comparison.csv); `°`: not paired, no "
        "test (reason under the table). Marks are not corrected for the number of languages: "
        "about 1 in 20 differences between equal models is marked by chance. Means are over "
        "the languages every model has, without a test. `n`: samples scored, each "
        "model's (A / B / ...) where they differ."
    )


def _counts(rows: list[dict | None]) -> str:
    """The n cell: the models' common sample count, or each model's (A / B / ...) where they
    differ (``–`` for a model without the language)."""
    counts = [
        "–" if row is None or row.get("n_samples") is None else str(row["n_samples"])
        for row in rows
    ]
    known = {c for c in counts if c != "–"}
    if len(known) <= 1:
        return counts[0] if counts[0] != "–" else ""
    return " / ".join(counts)


def _value(row: dict | None) -> str:
    if row is None:
        return ""
    ci = None if row.get("ci_low") is None else (row["ci_low"], row["ci_high"])
    return format_value(row["value"], row["metric"], ci)


def _diff(row: dict | None) -> str:
    if row is None or row.get("difference") is None:
        return ""
    text = f"{100 * row['difference']:+.1f}"
    if row.get("significant"):
        text += "*"
    elif row.get("not_paired_reason"):
        text += "°"
    return text
