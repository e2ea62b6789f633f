"""Handlers of ``mclip eval`` and ``mclip report``: evaluate a model on a suite, and turn stored
results into tables, plots and comparisons (parsers in :mod:`mclip.cli`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from mclip.config import ConfigError
from mclip.outputs import check_writable, write_text_atomically


def _eval_tasks(args: argparse.Namespace):
    """(suite name, tasks) from --suite, or one task from --task and its flags."""
    from mclip.eval.suite import Suite, load_suite, make_task, narrow_languages, use_concept_counts

    if args.suite and args.task:
        raise ConfigError("give either --suite FILE or --task KIND with its flags, not both")
    if args.suite and args.provenance:
        raise ConfigError(
            "--provenance tags an inline --task; in a suite, give each task its 'provenance' key"
        )
    if args.suite:
        suite = load_suite(args.suite, args.data_root)
    elif args.task:
        raw = {
            "name": args.task,
            "kind": args.task,
            "languages": args.languages or "all",
            "images": args.images,
        }
        if args.task == "zeroshot_classification":
            raw.update(class_texts=args.class_texts, dataset=args.dataset, prompts=args.prompts)
        elif args.task == "topic_matching":
            raw.update(
                sentences=args.sentences,
                split=args.split,
                reference_language=args.reference_language,
            )
        elif args.task == "bitext_retrieval":
            if args.images is None:  # text only; --images given is refused by make_task
                raw.pop("images")
            raw.update(sentences=args.sentences, split=args.split, pivot=args.pivot)
        elif args.task == "text_to_text":
            raw.update(captions=args.captions, split=args.split, pivot=args.pivot)
        elif args.task == "retrieval":
            raw.update(captions=args.captions, split=args.split)
        if args.provenance:
            raw["provenance"] = args.provenance  # image_to_image refuses it: no texts
        suite = Suite(args.task, [make_task(raw, Path(args.data_root or "."), "--task")])
    else:
        raise ConfigError(
            "give --suite FILE (see eval_suites/) or --task zeroshot_classification "
            "| retrieval | topic_matching | bitext_retrieval | image_to_image | "
            "text_to_text with its data flags"
        )
    if args.languages and args.suite:
        narrow_languages(suite, args.languages)
    if args.concept_counts:
        if not any(t.kind == "zeroshot_classification" for t in suite.tasks):
            raise ConfigError(
                "--concept-counts applies to zero-shot classification tasks; the suite has none"
            )
        use_concept_counts(suite, args.concept_counts)
    return suite


def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from mclip.eval.distributed import init_eval_ranks, shutdown_eval_ranks
    from mclip.eval.report import build_report, markdown_table, write_report
    from mclip.eval.suite import run_suite
    from mclip.models.adapters import load_model

    suite = _eval_tasks(args)
    out_dir = (
        Path(args.out)
        if args.out
        else (
            Path(args.model) / "eval" / suite.name
            if Path(args.model).is_dir()
            else Path("eval_out") / suite.name
        )
    )
    check_writable(out_dir, "--out" if args.out else "the output folder (--out)")
    if args.cache:
        check_writable(args.cache, "--cache")
    device = (
        args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        device = f"cuda:{os.environ['LOCAL_RANK']}"
    ranks = init_eval_ranks(device)
    try:
        model = load_model(
            args.model,
            pretrained=args.pretrained,
            device=device,
            language_adapters=not args.no_adapters,
            model_config=args.model_config,
        )
        log = None
        if not args.quiet and ranks.is_main:
            log = lambda line: print(f"[mclip eval] {line}", file=sys.stderr)  # noqa: E731
        if ranks.is_main:
            _say_which_checkpoint(model, args.model, log)
        if ranks.world_size > 1 and log:
            log(f"{ranks.world_size} ranks: each encodes its share of the images and texts")
        cost: dict = {}
        results = run_suite(
            model,
            suite,
            device=device,
            batch_size=args.batch_size,
            progress=log,
            limit=args.limit,
            bootstrap=args.bootstrap,
            seed=args.seed,
            cache_dir=args.cache,
            ranks=ranks,
            embed_dims=args.embed_dims,
            workers=_image_workers(args.workers, device, ranks),
            precision=args.precision,
            cost=cost,
        )
    finally:
        shutdown_eval_ranks(ranks)
    if not ranks.is_main:
        return 0
    report = build_report(model.name, suite.name, results, model_versions=model.versions, cost=cost)
    print(markdown_table(report), flush=True)  # before writing: a full disk loses no numbers
    paths = write_report(report, out_dir)
    print(f"\nresults: {paths['json']}\ntable:   {paths['markdown']}\nplot:    {paths['plot']}")
    return 0


def _image_workers(requested: int | None, device: str, ranks) -> int:
    """``--workers``, or by default the usable CPUs (per rank on this host), less one on a GPU."""
    from mclip.eval.image_loading import default_image_workers

    if requested is not None:
        return requested
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", ranks.world_size))
    return default_image_workers(device.split(":")[0], local_ranks)


def _say_which_checkpoint(model, spec: str, log) -> None:
    """Name the checkpoint a run directory resolved to; damaged newer ones always (stderr)."""
    from mclip.cli_progress import warn_passed_over

    warn_passed_over("mclip eval", getattr(model, "damaged_checkpoints", []))
    checkpoint = getattr(model, "checkpoint", None)
    if log and checkpoint is not None and Path(checkpoint) != Path(spec):
        log(f"using checkpoint {checkpoint}, the newest intact one of {spec}")


def cmd_report(args: argparse.Namespace) -> int:
    from mclip.eval.compare import compare_reports, comparison_markdown, model_letters, model_names
    from mclip.eval.cost_report import cost_chart, cost_csv_rows
    from mclip.eval.frequency_report import frequency_chart, has_frequency_bins
    from mclip.eval.export import (
        COMPARISON_COLUMNS,
        clip_benchmark_documents,
        write_clip_benchmark,
        write_csv,
    )
    from mclip.eval.plots import overview_chart, write_task_charts
    from mclip.eval.sensitivity_charts import dims_chart, has_template_scores, prompts_chart
    from mclip.eval.provenance import TEXT_FREE_KINDS, filter_report
    from mclip.eval.report import (
        add_means,
        dims_families,
        load_report,
        markdown_table,
        write_report,
    )
    from mclip.eval.results import recompute_intervals

    formats = tuple(dict.fromkeys(args.format))
    out = (
        Path(args.out)
        if args.out
        else (Path(args.results[0]).parent if len(args.results) == 1 else Path("comparison"))
    )
    if args.provenance and not args.out:  # a filtered report never replaces the full one
        out = out / f"provenance_{'+'.join(args.provenance)}"
    check_writable(out, "--out" if args.out else "the output folder (--out)")
    reports = [load_report(path) for path in args.results]
    if args.provenance:  # only the languages whose texts have these origins; means again
        reports = [filter_report(r, args.provenance) for r in reports]
        for path, report in zip(args.results, reports):
            if all(t["kind"] in TEXT_FREE_KINDS for t in report["tasks"].values()):
                raise ConfigError(
                    f"'{path}' has no language whose texts are "
                    f"{' or '.join(args.provenance)}; see the 'provenance' of "
                    f"its languages, or give other tags"
                )
            add_means(report["tasks"])
    if args.bootstrap is not None:  # intervals again from the stored per-sample ranks
        reports = [recompute_intervals(r, args.bootstrap, args.seed) for r in reports]
    if len(reports) == 1:
        source = Path(args.results[0]).parent
        # the JSON is rewritten only when its intervals changed or it goes to another folder
        rewrite = args.bootstrap is not None or out.resolve() != source.resolve()
        print(markdown_table(reports[0]), flush=True)  # before writing: a full disk loses none
        paths = write_report(reports[0], out, formats=("json",) * rewrite + formats)
        written = [p for v in paths.values() for p in (v if isinstance(v, list) else [v])]
    else:
        names = model_names(reports, args.results)
        n_resamples = 1000 if args.bootstrap is None else args.bootstrap
        comparison = compare_reports(reports, names, n_resamples, args.seed)
        table = comparison_markdown(comparison)
        print(table, flush=True)  # before writing: a full disk loses no numbers
        written = [
            write_text_atomically(
                out / "comparison.json", json.dumps(comparison, indent=1, ensure_ascii=False)
            )
        ]
        if "markdown" in formats:
            written.append(
                write_text_atomically(
                    out / "comparison.md", f"# Comparison of {len(names)} models\n\n{table}\n"
                )
            )
        if "csv" in formats:
            costs = [row for name, r in zip(names, reports) for row in cost_csv_rows(r, name)]
            written.append(
                write_csv(comparison["results"] + costs, out / "comparison.csv", COMPARISON_COLUMNS)
            )
        if "png" in formats:
            entries = list(zip(names, reports))
            written.append(overview_chart(entries, out / "comparison.png"))
            written += write_task_charts(entries, out, prefix="comparison")
            if any(dims_families(r) for r in reports):
                written.append(dims_chart(entries, out / "comparison_dims.png"))
            if any(has_template_scores(r) for r in reports):
                written.append(prompts_chart(entries, out / "comparison_prompts.png"))
            if any(has_frequency_bins(r) for r in reports):
                written.append(frequency_chart(entries, out / "comparison_concepts.png"))
            if comparison["cost"]:
                written.append(cost_chart(comparison["cost"], out / "comparison_cost.png"))
        if "clip_benchmark" in formats:  # reports whose file names clash get their letter
            names_of = [{n for n, _ in clip_benchmark_documents(r)[0]} for r in reports]
            for i, (report, letter) in enumerate(zip(reports, model_letters(len(reports)))):
                clash = any(names_of[i] & other for j, other in enumerate(names_of) if j != i)
                written += write_clip_benchmark(
                    report, out / "clip_benchmark", tag=letter if clash else ""
                )
    skipped = [
        t
        for r in reports
        for t, task in r["tasks"].items()
        if "clip_benchmark" in formats
        and task["kind"] not in ("zeroshot_classification", "retrieval")
    ]
    if skipped:
        print(
            f"\nnot in the CLIP_benchmark files (no such task there): "
            f"{', '.join(sorted(set(skipped)))}"
        )
    folders = sorted({str(p.parent) for p in written})
    print(f"\nwrote {len(set(written))} files to {', '.join(folders)}")
    return 0
