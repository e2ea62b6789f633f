"""Reports: tables with intervals, paired comparisons, CSV, CLIP_benchmark files and charts, all
on synthetic results documents built from SampleRanks (no model, no runner)."""

import argparse
import ast
import csv
import importlib.util
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from mclip.eval import export, plots
from mclip.eval.bootstrap import language_intervals
from mclip.eval.compare import compare_reports, comparison_markdown, model_names
from mclip.eval.report import (
    build_report,
    format_value,
    load_report,
    markdown_table,
    write_report,
)
from mclip.eval.results import recompute_intervals, resource_group
from mclip.eval.samples import SampleRanks


def _mpcr(hits, labels):
    classes = np.unique(labels)
    return float(np.mean([hits[labels == c].mean() for c in classes]))


def classification_entry(
    task, lang, ranks, labels, n_classes, image_ids, n_boot=200, seed=0, groups=True
):
    """One language of a zero-shot task, as the runner writes it: metrics, ci, samples."""
    ranks = np.asarray(ranks)
    view = SampleRanks.build((f"{i}\t{y}" for i, y in zip(image_ids, labels)), ranks, labels)
    metrics = {
        "acc@1": float((ranks < 1).mean()),
        "acc@5": float((ranks < 5).mean()) if n_classes >= 5 else None,
        "mean_per_class_recall": _mpcr(ranks < 1, np.asarray(labels)),
        "n_classes": n_classes,
        "n_images": len(ranks),
    }
    if groups:
        metrics["resource_group"] = resource_group(n_classes)
    if n_boot:
        metrics["ci"] = language_intervals(metrics, {"images": view}, n_boot, seed, task, lang)
    metrics["samples"] = {"images": view.to_json()}
    return metrics


def retrieval_entry(task, lang, t2i, i2t, n_boot=200, seed=0):
    """One language of a retrieval task (one caption per image)."""
    t2i, i2t = np.asarray(t2i), np.asarray(i2t)
    views = {
        "texts": SampleRanks.build((f"img{i}\tcap{i}" for i in range(len(t2i))), t2i),
        "images": SampleRanks.build((f"img{i}" for i in range(len(i2t))), i2t),
    }
    metrics = {
        f"{d}_R@{k}": float((r < k).mean())
        for k in (1, 5, 10)
        for d, r in (("text_to_image", t2i), ("image_to_text", i2t))
    }
    metrics.update(n_images=len(i2t), n_texts=len(t2i), captions_dropped=0)
    if n_boot:
        metrics["ci"] = language_intervals(metrics, views, n_boot, seed, task, lang)
    metrics["samples"] = {v: s.to_json() for v, s in views.items()}
    return metrics


def _misses(rng, n):
    return rng.integers(1, 30, n)


def synthetic_report(
    model,
    languages,
    seed=0,
    shift=0.0,
    n_images=300,
    retrieval=True,
    data="set-a",
    n_boot=200,
    groups=True,
):
    """A results document: a zero-shot task (per language its own class count, so languages fall
    into all resource groups) and a retrieval task; ``shift`` raises every hit rate."""
    rng = np.random.default_rng(seed)
    zs, ret = {}, {}
    for j, lang in enumerate(languages):
        lang_rng = np.random.default_rng([seed, j])
        n_classes = [18, 90, 250, 500, 900][j % 5]
        labels = lang_rng.integers(0, n_classes, n_images)
        rate = min(0.95, max(0.05, 0.25 + 0.5 * ((j * 37) % 11) / 10 + shift))
        hits = rng.random(n_images) < rate
        ranks = np.where(hits, 0, _misses(rng, n_images))
        zs[lang] = classification_entry(
            "babel",
            lang,
            ranks,
            labels,
            n_classes,
            [f"img{i}" for i in range(n_images)],
            n_boot,
            0,
            groups,
        )
        if retrieval:
            t2i = np.where(rng.random(n_images) < rate, 0, _misses(rng, n_images))
            i2t = np.where(rng.random(n_images) < rate, 0, _misses(rng, n_images))
            ret[lang] = retrieval_entry("xtd", lang, t2i, i2t, n_boot)
    results = {
        "babel": {
            "kind": "zeroshot_classification",
            "languages": zs,
            "skipped": {},
            "seconds": 1.0,
            "data": {"images": data},
            "bootstrap": {"resamples": n_boot, "seed": 0, "confidence": 0.95},
        }
    }
    if retrieval:
        results["xtd"] = {
            "kind": "retrieval",
            "languages": ret,
            "skipped": {},
            "seconds": 1.0,
            "data": {"images": data},
            "bootstrap": {"resamples": n_boot, "seed": 0, "confidence": 0.95},
        }
    return build_report(model, "synthetic", results)


