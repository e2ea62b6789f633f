"""The ``mclip`` command line: parse arguments, call the library, print results.

mclip data demo --out demo_data
mclip data index 'shards/{000000..000099}.tar'   (per-language counts for language sampling)
mclip data score SHARDS --model runs/demo --out scores; mclip data filter SHARDS --scores ...
mclip data concepts SHARDS --class-texts DIR --out counts.json  (class-name mentions)
mclip train --config configs/demo.yaml [--resume | --overwrite] [key=value ...]
mclip eval --model runs/demo --suite eval_suites/demo.yaml [--data-root demo_data]
mclip eval --model open_clip:ViT-B-32 --pretrained FILE --task retrieval --captions XTD10 ...
torchrun --nproc-per-node 2 -m mclip.cli eval --model runs/demo --suite ... (split over ranks)
mclip report results.json [B.json ...] [--out DIR] [--format markdown csv png clip_benchmark]
mclip adapt --model runs/demo --language sw --data 'shards/{000000..000011}.tar' (LoRA adapter)
mclip export runs/demo --format open_clip --out demo_open_clip   (or --format onnx)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mclip.cli_args import (
    OneLineParser,
    device_name,
    existing_file,
    existing_path,
    float_in,
    hub_id,
    int_at_least,
)
from mclip.cli_data_args import add_data_parser, add_distill_parser
from mclip.cli_eval_args import add_eval_parser, add_report_parser
from mclip.cli_export import cmd_export
from mclip.config import ConfigError
from mclip.outputs import check_writable


def _cmd_train(args: argparse.Namespace) -> int:
    from mclip.config import load_config
    from mclip.train.trainer import train

    cfg = load_config(args.config, args.overrides)
    final = train(cfg, resume=args.resume, quiet=args.quiet, overwrite=args.overwrite)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun: once, not once per rank
        print(f"final checkpoint: {final}")
    return 0


def _cmd_adapt(args: argparse.Namespace) -> int:
    import torch

    from mclip.cli_progress import progress_bar
    from mclip.models.lora import LoraSettings
    from mclip.train.language_adapters import AdaptSettings, adapt_language
    from mclip.train.setup import resolve_device
    from mclip.train.threads import training_threads

    if args.out:  # the adapter is written after training: refuse an unwritable place first
        check_writable(Path(args.out).parent, "--out's folder")
    elif Path(args.model).is_dir():
        check_writable(args.model, "--model (its checkpoint gets adapters/LANG; or pass --out)")
    torch.set_num_threads(training_threads(args.threads, torch.get_num_threads()))
    targets = [t for t in args.targets.split(",") if t.strip()] if args.targets else None
    settings = AdaptSettings(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        seed=args.seed,
        parallel_loss=args.parallel_loss,
        lora=LoraSettings(
            rank=args.rank, alpha=args.alpha, dropout=args.lora_dropout, targets=targets
        ),
    )
    with progress_bar(f"adapt {args.language}", total=args.steps, unit="step") as bar:

        def progress(step: int, loss: float) -> None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

        info = adapt_language(
            args.model,
            args.language,
            args.data,
            settings,
            max_captions=args.max_captions,
            out=args.out,
            device=resolve_device(args.device),
            overwrite=args.overwrite,
            progress=progress,
        )
    data, training = info["data"], info["training"]
    used = (
        f"{data['captions_used']} captions of {data['images_used']} images"
        if data["kind"] == "captions"
        else f"{data['captions_used']} parallel sentences"
    )
    print(
        f"adapted {info['language']} on {used} ({data['candidates']} available; skipped: "
        f"{data['skipped'] or 'none'}): {training['steps']} steps, {training['objective']} "
        f"loss {training['loss_first']:.4f} -> {training['loss_last']:.4f}, "
        f"{training['trainable_parameters']} LoRA parameters, {training['seconds']:.0f} s"
    )
    print(f"wrote {info['path']} (base: {info['base_model']})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the mclip command."""
    parser = OneLineParser(
        prog="mclip", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    add_data_parser(sub)

    train = sub.add_parser("train", help="train a dual encoder")
    train.add_argument(
        "--config", required=True, type=existing_file, help="YAML config (see configs/)"
    )
    train.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint in train.out_dir"
    )
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="delete the checkpoints and log of an earlier run in train.out_dir "
        "and start afresh (without it, a used out_dir is refused)",
    )
    train.add_argument(
        "--quiet", action="store_true", help="no progress output (JSONL still written)"
    )
    train.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="dotted overrides, e.g. train.steps=200 loss.kind=sigmoid",
    )
    train.set_defaults(func=_cmd_train)

    add_distill_parser(sub)

    add_eval_parser(sub)

    adapt = sub.add_parser(
        "adapt",
        help="train a LoRA language adapter on the text tower for one language",
        description="Trains a LoRA adapter (peft) on the text encoder for one language, every "
        "weight of the model frozen, from caption shards (InfoNCE against the frozen "
        "image embeddings) or a parallel text file (the base tower on the English "
        "source as teacher), and saves it beside the checkpoint (adapters/LANG/), "
        "where 'mclip eval' uses it for that language's texts only.",
    )
    adapt.add_argument(
        "--model",
        required=True,
        help="an mclip run directory (its newest checkpoint) or checkpoint directory",
    )
    adapt.add_argument("--language", required=True, help="the language to adapt (e.g. sw)")
    adapt.add_argument(
        "--data",
        required=True,
        help="caption shards (as data.train_shards: brace pattern, glob, "
        "directory) or a parallel text file .tsv: English source<TAB>"
        "translation, one pair a line",
    )
    adapt.add_argument(
        "--max-captions",
        type=int_at_least(1),
        default=500,
        help="use at most N captions (or pairs): a fixed subset drawn with --seed (default 500)",
    )
    adapt.add_argument(
        "--steps", type=int_at_least(1), default=300, help="optimizer steps (default 300)"
    )
    adapt.add_argument(
        "--batch-size", type=int_at_least(1), default=64, help="captions per step (default 64)"
    )
    adapt.add_argument(
        "--lr",
        type=float_in(0.0),
        default=2e-3,
        help="peak learning rate (default 2e-3; warmup, then cosine decay)",
    )
    adapt.add_argument("--warmup-steps", type=int_at_least(0), default=20)
    adapt.add_argument("--rank", type=int_at_least(1), default=8, help="LoRA rank r (default 8)")
    adapt.add_argument(
        "--alpha",
        type=float_in(0.0),
        default=16.0,
        help="LoRA alpha; the update is scaled by alpha / r (default 16)",
    )
    adapt.add_argument(
        "--lora-dropout",
        type=float_in(0.0, 1.0, low_open=False),
        default=0.05,
        help="dropout on the adapter's input while training (default 0.05)",
    )
    adapt.add_argument(
        "--targets",
        default=None,
        help="comma-separated Linear layers of the text encoder to adapt "
        "(default: peft's choice for the architecture, query,value for "
        "BERT / XLM-R; e.g. query,key,value,dense)",
    )
    adapt.add_argument(
        "--parallel-loss",
        choices=["mse", "infonce"],
        default="mse",
        help="loss for parallel text: MSE to the English embedding, or InfoNCE",
    )
    adapt.add_argument(
        "--seed",
        type=int_at_least(0),
        default=0,
        help="seed of the caption subset, the batches and the LoRA init",
    )
    adapt.add_argument(
        "--out",
        default=None,
        help="output directory (default CHECKPOINT/adapters/LANG, where 'mclip eval' finds it)",
    )
    adapt.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing adapter in the output directory",
    )
    adapt.add_argument("--device", type=device_name, default="auto")
    adapt.add_argument(
        "--threads",
        type=int_at_least(0),
        default=0,
        help="torch CPU threads (default 0: as train.threads, the CPUs this "
        "process may use; 1 is faster on a CPU shared with other jobs)",
    )
    adapt.set_defaults(func=_cmd_adapt)

    export = sub.add_parser(
        "export",
        help="an mclip model as an open_clip directory or ONNX encoders, checked",
        description="Writes the model in a format other tools load (open_clip's local-dir: / "
        "hf-hub: layout, or ONNX encoders for onnxruntime) with a model card, loads "
        "the result with that tool and checks that it embeds as mclip does.",
    )
    export.add_argument(
        "model",
        help="an mclip run directory (its newest intact checkpoint) or "
        "checkpoint directory; with --relocate an open_clip export",
    )
    export.add_argument("--format", choices=["open_clip", "onnx"], default="open_clip")
    export.add_argument("--out", default=None, help="the export folder (new, or --overwrite)")
    export.add_argument(
        "--embed-dim",
        type=int_at_least(1),
        default=None,
        help="keep the first N embedding dimensions (a Matryoshka prefix)",
    )
    export.add_argument(
        "--quantize",
        choices=["int8"],
        default=None,
        help="onnx: int8 encoders (onnxruntime quantisation)",
    )
    export.add_argument(
        "--calibration",
        default=None,
        type=existing_path,
        metavar="IMAGES",
        help="onnx --quantize int8: images (a folder of image files or shards) "
        "whose activation ranges quantise a CNN's convolutions too (else "
        "they stay fp32); the first 64 are used",
    )
    export.add_argument(
        "--hub-id",
        default=None,
        type=hub_id,
        metavar="ORG/NAME",
        help="open_clip: name the text tower by this Hugging Face repository, "
        "for an upload used as hf-hub:ORG/NAME",
    )
    export.add_argument(
        "--results",
        default=None,
        type=existing_file,
        help="a results.json of 'mclip eval' for the model card's table",
    )
    export.add_argument(
        "--license", default="other", help="the licence field of the model card (default: other)"
    )
    export.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    export.add_argument(
        "--relocate",
        action="store_true",
        help="point a moved open_clip export (MODEL) at its new place",
    )
    export.set_defaults(func=cmd_export)

    add_report_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; user errors print one line and exit with status 2."""
    from mclip.data.shards import DataError
    from mclip.errors import TrainingError, TrainingInterrupted

    parser = build_parser()
    try:  # a bad argument is one line and status 2 (--help: 0), returned, not raised
        args, extra = parser.parse_known_args(argv)
        if (
            extra
            and hasattr(args, "overrides")
            and all("=" in a and not a.startswith("-") for a in extra)
        ):
            args.overrides += extra  # key=value overrides given after a flag (after --overwrite)
        elif extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 2
    try:
        return args.func(args)
    except (ConfigError, DataError, TrainingError) as error:
        print(f"mclip: error: {error}", file=sys.stderr)
        return 2
    except TrainingInterrupted as stop:
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"mclip: {stop}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
