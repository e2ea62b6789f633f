"""The parsers of ``mclip eval`` and ``mclip report`` (handlers in :mod:`mclip.cli_eval`)."""

from __future__ import annotations

import argparse

from mclip.cli_args import device_name, embed_dims, existing_dir, existing_file, int_at_least
from mclip.cli_eval import cmd_eval, cmd_report
from mclip.config import ConfigError


def provenance_tags(spec: str) -> list[str]:
    """``--provenance human,lexicon`` checked (an argparse type: a bad tag is a usage error)."""
    from mclip.eval.provenance import parse_tags

    try:
        return parse_tags(spec)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


TASK_KINDS = (
    "zeroshot_classification",
    "retrieval",
    "topic_matching",
    "bitext_retrieval",
    "image_to_image",
    "text_to_text",
)


def add_eval_parser(sub: argparse._SubParsersAction) -> None:
    """``mclip eval``: a suite, or one task from its flags."""
    ev = sub.add_parser("eval", help="evaluate any dual encoder on a suite or one task")
    ev.add_argument(
        "--model",
        required=True,
        help="an mclip run/checkpoint directory, open_clip:ARCH (with --pretrained; "
        "--model-config for your own architecture), open_clip:local-dir:DIR, "
        "or hf:NAME_OR_DIR",
    )
    ev.add_argument(
        "--pretrained",
        default=None,
        help="open_clip pretrained tag (needs network) or local .pt/.safetensors file",
    )
    ev.add_argument(
        "--model-config",
        default=None,
        type=existing_file,
        metavar="JSON",
        help="open_clip:ARCH only: an open_clip model config (embed_dim, vision_cfg, "
        "text_cfg) defining ARCH, for an architecture open_clip does not ship",
    )
    ev.add_argument(
        "--suite", default=None, type=existing_file, help="suite YAML (see eval_suites/)"
    )
    ev.add_argument(
        "--task",
        choices=TASK_KINDS,
        default=None,
        help="run one task without a suite file (CLIP_benchmark style)",
    )
    ev.add_argument(
        "--images",
        default=None,
        help="--task: ImageFolder tree / shards (classification, image_to_image), "
        "the images folder of a caption layout (retrieval) or of the topics "
        "(topic matching; MVL-SIB's own images are found without it)",
    )
    ev.add_argument(
        "--class-texts",
        default=None,
        help="--task zeroshot_classification: a CLIP_benchmark folder or a "
        "Babel-ImageNet labels file",
    )
    ev.add_argument(
        "--dataset",
        default="imagenet1k",
        help="dataset key inside CLIP_benchmark class-text files (default imagenet1k)",
    )
    ev.add_argument("--prompts", default=None, help="Babel-ImageNet translated prompts file")
    ev.add_argument(
        "--captions",
        default=None,
        help="--task retrieval / text_to_text: XTD10 / Multi30K folder, XM3600 "
        "captions.jsonl, Babel-ImageNet retrieval JSON, CSV/TSV or shards",
    )
    ev.add_argument(
        "--sentences",
        default=None,
        help="--task topic_matching: an MVL-SIB checkout (or its data/ folder), or a "
        "TSV topic<TAB>language<TAB>sentence beside a folder per topic; "
        "--task bitext_retrieval: Flores/SIB-200 folders (as in MVL-SIB), a "
        "folder of Tatoeba pair files, or a TSV id<TAB>language<TAB>sentence",
    )
    ev.add_argument(
        "--reference-language",
        default="en",
        help="--task topic_matching: the language of the text-only topic means",
    )
    ev.add_argument(
        "--pivot",
        default="en",
        help="--task bitext_retrieval: the language every other one is matched "
        "against, both ways; --task text_to_text: the language of the "
        "cross-language captions (default en)",
    )
    ev.add_argument(
        "--split",
        default=None,
        help="Multi30K split (e.g. test_2017_flickr); MVL-SIB split(s) (e.g. test)",
    )
    ev.add_argument(
        "--languages",
        default=None,
        type=lambda v: [c for c in v.split(",") if c],
        help="comma-separated mclip codes; narrows a suite (default: all)",
    )
    ev.add_argument(
        "--provenance",
        default=None,
        choices=("human", "machine_translated", "lexicon", "unknown"),
        help="--task: where the task's texts come from, for every language (default: "
        "what mclip knows of the format, else unknown)",
    )
    ev.add_argument(
        "--concept-counts",
        default=None,
        type=existing_file,
        metavar="JSON",
        help="counts from 'mclip data concepts': zero-shot recall per language also "
        "by how often the training captions name each class (0, 1-9, 10-99, "
        "100+)",
    )
    ev.add_argument(
        "--limit",
        type=int_at_least(1),
        default=None,
        help="use only the first N images each set lists (unreadable ones among "
        "them are skipped and counted)",
    )
    ev.add_argument(
        "--bootstrap",
        type=int_at_least(0),
        default=1000,
        help="bootstrap resamples for the 95%% intervals (default 1000; 0: none)",
    )
    ev.add_argument(
        "--seed", type=int_at_least(0), default=0, help="seed of the bootstrap (default 0)"
    )
    ev.add_argument(
        "--cache",
        default=None,
        metavar="DIR",
        help="keep image and text embeddings in DIR between runs (keyed by the "
        "model weights, the transform and the data files)",
    )
    ev.add_argument(
        "--data-root",
        default=None,
        type=existing_dir,
        help="where the suite's relative paths point",
    )
    ev.add_argument("--out", default=None, help="output directory (default MODEL/eval/SUITE)")
    ev.add_argument(
        "--batch-size",
        type=int_at_least(1),
        default=256,
        help="images / texts per forward pass (halved after a GPU out-of-memory)",
    )
    ev.add_argument(
        "--workers",
        type=int_at_least(0),
        default=None,
        help="processes decoding images ahead of the forward pass (default: the "
        "usable CPUs, less one on a GPU)",
    )
    ev.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="bf16: towers under bf16 autocast (GPUs, CPUs with AMX); default fp32",
    )
    ev.add_argument(
        "--embed-dims",
        default=None,
        type=embed_dims,
        metavar="D,D,full",
        help="also score every task on the first D dimensions of the embeddings "
        "(re-normalised; a Matryoshka model's prefixes), e.g. 32,64,full: the "
        "embeddings are computed once; tasks TASK@32d, TASK@64d, TASK",
    )
    ev.add_argument("--device", type=device_name, default="auto")
    ev.add_argument(
        "--no-adapters",
        action="store_true",
        help="ignore the language adapters saved beside an mclip checkpoint "
        "(adapters/LANG/, see 'mclip adapt'): evaluate the base model",
    )
    ev.add_argument("--quiet", action="store_true")
    ev.set_defaults(func=cmd_eval)