def language_codes(n):
    """n distinct two-letter codes: ``en``, ``de``, ... then made-up ones."""
    real = ["en", "de", "fr", "es", "it", "ja", "zh", "ar", "hi", "sw", "ko", "ru"]
    letters = "abcdefghijklmnopqrstuvwxyz"
    return (real + [a + b for a in letters for b in letters if a + b not in real])[:n]


def _pair(a_ranks, b_ranks, ids="x"):
    return (
        SampleRanks(ids, np.asarray(a_ranks, dtype=np.uint8)),
        SampleRanks(ids, np.asarray(b_ranks, dtype=np.uint8)),
    )


def _two_model_reports(view_a, view_b, data_a="d", data_b="d"):
    def doc(name, view, data):
        hits = view.ranks < 1
        return {
            "model": name,
            "suite": "s",
            "tasks": {
                "t": {
                    "kind": "zeroshot_classification",
                    "data": {"images": data},
                    "languages": {
                        "de": {
                            "acc@1": float(hits.mean()),
                            "n_classes": 10,
                            "n_images": len(view),
                            "samples": {"images": view.to_json()},
                        }
                    },
                }
            },
        }

    return doc("A", view_a, data_a), doc("B", view_b, data_b)


def _acc1_row(comparison):
    return next(r for r in comparison["results"] if r["model"] == "B" and r["metric"] == "acc@1")


def test_paired_comparison_flags_a_real_difference():
    """B = A with 15% of A's hits turned into misses, 2000 samples: significant, negative."""
    rng = np.random.default_rng(0)
    a = np.where(rng.random(2000) < 0.6, 0, 3)
    b = a.copy()
    hit_idx = np.flatnonzero(a == 0)
    b[rng.choice(hit_idx, int(0.15 * len(hit_idx)), replace=False)] = 3
    comparison = compare_reports(list(_two_model_reports(*_pair(a, b))), ["A", "B"], 1000, 0)
    row = _acc1_row(comparison)
    assert row["paired"] and row["significant"] and row["difference"] < -0.05
    assert row["diff_low"] <= row["difference"] <= row["diff_high"] < 0 and row["p_value"] < 0.01


def test_paired_comparison_does_not_flag_noise():
    """B = A with 1% of samples' outcomes swapped at random in both directions (as many hits
    lost as gained), and two independent draws of the same hit rate on 150 samples: marked in at
    most a few of 20 seeded cases."""
    flagged_swaps, flagged_draws = 0, 0
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        a = np.where(rng.random(2000) < 0.6, 0, 3)
        b = a.copy()
        hits, misses = np.flatnonzero(a == 0), np.flatnonzero(a != 0)
        b[rng.choice(hits, 10, replace=False)] = 3
        b[rng.choice(misses, 10, replace=False)] = 0
        row = _acc1_row(
            compare_reports(list(_two_model_reports(*_pair(a, b))), ["A", "B"], 1000, seed)
        )
        flagged_swaps += row["significant"]
        c = np.where(rng.random(150) < 0.5, 0, 3)
        d = np.where(rng.random(150) < 0.5, 0, 3)
        row = _acc1_row(
            compare_reports(list(_two_model_reports(*_pair(c, d))), ["A", "B"], 1000, seed)
        )
        flagged_draws += row["significant"]
    assert flagged_swaps == 0
    assert flagged_draws <= 3


