"""Handlers of ``mclip data demo | index | parallel`` and ``mclip distill embed``: commands that
prepare data and teacher embeddings (parsers in :mod:`mclip.cli`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mclip.cli_progress import progress_bar
from mclip.outputs import check_writable


def cmd_data_index(args: argparse.Namespace) -> int:
    from mclip.data.index import build_index, default_index_path, write_index
    from mclip.data.shards import expand_shards

    shards = expand_shards(args.shards, key="SHARDS")
    target = Path(args.out) if args.out else default_index_path(shards)
    check_writable(target.parent, "--out" if args.out else "the shards' folder (--out)")
    with progress_bar("index", total=len(shards), unit="shard") as bar:
        index = build_index(
            shards, args.default_language, args.language_key, progress=lambda n: bar.update(1)
        )
    path = write_index(index, target)
    top = ", ".join(f"{lang} {n}" for lang, n in list(index["languages"].items())[:12])
    print(
        f"indexed {len(shards)} shards, {index['samples']} samples, "
        f"{len(index['languages'])} languages "
        f"({top}{', ...' if len(index['languages']) > 12 else ''})"
        f"; skipped: {index['skipped'] or 'none'}"
    )
    print(f"wrote {path}")
    return 0


def cmd_distill_embed(args: argparse.Namespace) -> int:
    from mclip.data.shards import expand_shards
    from mclip.data.teacher_cache import write_teacher_embeddings
    from mclip.models.adapters import load_model
    from mclip.train.setup import resolve_device

    shards = expand_shards(args.shards, key="--shards")
    check_writable(args.out, "--out")
    teacher = load_model(
        args.teacher,
        pretrained=args.pretrained,
        device=resolve_device(args.device),
        model_config=args.model_config,
    ).eval()
    with progress_bar("teacher embeddings", unit="img") as bar:
        meta = write_teacher_embeddings(
            teacher,
            args.teacher,
            shards,
            args.out,
            args.dtype,
            args.languages,
            args.batch_size,
            args.default_language,
            args.language_key,
            progress=bar.update,
        )
    print(
        f"embedded {meta['images']} images and {meta['texts']} captions "
        f"({len(meta['languages'])} languages) of {len(shards)} shards with {args.teacher} "
        f"(d={meta['embed_dim']}, {meta['dtype']}; {meta['reused_parts']} shards already "
        f"embedded were kept); skipped: {meta['skipped'] or 'none'}"
    )
    print(f"wrote {args.out}; train with distill.teachers=[{{embeddings: {args.out}}}]")
    return 0


def cmd_data_parallel(args: argparse.Namespace) -> int:
    from mclip.data.parallel import parallel_from_shards, write_parallel_tsv
    from mclip.data.shards import expand_shards

    shards = expand_shards(args.shards, key="SHARDS")
    check_writable(Path(args.out).parent, "--out's folder")
    pairs, skipped = parallel_from_shards(
        shards, args.source_language, args.languages, args.per_language, args.seed
    )
    path = write_parallel_tsv(pairs, args.out)
    languages = sorted({lang for _, _, lang in pairs})
    print(
        f"wrote {len(pairs)} pairs ({args.source_language} -> {len(languages)} languages: "
        f"{', '.join(languages)}) to {path}; skipped: {skipped or 'none'}"
    )
    return 0


def cmd_data_demo(args: argparse.Namespace) -> int:
    from mclip.data.demo import write_demo_dataset
    from mclip.data.demo_hard import write_hard_demo_dataset

    check_writable(args.out, "--out")
    write = write_hard_demo_dataset if args.level == "hard" else write_demo_dataset
    extra = 200 if args.level == "hard" else 24  # retrieval images
    total = args.train + args.eval_per_class * 24 + extra
    with progress_bar("demo data", total=total, unit="img") as bar:
        summary = write(
            args.out,
            n_train=args.train,
            n_eval_per_class=args.eval_per_class,
            image_size=args.image_size,
            shard_size=args.shard_size,
            seed=args.seed,
            progress=bar.update,
        )
    print(
        f"wrote {summary['counts']} images, {summary['classes']} classes, captions in "
        f"{len(summary['languages'])} languages ({', '.join(summary['languages'])}) "
        f"to {args.out}"
    )
    if args.level == "hard":
        print(
            "evaluate with eval_suites/demo_hard.yaml; train with data.augment=false (a flip "
            "swaps left and right) and model.text.max_length=192"
        )
    return 0


def cmd_data_score(args: argparse.Namespace) -> int:
    from mclip.data.score import write_scores
    from mclip.data.score_report import score_summary, write_score_report
    from mclip.data.shards import expand_shards
    from mclip.eval.distributed import init_eval_ranks, shutdown_eval_ranks
    from mclip.models.adapters import load_model
    from mclip.train.setup import resolve_device

    shards = expand_shards(args.shards, key="SHARDS")
    check_writable(args.out, "--out")
    device = resolve_device(args.device)
    ranks = init_eval_ranks(str(device))
    try:
        model = load_model(args.model, pretrained=args.pretrained, device=device).eval()
        with progress_bar(
            "score", total=len(shards[ranks.rank :: ranks.world_size]), unit="shard"
        ) as bar:
            summary = write_scores(
                model,
                args.model,
                shards,
                args.out,
                args.batch_size,
                args.default_language,
                args.language_key,
                args.languages,
                ranks.rank,
                ranks.world_size,
                progress=lambda m: bar.update(1),
            )
        ranks.barrier()
    finally:
        shutdown_eval_ranks(ranks)
    if not ranks.is_main:
        return 0
    paths = write_score_report(args.out)
    from mclip.data.score import all_scores

    rows = score_summary(all_scores(args.out))
    print(
        f"scored {sum(r['n'] for r in rows)} captions of {len(shards)} shards with "
        f"{args.model} ({summary['reused']} of this rank's shards kept from an earlier run); "
        f"skipped: {summary['skipped'] or 'none'}"
    )
    print("| language | captions | mean | median | < 0.26 | < 0.28 |\n|---|---|---|---|---|---|")
    for row in rows[:40]:
        print(
            f"| {row['language']} | {row['n']} | {row['mean']:.3f} | {row['p50']:.3f} | "
            f"{100 * row['removed_below_0.26']:.1f}% | {100 * row['removed_below_0.28']:.1f}% |"
        )
    print(f"wrote {args.out} ({paths['plot'].name}, {paths['quantiles'].name})")
    return 0


def cmd_data_filter(args: argparse.Namespace) -> int:
    from mclip.config import ConfigError
    from mclip.data.curation import filter_shards, read_thresholds_file, thresholds
    from mclip.data.shards import expand_shards

    shards = expand_shards(args.shards, key="SHARDS")
    if (args.keep_fraction is None) == (args.min_score is None and not args.min_score_by_language):
        raise ConfigError(
            "give --min-score / --min-score-by-language, or --keep-fraction (one "
            "way of choosing the thresholds)"
        )
    check_writable(args.out, "--out")
    by_language = (
        read_thresholds_file(args.min_score_by_language) if args.min_score_by_language else None
    )
    limits = thresholds(args.scores, args.min_score, by_language, args.keep_fraction)
    with progress_bar("filter", total=len(shards), unit="shard") as bar:
        counts = filter_shards(
            shards,
            args.scores,
            limits,
            args.out,
            args.default_language,
            args.language_key,
            progress=lambda n: bar.update(1),
        )
    print(
        f"kept {counts['samples_kept']} of {counts['samples_in']} samples; skipped: "
        f"{counts['skipped'] or 'none'}"
    )
    print("| language | threshold | captions | kept |\n|---|---|---|---|")
    for language, c in counts["captions"].items():
        print(
            f"| {language} | {limits.get(language, float('nan')):.3f} | {c.get('in', 0)} | "
            f"{100 * c.get('kept', 0) / max(c.get('in', 0), 1):.1f}% |"
        )
    print(f"wrote {len(shards)} shards to {args.out}")
    return 0


def spread(items: list, n: int | None) -> list:
    """``n`` items spread evenly over ``items`` (first and last included), all for None."""
    if n is None or n >= len(items):
        return list(items)
    if n == 1:
        return [items[0]]
    return [items[round(i * (len(items) - 1) / (n - 1))] for i in range(n)]


def cmd_data_concepts(args: argparse.Namespace) -> int:
    from mclip.config import ConfigError
    from mclip.data.concepts import count_concepts
    from mclip.data.shards import expand_shards
    from mclip.eval.datasets import open_class_texts

    shards = spread(expand_shards(args.shards, key="SHARDS"), args.max_shards)
    check_writable(Path(args.out).parent, "--out's folder")
    texts = open_class_texts(args.class_texts)
    languages = args.languages or texts.languages()
    missing = [lang for lang in languages if lang not in texts.languages()]
    if missing:
        raise ConfigError(
            f"--languages {', '.join(missing)}: not in {texts.description} "
            f"(it has: {', '.join(texts.languages())})"
        )
    names = {lang: texts.load(lang, args.dataset).names for lang in languages}
    source = f"{Path(args.class_texts).resolve()}|{args.dataset}"
    counted = 0
    with progress_bar("concepts", total=len(shards), unit="shard") as bar:

        def progress(shard: str, new: bool) -> None:
            nonlocal counted
            counted += new
            bar.update(1)

        document = count_concepts(
            shards, names, args.out, source, args.default_language, args.language_key, progress
        )
    captions = sum(v["captions"] for v in document["languages"].values())
    never = {
        lang: sum(1 for name, n in zip(v["names"], v["counts"]) if name and n == 0)
        for lang, v in document["languages"].items()
    }
    print(
        f"counted class-name mentions in {captions} captions of {len(shards)} shards "
        f"({counted} read now, {len(shards) - counted} from {args.out}); classes never "
        f"mentioned: "
        + ", ".join(f"{lang} {n}" for lang, n in never.items())
        + f"; captions in languages without class names: "
        f"{document['other_languages'] or 'none'}; skipped: {document['skipped'] or 'none'}"
    )
    print(f"wrote {args.out}")
    return 0
