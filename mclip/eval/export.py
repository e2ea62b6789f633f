"""Results as files other tools read: a long-format CSV and CLIP_benchmark-style JSON files.

CSV: one row per (model, task, language, metric) with the value, its 95% interval, the resource
group and the number of samples; comparisons add the difference to the baseline, its interval,
the paired-bootstrap p-value and whether it is significant (:data:`COMPARISON_COLUMNS`).

CLIP_benchmark (LAION-AI/CLIP_benchmark, ``clip_benchmark eval``) writes one JSON per (dataset,
model, pretrained, language, task)::

    {"dataset": ..., "model": ..., "pretrained": ..., "task": ..., "metrics": {...},
     "language": ...}

named ``{dataset}_{pretrained}_{model}_{language}_{task}.json`` (its default ``--output``), and
``clip_benchmark build FILES --output benchmark.csv`` turns such files into one table. Metric names
(fractions in [0, 1], as there):

==============================  ====================================================
mclip                           CLIP_benchmark
==============================  ====================================================
``acc@1``, ``acc@5``            ``acc1``, ``acc5`` (NaN with fewer than 5 classes)
``mean_per_class_recall``       ``mean_per_class_recall``
``text_to_image_R@k``           ``image_retrieval_recall@k`` (task ``zeroshot_retrieval``)
``image_to_text_R@k``           ``text_retrieval_recall@k``
==============================  ====================================================

Topic matching has no CLIP_benchmark task and is not exported. ``dataset`` is mclip's task name,
``language`` mclip's code (CLIP_benchmark's ImageNet class-name files call ``zh`` / ``ja``
``cn`` / ``jp``). ``model`` / ``pretrained`` come from the model spec: ``open_clip:ARCH/TAG`` ->
``ARCH`` / ``TAG``; any other spec (an mclip run, ``hf:NAME``) -> the spec / ``""``.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

from mclip.eval.cost_report import cost_csv_rows
from mclip.eval.results import fraction_metrics, interval_of, language_groups, sample_count
from mclip.outputs import check_writable, write_atomically, write_text_atomically

CSV_COLUMNS = (
    "model",
    "task",
    "kind",
    "language",
    "resource_group",
    "provenance",
    "metric",
    "value",
    "ci_low",
    "ci_high",
    "n_samples",
)
COMPARISON_COLUMNS = CSV_COLUMNS + (
    "baseline",
    "difference",
    "diff_low",
    "diff_high",
    "p_value",
    "significant",
    "paired",
    "not_paired_reason",
)
CLIP_BENCHMARK_TASKS = {
    "zeroshot_classification": "zeroshot_classification",
    "retrieval": "zeroshot_retrieval",
}
CLIP_BENCHMARK_OUTPUT = "{dataset}_{pretrained}_{model}_{language}_{task}.json"
_RETRIEVAL = re.compile(r"(text_to_image|image_to_text)_R@(\d+)")


def metric_row(
    model: str, task_name: str, task: dict, lang: str, metrics: dict, metric: str, group: str | None
) -> dict:
    """The :data:`CSV_COLUMNS` of one (model, task, language, metric): value and interval bounds
    as fractions in [0, 1] (None where absent), n_samples from the per-sample ranks or counts."""
    ci = interval_of(metrics, metric)
    return {
        "model": model,
        "task": task_name,
        "kind": task["kind"],
        "language": lang,
        "resource_group": group,
        "provenance": metrics.get("provenance"),
        "metric": metric,
        "value": metrics[metric],
        "ci_low": ci[0] if ci else None,
        "ci_high": ci[1] if ci else None,
        "n_samples": sample_count(metrics, metric),
    }


def report_rows(report: dict, model: str) -> list[dict]:
    """Long-format rows (:func:`metric_row`) of one results document, per (task, language,
    fraction metric), then the model's cost (task ``cost``, :func:`cost_csv_rows`); ``model`` is
    the name written in the ``model`` column."""
    rows = []
    for task_name, task in report["tasks"].items():
        group_of = language_groups([task])
        names = fraction_metrics(task["languages"])
        for lang, metrics in task["languages"].items():
            rows += [
                metric_row(model, task_name, task, lang, metrics, metric, group_of.get(lang))
                for metric in names
                if metric in metrics
            ]
    return rows + cost_csv_rows(report, model)


def write_csv(rows: list[dict], path: str | Path, columns: tuple[str, ...] = CSV_COLUMNS) -> Path:
    """Write ``rows`` (dicts) as CSV with ``columns`` in that order (None -> empty cell); returns
    the path."""

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: "" if row.get(k) is None else row[k] for k in columns})

    return write_atomically(path, write)


def clip_benchmark_names(model_spec: str) -> tuple[str, str]:
    """(model, pretrained) as CLIP_benchmark writes them, from an mclip model spec."""
    if model_spec.startswith("open_clip:"):
        body = model_spec[len("open_clip:") :]
        if body.startswith(("hf-hub:", "local-dir:")):
            return body, ""
        arch, _, tag = body.partition("/")
        return arch, tag
    return model_spec, ""


def clip_benchmark_metrics(kind: str, metrics: dict) -> dict | None:
    """One language's metrics under CLIP_benchmark's names (None for a kind it has no task for)."""
    if kind == "zeroshot_classification":
        out = {
            "acc1": metrics.get("acc@1"),
            "acc5": metrics.get("acc@5"),
            "mean_per_class_recall": metrics.get("mean_per_class_recall"),
        }
        return {k: (math.nan if v is None else float(v)) for k, v in out.items()}
    if kind == "retrieval":
        out = {}
        for key, value in metrics.items():
            match = _RETRIEVAL.fullmatch(key)
            if match and value is not None:
                name = (
                    "image_retrieval_recall"
                    if match.group(1) == "text_to_image"
                    else "text_retrieval_recall"
                )
                out[f"{name}@{match.group(2)}"] = float(value)
        return dict(sorted(out.items(), key=lambda kv: (int(kv[0].split("@")[1]), kv[0])))
    return None


def clip_benchmark_documents(
    report: dict, tag: str = ""
) -> tuple[list[tuple[str, dict]], list[str]]:
    """([(file name, CLIP_benchmark result document)], [tasks not exported, with the reason]).
    ``tag`` (e.g. the report's letter in a comparison) is appended to the model part of each file
    name, so that reports of one model do not write the same names; the documents are as
    without it."""
    model, pretrained = clip_benchmark_names(str(report.get("model", "")))
    documents, skipped = [], []
    for task_name, task in report["tasks"].items():
        cb_task = CLIP_BENCHMARK_TASKS.get(task["kind"])
        if cb_task is None:
            skipped.append(f"{task_name}: CLIP_benchmark has no '{task['kind']}' task")
            continue
        for lang, metrics in task["languages"].items():
            document = {
                "dataset": task_name,
                "model": model,
                "pretrained": pretrained,
                "task": cb_task,
                "metrics": clip_benchmark_metrics(task["kind"], metrics),
                "language": lang,
            }
            name = CLIP_BENCHMARK_OUTPUT.format(
                dataset=_slug(task_name),
                pretrained=_slug(Path(pretrained).name if "/" in pretrained else pretrained),
                model=_slug(model) + (f"-{tag}" if tag else ""),
                language=_slug(lang),
                task=cb_task,
            )
            documents.append((name, document))
    return documents, skipped


def write_clip_benchmark(report: dict, out_dir: str | Path, tag: str = "") -> list[Path]:
    """Write one CLIP_benchmark-style JSON per (task, language) into ``out_dir``; returns the
    paths (tasks of kinds CLIP_benchmark lacks are left out; ``tag`` as in
    :func:`clip_benchmark_documents`)."""
    out_dir = check_writable(out_dir, "the clip_benchmark folder")
    # NaN for a missing acc5, as CLIP_benchmark writes it
    return [
        write_text_atomically(out_dir / name, json.dumps(document))
        for name, document in clip_benchmark_documents(report, tag)[0]
    ]


def _slug(text: str) -> str:
    """A file-name-safe form: path separators and other awkward characters become ``_``."""
    return re.sub(r"[^A-Za-z0-9@+=.,-]+", "_", text).strip("_") if text else ""