def test_comparison_refuses_to_pair_different_data_and_says_why():
    rng = np.random.default_rng(0)
    a, b = np.where(rng.random(500) < 0.6, 0, 3), np.where(rng.random(500) < 0.3, 0, 3)
    view_a = SampleRanks("ids-1", a.astype(np.uint8))
    view_b = SampleRanks("ids-2", b.astype(np.uint8))
    comparison = compare_reports(
        list(_two_model_reports(view_a, view_b, "set-a", "set-b")), ["A", "B"], 200, 0
    )
    row = _acc1_row(comparison)
    assert not row["paired"] and row["significant"] is None and row["p_value"] is None
    assert row["not_paired_reason"] == "different_data" and row["difference"] < -0.2
    table = comparison_markdown(comparison)
    de_row = next(line for line in table.splitlines() if line.startswith("| de |"))
    assert de_row.endswith("° |") and "*" not in de_row
    assert (
        "° B not paired, different data (the image sets, captions or sentences differ): de" in table
    )
    # same image set, other samples scored (e.g. --limit): a different reason
    same = compare_reports(
        list(_two_model_reports(view_a, view_b, "set-a", "set-a")), ["A", "B"], 200, 0
    )
    assert _acc1_row(same)["not_paired_reason"] == "different_samples"


def test_old_files_without_samples_are_compared_unpaired():
    old_a = synthetic_report("A", ["en", "de"], seed=1)
    old_b = synthetic_report("B", ["en", "de"], seed=2)
    for report in (old_a, old_b):
        for task in report["tasks"].values():
            task.pop("data")
            for metrics in task["languages"].values():
                metrics.pop("samples")
                metrics.pop("ci")
    comparison = compare_reports([old_a, old_b], ["A", "B"], 200, 0)
    rows = [r for r in comparison["results"] if r["model"] == "B"]
    assert rows and all(not r["paired"] and r["not_paired_reason"] == "no_samples" for r in rows)
    assert "a file has no per-sample results" in comparison_markdown(comparison)
    assert "±" not in markdown_table(old_a)


def test_report_intervals_contain_the_value_and_repeat_for_a_seed():
    report = synthetic_report("A", language_codes(6), seed=3, n_boot=0)
    first = recompute_intervals(json.loads(json.dumps(report)), 500, seed=7)
    again = recompute_intervals(json.loads(json.dumps(report)), 500, seed=7)
    other = recompute_intervals(json.loads(json.dumps(report)), 500, seed=8)
    n = 0
    for name, task in first["tasks"].items():
        for lang, metrics in task["languages"].items():
            for metric, (low, high) in metrics["ci"].items():
                assert low <= metrics[metric] <= high and high > low
                n += 1
            assert metrics["ci"] == again["tasks"][name]["languages"][lang]["ci"]
    assert n == 6 * 3 + 6 * 6
    assert (
        first["tasks"]["babel"]["languages"]["de"]["ci"]
        != other["tasks"]["babel"]["languages"]["de"]["ci"]
    )
    assert "ci" not in recompute_intervals(first, 0, 0)["tasks"]["babel"]["languages"]["de"]


def test_markdown_table_intervals_and_group_means():
    report = synthetic_report("A", language_codes(10), seed=0)
    table = markdown_table(report)
    assert " ±" in table and "half the width of the 95%" in table
    for label in (
        "**mean**",
        "**mean non-English**",
        "**mean <=100**",
        "**mean 101-333**",
        "**mean 334-666**",
        "**mean >666**",
    ):
        assert f"| {label} |" in table
    de = report["tasks"]["babel"]["languages"]["de"]
    low, high = de["ci"]["acc@1"]
    assert (
        f"| de ({de['resource_group']}) | {100 * de['acc@1']:.1f} ±{50 * (high - low):.1f} |"
        in table
    )
    # near 0 the interval is lopsided: its bounds, not a "±" that would reach below 0
    assert format_value(0.021, "acc@1", (0.0, 0.062)) == "2.1 [0.0, 6.2]"
    assert format_value(0.612, "acc@1", (0.589, 0.635)) == "61.2 ±2.3"
    assert report["tasks"]["babel"]["mean_non_english"]["acc@1"] == pytest.approx(
        np.mean(
            [
                m["acc@1"]
                for lang, m in report["tasks"]["babel"]["languages"].items()
                if lang != "en"
            ]
        )
    )


