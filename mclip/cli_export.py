"""Handler of ``mclip export``: an mclip model as an open_clip directory or ONNX encoders, with its
model card (parser in :mod:`mclip.cli`; the work in :mod:`mclip.export.checkpoint`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def cmd_export(args: argparse.Namespace) -> int:
    from mclip.cli_progress import warn_passed_over
    from mclip.config import ConfigError
    from mclip.export.checkpoint import export_checkpoint
    from mclip.models.checkpoints import resolve_model_dir

    if args.relocate:
        from mclip.export.open_clip import relocate_open_clip

        print(f"pointed {relocate_open_clip(args.model)} at {Path(args.model).resolve()}")
        return 0
    if not args.out:
        raise ConfigError("mclip export needs --out DIR (a new folder for the export)")
    results = None
    if args.results:
        from mclip.eval.report import load_report

        results = load_report(args.results)
    passed_over: list = []
    checkpoint = resolve_model_dir(args.model, passed_over)
    warn_passed_over("mclip export", passed_over)
    print(f"[mclip export] {checkpoint} -> {args.format} in {args.out}", file=sys.stderr)
    record = export_checkpoint(
        checkpoint,
        args.format,
        args.out,
        args.embed_dim,
        args.quantize,
        args.calibration,
        args.hub_id,
        results,
        args.license,
        args.overwrite,
    )
    for warning in record["warnings"]:
        print(f"[mclip export] warning: {warning}", file=sys.stderr)
    if args.format == "open_clip":
        worst = record["max_difference"]
        checked = (
            f"open_clip's embeddings equal mclip's: max |difference| image "
            f"{worst['image']:.1e}, text {worst['text']:.1e}"
        )
    else:
        check = record["check"]
        checked = (
            f"onnxruntime against PyTorch: max |difference| image {check['image']:.1e}, "
            f"text {check['text']:.1e}; smallest cosine image "
            f"{check['image_cosine']:.5f}"
            + (
                f" (on {check['image_checked_on']} held-out calibration images; random-noise"
                f" images {check['image_cosine_noise']:.5f})"
                if "image_checked_on" in check
                else ""
            )
            + f", text {check['text_cosine']:.5f}"
            + "".join(f"\n{tower} encoder: {how}" for tower, how in record["quantized"].items())
            + "".join(
                f"\n--calibration: {count} images skipped ({reason})"
                for reason, count in record.get("calibration_skipped", {}).items()
            )
        )
    print(
        f"exported {checkpoint} as {args.format} (embed_dim {record['embed_dim']}"
        f"{', ' + args.quantize if args.quantize else ''}) to {record['path']}\n{checked}\n"
        f"load it with: {record['spec']}"
    )
    return 0
