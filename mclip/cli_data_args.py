"""Arguments of ``mclip data ...`` and ``mclip distill embed``: the shard-reading commands."""

from __future__ import annotations

import argparse

from mclip.cli_args import (
    device_name,
    existing_dir,
    existing_file,
    existing_path,
    float_in,
    int_at_least,
)
from mclip.cli_data import (
    cmd_data_concepts,
    cmd_data_demo,
    cmd_data_filter,
    cmd_data_index,
    cmd_data_parallel,
    cmd_data_score,
    cmd_distill_embed,
)


def add_caption_language_flags(parser: argparse.ArgumentParser) -> None:
    """How a shard sample's caption languages are read, as in the training config."""
    parser.add_argument(
        "--default-language",
        default="en",
        help="language of KEY.txt captions whose metadata names none (as data.default_language)",
    )
    parser.add_argument(
        "--language-key",
        default="",
        help="KEY.json field holding the caption's language (as data.language_key)",
    )


def add_data_parser(sub: argparse._SubParsersAction) -> None:
    """``mclip data`` and its subcommands (demo, index, concepts, parallel, score, filter)."""
    data = sub.add_parser("data", help="generate datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    demo = data_sub.add_parser("demo", help="write the embedded coloured-shapes dataset as shards")
    demo.add_argument("--out", required=True, help="output directory")
    demo.add_argument(
        "--train", type=int_at_least(1), default=12000, help="training images (default 12000)"
    )
    demo.add_argument(
        "--eval-per-class", type=int_at_least(1), default=20, help="held-out images per class"
    )
    demo.add_argument("--image-size", type=int_at_least(16), default=64)
    demo.add_argument("--shard-size", type=int_at_least(1), default=1000, help="samples per shard")
    demo.add_argument("--seed", type=int_at_least(0), default=0)
    demo.add_argument(
        "--level",
        choices=["easy", "hard"],
        default="easy",
        help="easy: one coloured shape per image (the quick start); hard: two "
        "objects with size, colour and a spatial relation (does not saturate)",
    )
    demo.set_defaults(func=cmd_data_demo)
    index = data_sub.add_parser(
        "index",
        help="count samples per caption language in training shards (one pass)",
        description="Reads every shard once (no image decoding) and writes a manifest of samples "
        "per language and per shard, used by data.language_temperature.",
    )
    index.add_argument(
        "shards",
        help="shard spec as in data.train_shards (brace pattern, glob, "
        "directory, comma-separated list)",
    )
    index.add_argument(
        "--out",
        default=None,
        help="manifest path (default: mclip_index.json beside the first shard)",
    )
    add_caption_language_flags(index)
    index.set_defaults(func=cmd_data_index)

    concepts = data_sub.add_parser(
        "concepts",
        help="how many training captions mention each class name, per language "
        "(for mclip eval --concept-counts; resumable)",
    )
    concepts.add_argument("shards", help="shard spec as in data.train_shards")
    concepts.add_argument(
        "--class-texts",
        required=True,
        type=existing_path,
        help="the class names: a CLIP_benchmark folder or a Babel-ImageNet "
        "labels file (as in mclip eval)",
    )
    concepts.add_argument(
        "--dataset",
        default="imagenet1k",
        help="dataset key inside CLIP_benchmark files (default imagenet1k)",
    )
    concepts.add_argument(
        "--languages",
        default=None,
        type=lambda v: [c for c in v.split(",") if c],
        help="comma-separated mclip codes (default: all the class texts have)",
    )
    concepts.add_argument(
        "--max-shards",
        type=int_at_least(1),
        default=None,
        help="count a sample of N shards spread over the list (default: all)",
    )
    concepts.add_argument(
        "--out",
        required=True,
        help="counts JSON; an existing one is continued (shards counted skip)",
    )
    add_caption_language_flags(concepts)
    concepts.set_defaults(func=cmd_data_concepts)

    parallel = data_sub.add_parser(
        "parallel",
        help="pairs of captions of one image in two languages "
        "(source, translation) for teacher learning",
    )
    parallel.add_argument("shards", help="caption shards (KEY.json with captions by language)")
    parallel.add_argument("--out", required=True, help="the TSV to write")
    parallel.add_argument("--source-language", default="en")
    parallel.add_argument(
        "--languages",
        default=None,
        type=lambda v: [c for c in v.split(",") if c],
        help="comma-separated target languages (default: all)",
    )
    parallel.add_argument(
        "--per-language",
        type=int_at_least(1),
        default=1,
        help="pairs per sample and target language (default 1)",
    )
    parallel.add_argument("--seed", type=int_at_least(0), default=0)
    parallel.set_defaults(func=cmd_data_parallel)

    score = data_sub.add_parser(
        "score",
        help="the image-text score of every caption of every "
        "sample, per shard as Parquet (resumable)",
    )
    score.add_argument("shards", help="shard spec as in data.train_shards")
    score.add_argument(
        "--model",
        required=True,
        help="any model mclip eval takes (mclip run, open_clip:ARCH, hf:NAME, onnx:DIR)",
    )
    score.add_argument("--pretrained", default=None, help="open_clip pretrained tag or file")
    score.add_argument("--out", required=True, help="output directory")
    score.add_argument(
        "--languages",
        default=None,
        type=lambda v: [c for c in v.split(",") if c],
        help="comma-separated caption languages to score (default: all)",
    )
    score.add_argument("--batch-size", type=int_at_least(1), default=256)
    score.add_argument("--device", type=device_name, default="auto")
    add_caption_language_flags(score)
    score.set_defaults(func=cmd_data_score)
    filt = data_sub.add_parser(
        "filter", help="new shards without the captions scored below a threshold (per language)"
    )
    filt.add_argument("shards", help="the shards that were scored")
    filt.add_argument("--scores", required=True, type=existing_dir, help="mclip data score's --out")
    filt.add_argument("--out", required=True, help="folder of the filtered shards")
    filt.add_argument(
        "--min-score",
        type=float,
        default=None,
        help="keep captions scoring at least this (LAION-5B: 0.28 en, 0.26 other)",
    )
    filt.add_argument(
        "--min-score-by-language",
        type=existing_file,
        default=None,
        metavar="JSON",
        help='per-language thresholds {"en": 0.28, "de": 0.26} (over --min-score)',
    )
    filt.add_argument(
        "--keep-fraction",
        type=float_in(0.0, 1.0, high_open=False),
        default=None,
        help="instead: keep this share of each language's captions (its quantile)",
    )
    add_caption_language_flags(filt)
    filt.set_defaults(func=cmd_data_filter)


def add_distill_parser(sub: argparse._SubParsersAction) -> None:
    """``mclip distill embed``: a teacher's embeddings of a shard set, computed once."""
    distill = sub.add_parser("distill", help="distillation helpers").add_subparsers(
        dest="distill_command", required=True
    )
    embed = distill.add_parser(
        "embed",
        help="compute a teacher's embeddings of a shard set once, "
        "for training without running the teacher",
    )
    embed.add_argument(
        "--teacher",
        required=True,
        help="mclip run/checkpoint directory, open_clip:ARCH[/TAG] or hf:NAME_OR_DIR",
    )
    embed.add_argument("--pretrained", default=None, help="open_clip pretrained tag or file")
    embed.add_argument(
        "--model-config",
        default=None,
        type=existing_file,
        metavar="JSON",
        help="open_clip:ARCH only: the model config JSON defining ARCH",
    )
    embed.add_argument("--shards", required=True, help="shard spec as in data.train_shards")
    embed.add_argument("--out", required=True, help="output directory")
    embed.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    embed.add_argument(
        "--languages",
        default=None,
        type=lambda v: [c for c in v.split(",") if c],
        help="comma-separated caption languages to embed (default: all)",
    )
    add_caption_language_flags(embed)
    embed.add_argument("--batch-size", type=int_at_least(1), default=256)
    embed.add_argument("--device", type=device_name, default="auto")
    embed.set_defaults(func=cmd_distill_embed)