def test_comparison_table_marks_and_csv_columns(tmp_path):
    langs = language_codes(5)
    a = synthetic_report("model-x", langs, seed=0, n_images=1500)
    b = synthetic_report("model-x", langs, seed=0, shift=0.15, n_images=1500)  # same images
    names = model_names([a, b], ["runs/a.json", "runs/b.json"])
    assert names == ["model-x (runs/a.json)", "model-x (runs/b.json)"]
    comparison = compare_reports([a, b], names, 500, 0)
    rows = [r for r in comparison["results"] if r["model"] == names[1] and r["metric"] == "acc@1"]
    assert all(r["paired"] for r in rows) and sum(r["significant"] for r in rows) >= 4
    table = comparison_markdown(comparison)
    assert "### babel: acc@1 (%)" in table and "*" in table and "| **mean non-English** |" in table
    assert "| B − A |" in table and f"**B** = `{names[1]}`" in table
    path = export.write_csv(comparison["results"], tmp_path / "c.csv", export.COMPARISON_COLUMNS)
    with path.open() as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == export.COMPARISON_COLUMNS
        read = list(reader)
    row = next(
        r
        for r in read
        if r["model"] == names[1] and r["language"] == "de" and r["metric"] == "acc@1"
    )
    assert float(row["ci_low"]) <= float(row["value"]) <= float(row["ci_high"])
    assert float(row["diff_low"]) <= float(row["difference"]) <= float(row["diff_high"])
    assert row["significant"] in ("True", "False") and row["p_value"] and row["n_samples"] == "1500"
    assert row["resource_group"] == a["tasks"]["babel"]["languages"]["de"]["resource_group"]
    single = export.report_rows(a, "model-x")
    assert set(single[0]) == set(export.CSV_COLUMNS)
    assert {r["metric"] for r in single} >= {
        "acc@1",
        "acc@5",
        "mean_per_class_recall",
        "text_to_image_R@5",
        "image_to_text_R@10",
    }


