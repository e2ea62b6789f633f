"""Reading a results document: its metrics and intervals, languages, resource groups and means.

A results JSON (:mod:`mclip.eval.report` writes it) holds, per task and language, scalar metrics
(fractions in [0, 1], or counts named ``n_*``), a 95% bootstrap interval per metric under ``ci``
and per-sample ranks under ``samples`` (:mod:`mclip.eval.samples`). Older files may lack ``ci`` /
``samples`` / ``data``: every reader here treats them as absent. This module is the layer the
table, the charts (:mod:`mclip.eval.plots`), the CSV (:mod:`mclip.eval.export`) and comparisons
(:mod:`mclip.eval.compare`) share; it imports none of them.
"""

from __future__ import annotations

from mclip.eval.bootstrap import language_intervals
from mclip.eval.metric_names import headline
from mclip.eval.provenance import provenance_means
from mclip.eval.samples import SampleRanks, metric_spec

# The count that says how many samples a view averages over, for files without "samples".
VIEW_COUNTS = {
    "images": "n_images",
    "texts": "n_texts",
    "sentences": "n_sentences",
    "sentences_text_only": "n_sentences_text_only",
    "bitext_to_pivot": "n_pairs",
    "bitext_from_pivot": "n_pairs",
    "image_queries": "n_queries",
    "text_queries": "n_queries",
    "pivot_text_queries": "n_pivot_queries",
}
ENGLISH = "en"


# Babel-ImageNet's resource groups by the number of classes a language has (arXiv:2306.08658).
BABEL_GROUPS = ((100, "<=100"), (333, "101-333"), (666, "334-666"), (10**9, ">666"))
GROUP_ORDER = tuple(name for _, name in BABEL_GROUPS)


def resource_group(n_classes: int) -> str:
    """Babel-ImageNet's resource group of a language with ``n_classes`` classes."""
    return next(name for bound, name in BABEL_GROUPS if n_classes <= bound)


def add_means(tasks: dict) -> dict:
    """Per task of ``tasks`` ({name: task}), the means of its headline metrics over languages:
    ``mean``, ``mean_non_english``, ``group_means`` per resource group and ``provenance_means``
    per provenance tag (:mod:`mclip.eval.provenance`), each only where it has languages.
    Modifies and returns ``tasks``."""
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


def is_fraction_metric(key: str, value) -> bool:
    """Whether a language entry's ``key`` is a metric in [0, 1] (or None: not applicable), as
    opposed to a count (``n_*``, ``*_dropped``), a label or a nested block."""
    if key.startswith("n_") or key.endswith("_dropped") or key in ("ci", "samples"):
        return False
    return value is None or (isinstance(value, float) and not isinstance(value, bool))


def fraction_metrics(languages: dict) -> list[str]:
    """The fraction metrics present in any of ``languages`` ({lang: metrics}), first-seen order."""
    return list(
        dict.fromkeys(
            k for m in languages.values() for k, v in m.items() if is_fraction_metric(k, v)
        )
    )


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
            views = {
                view: SampleRanks.from_json(packed)
                for view, packed in metrics.get("samples", {}).items()
            }
            if views:
                metrics["ci"] = language_intervals(metrics, views, n_resamples, seed, name, lang)
        if n_resamples:
            task["bootstrap"] = {
                **task.get("bootstrap", {}),
                "resamples": n_resamples,
                "seed": seed,
            }
    return report


def ordered_languages(tasks: list[dict]) -> list[str]:
    """Languages of ``tasks`` (first-seen order), grouped by resource group (smallest first)
    when they have one; languages without a group come last."""
    languages = list(dict.fromkeys(lang for t in tasks for lang in t["languages"]))
    group_of = language_groups(tasks)
    if group_of:
        languages.sort(
            key=lambda lang: (
                GROUP_ORDER.index(group_of[lang])
                if group_of.get(lang) in GROUP_ORDER
                else len(GROUP_ORDER)
            )
        )
    return languages


def language_groups(tasks: list[dict]) -> dict[str, str]:
    """{language: resource group} for the languages of ``tasks`` that have one."""
    return {
        lang: m["resource_group"]
        for t in tasks
        for lang, m in t["languages"].items()
        if "resource_group" in m
    }


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


def dims_families(report: dict) -> dict[str, list[tuple[int, dict]]]:
    """{base task: [(embedding size, task), ...] ascending} for tasks scored at several sizes
    (``mclip eval --embed-dims``; :mod:`mclip.eval.embed_dims`)."""
    families: dict[str, list[tuple[int, dict]]] = {}
    for name, task in report["tasks"].items():
        if task.get("embed_dim") is not None:
            families.setdefault(task.get("base_task", name), []).append((task["embed_dim"], task))
    return {
        base: sorted(sized, key=lambda pair: pair[0])
        for base, sized in families.items()
        if len(sized) > 1
    }