def add_report_parser(sub: argparse._SubParsersAction) -> None:
    """``mclip report``: re-render one results JSON or compare several."""
    rep = sub.add_parser(
        "report",
        help="re-render a results JSON, or compare several per language",
        description="One file: its table (with 95% intervals), CSV and charts. Several files: a "
        "comparison per task and language against the first (the baseline), with a "
        "paired bootstrap test where two files scored the same images or captions.",
    )
    rep.add_argument(
        "results",
        nargs="+",
        type=existing_file,
        help="results.json files written by 'mclip eval'; the first is the baseline",
    )
    rep.add_argument(
        "--out",
        default=None,
        help="output directory (default: the file's folder for one file, ./comparison for several)",
    )
    rep.add_argument(
        "--format",
        nargs="+",
        default=["markdown", "csv", "png"],
        choices=["markdown", "csv", "png", "clip_benchmark"],
        help="what to write (default: markdown csv png); clip_benchmark: one "
        "CLIP_benchmark-style JSON per task, language and model",
    )
    rep.add_argument(
        "--bootstrap",
        type=int_at_least(0),
        default=None,
        help="resamples for intervals (recomputed from the stored per-sample ranks) "
        "and paired tests (default: keep the stored intervals; 1000 for tests; "
        "0: none)",
    )
    rep.add_argument(
        "--seed", type=int_at_least(0), default=0, help="seed of the bootstrap (default 0)"
    )
    rep.add_argument(
        "--provenance",
        default=None,
        type=provenance_tags,
        metavar="TAG[,TAG]",
        help="keep only the languages whose texts are human, machine_translated, "
        "lexicon and/or unknown (as the suite or the data format says); the "
        "means are taken again over those",
    )
    rep.set_defaults(func=cmd_report)