def test_clip_benchmark_files_match_its_format_and_its_build_reads_them(tmp_path):
    report = synthetic_report("open_clip:ViT-B-32/laion2b_s34b_b79k", ["en", "de"], seed=0)
    report["tasks"]["babel"]["languages"]["de"]["acc@5"] = None  # fewer than 5 classes
    report["tasks"]["topics"] = {
        "kind": "topic_matching",
        "languages": {"en": {"topic_acc@1": 0.5, "n_sentences": 10}},
    }
    paths = export.write_clip_benchmark(report, tmp_path / "cb")
    names = sorted(p.name for p in paths)
    assert names == [
        "babel_laion2b_s34b_b79k_ViT-B-32_de_zeroshot_classification.json",
        "babel_laion2b_s34b_b79k_ViT-B-32_en_zeroshot_classification.json",
        "xtd_laion2b_s34b_b79k_ViT-B-32_de_zeroshot_retrieval.json",
        "xtd_laion2b_s34b_b79k_ViT-B-32_en_zeroshot_retrieval.json",
    ]
    doc = json.loads((tmp_path / "cb" / names[0]).read_text())
    assert list(doc) == ["dataset", "model", "pretrained", "task", "metrics", "language"]
    assert doc["model"] == "ViT-B-32" and doc["pretrained"] == "laion2b_s34b_b79k"
    assert set(doc["metrics"]) == {"acc1", "acc5", "mean_per_class_recall"}
    assert math.isnan(doc["metrics"]["acc5"]) and doc["language"] == "de"
    ret = json.loads((tmp_path / "cb" / names[3]).read_text())
    en = report["tasks"]["xtd"]["languages"]["en"]
    assert ret["metrics"]["image_retrieval_recall@5"] == en["text_to_image_R@5"]
    assert ret["metrics"]["text_retrieval_recall@5"] == en["image_to_text_R@5"]
    assert ret["task"] == "zeroshot_retrieval"
    # clip_benchmark's own `build` command turns the folder into its CSV
    _clip_benchmark_build()(
        argparse.Namespace(files=[str(tmp_path / "cb")], output=str(tmp_path / "benchmark.csv"))
    )
    with (tmp_path / "benchmark.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 4
    row = next(r for r in table if r["task"] == "zeroshot_retrieval" and r["language"] == "en")
    assert float(row["image_retrieval_recall@5"]) == pytest.approx(en["text_to_image_R@5"])
    assert row["model_fullname"] == "ViT-B-32 laion2b_s34b_b79k"
    assert export.clip_benchmark_names("runs/demo") == ("runs/demo", "")


def _clip_benchmark_build():
    """clip_benchmark's ``main_build`` (what ``clip_benchmark build`` runs). Its cli module
    imports every dataset loader (requests, pycocotools, ...); where one of those is missing, the
    function is taken from the installed cli.py's source alone (it needs only csv, json, os)."""
    try:
        from clip_benchmark.cli import main_build

        return main_build
    except ImportError:
        spec = importlib.util.find_spec("clip_benchmark")
        if spec is None:
            pytest.skip("clip-benchmark is not installed (pip install -e .[test])")
    source = Path(spec.submodule_search_locations[0], "cli.py")
    tree = ast.parse(source.read_text())
    function = next(
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name == "main_build"
    )
    namespace = {"csv": csv, "json": json, "os": os}
    exec(compile(ast.Module([function], type_ignores=[]), str(source), "exec"), namespace)
    return namespace["main_build"]


@pytest.mark.parametrize("n_languages,n_models", [(1, 1), (12, 3), (150, 2)])
def test_charts_are_written(tmp_path, n_languages, n_models):
    langs = language_codes(n_languages)
    entries = [
        (
            f"model {m}",
            synthetic_report(
                f"m{m}",
                langs,
                seed=0,
                shift=0.05 * m,
                n_images=60,
                n_boot=50,
                retrieval=n_languages < 100,
            ),
        )
        for m in range(n_models)
    ]
    paths = plots.write_task_charts(entries, tmp_path, prefix="cmp")
    paths.append(plots.overview_chart(entries, tmp_path / "overview.png"))
    assert len(paths) == (3 if n_languages < 100 else 2)
    for path in paths:
        assert path.stat().st_size > 5000
    assert plots.uses_dots(n_languages, n_models) == (n_languages == 150)


def test_write_report_and_load_report(tmp_path):
    report = synthetic_report("A", language_codes(3), seed=0)
    paths = write_report(
        report, tmp_path, formats=("json", "markdown", "csv", "png", "clip_benchmark")
    )
    assert {p.name for p in paths["charts"]} == {"results_babel.png", "results_xtd.png"}
    assert paths["plot"].stat().st_size > 10_000 and len(paths["clip_benchmark"]) == 6
    assert (
        load_report(paths["json"])["tasks"]["babel"]["languages"]["en"]["acc@1"]
        == report["tasks"]["babel"]["languages"]["en"]["acc@1"]
    )
    (tmp_path / "bad.json").write_text("{}")
    from mclip.config import ConfigError

    with pytest.raises(ConfigError, match="bad.json"):
        load_report(tmp_path / "bad.json")


def test_cli_report_of_one_and_of_two_files(tmp_path, capsys):
    from mclip.cli import main

    langs = language_codes(4)
    (tmp_path / "a.json").write_text(json.dumps(synthetic_report("A", langs, seed=0)))
    (tmp_path / "b.json").write_text(json.dumps(synthetic_report("B", langs, seed=0, shift=0.2)))
    other = synthetic_report("C", langs, seed=5, data="set-b", n_images=200)
    (tmp_path / "c.json").write_text(json.dumps(other))
    assert main(["report", str(tmp_path / "a.json"), "--out", str(tmp_path / "one")]) == 0
    out = capsys.readouterr().out
    assert "| **mean** |" in out and (tmp_path / "one" / "results.csv").is_file()
    assert (tmp_path / "one" / "results_babel.png").stat().st_size > 5000
    assert (
        main(
            [
                "report",
                str(tmp_path / "a.json"),
                str(tmp_path / "b.json"),
                str(tmp_path / "c.json"),
                "--out",
                str(tmp_path / "cmp"),
                "--bootstrap",
                "300",
                "--format",
                "markdown",
                "csv",
                "png",
                "clip_benchmark",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "| B − A |" in out and "*" in out
    assert (
        "° C not paired, different data (the image sets, captions or sentences differ): "
        "all 4 languages" in out
    )
    saved = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert saved["baseline"] == "A" and saved["bootstrap"]["resamples"] == 300
    assert any(r["paired"] for r in saved["results"] if r["model"] == "B")
    assert all(not r["paired"] for r in saved["results"] if r["model"] == "C")
    for name in ("comparison.md", "comparison.csv", "comparison.png", "comparison_babel.png"):
        assert (tmp_path / "cmp" / name).stat().st_size > 0
    assert len(list((tmp_path / "cmp" / "clip_benchmark").glob("*.json"))) == 3 * 4 * 2
    assert main(["report", str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in capsys.readouterr().err
