"""An mclip model as ONNX encoders for onnxruntime (``mclip export MODEL --format onnx``).

    DIR/image_encoder.onnx   pixel_values float32 [batch, 3, S, S] -> image_embeds [batch, E]
    DIR/text_encoder.onnx    input_ids, attention_mask int64 [batch, length] -> text_embeds
                             [batch, E]
    DIR/preprocess.json      image size S, mean, std, interpolation, resize rule (shorter side to
                             S, then a centre crop), as mclip's own transform
    DIR/tokenizer files      the text tower's tokenizer (transformers; no torch needed to use it)
    DIR/mclip_onnx.json      embed_dim, max_length, logit scale / bias, quantisation, versions
    DIR/README.md            the model card (:mod:`mclip.export.model_card`)

Both encoders return L2-normalised embeddings (of the first ``embed_dim`` dimensions when a
Matryoshka prefix is exported); batch size and text length are dynamic. Before the export is
kept, onnxruntime's embeddings are compared with PyTorch's on several batch sizes and text lengths
(fp32: max |difference| <= 1e-4). ``quantize="int8"`` writes int8 encoders instead
(:func:`quantize_int8`: int8 matrix products; convolutions statically quantised from calibration
images when given): smaller and, on CPUs with int8 units, faster; their agreement with PyTorch is
measured (smallest cosine) and must stay above 0.98.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mclip.config import Config
from mclip.export import ExportError, quiet_libraries
from mclip.export.onnx_int8 import INT8_MIN_COSINE, calibration_images, quantize_int8
from mclip.export.open_clip import empty_directory
from mclip.export.probes import probe_images, probe_texts
from mclip.models.adapters.onnx import IMAGE_FILE, INFO_FILE, PREPROCESS_FILE, TEXT_FILE, session
from mclip.models.dual import DualEncoder

TOLERANCE = 1e-4
CALIBRATION_IMAGES = 64  # --calibration images that set the activation ranges (at most 3/4)
HELD_OUT_IMAGES = 64  # the next ones, which the int8 image encoder is checked on
OPSET = 18


def _require_onnx():
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ExportError(
            "ONNX export needs onnx and onnxruntime: pip install 'mclip[export]'"
        ) from None


class ImageEncoder(nn.Module):
    """The image tower as one graph: pixels [N, 3, S, S] -> normalised [N, embed_dim]."""

    def __init__(self, model: DualEncoder, embed_dim: int):
        super().__init__()
        self.image, self.embed_dim = model.image, embed_dim

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image(pixel_values)[:, : self.embed_dim], dim=-1)


class TextEncoder(nn.Module):
    """The text tower as one graph: token ids and mask [N, L] -> normalised [N, embed_dim]."""

    def __init__(self, model: DualEncoder, embed_dim: int):
        super().__init__()
        self.text, self.embed_dim = model.text, embed_dim

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(
            self.text._encode(input_ids, attention_mask)[:, : self.embed_dim], dim=-1
        )


def preprocess_document(model: DualEncoder) -> dict:
    """What an onnxruntime user must do to an image before ``image_encoder.onnx``."""
    image = model.cfg.image
    return {
        "size": image.image_size,
        "mean": list(image.mean),
        "std": list(image.std),
        "interpolation": image.interpolation,
        "resize": "shorter side to size (PIL, antialiased), long side int(size * long / short)",
        "crop": "centre, size x size",
        "scale": "pixel / 255, then (x - mean) / std per channel, channels first",
    }


def export_onnx(
    model: DualEncoder,
    config: Config,
    directory: str | Path,
    embed_dim: int | None = None,
    quantize: str | None = None,
    calibration: str | Path | None = None,
) -> dict:
    """Write ``model``'s encoders as ONNX into the empty (or new) ``directory`` (module
    docstring) and check them with onnxruntime (ExportError if they differ); returns
    {"embed_dim", "quantize", "quantized": {tower: how}, "check": {...}, "calibration_skipped":
    {reason: count}}. ``calibration``: images for static int8 convolutions
    (:func:`quantize_int8`); unreadable ones are skipped and counted."""
    _require_onnx()
    directory = empty_directory(directory)
    full = model.cfg.embed_dim
    embed_dim = embed_dim or full
    if not 1 <= embed_dim <= full:
        raise ExportError(f"--embed-dim {embed_dim}: give 1 to the model's {full} dimensions")
    if quantize not in (None, "int8"):
        raise ExportError(f"--quantize {quantize!r}: the choice is int8")
    if calibration is not None and not quantize:
        raise ExportError("--calibration is used by --quantize int8 only")
    model = model.float().eval()
    images = held_out = None
    skipped: Counter[str] = Counter()
    if calibration is not None:
        images = calibration_images(
            calibration,
            model.image_transform(train=False),
            limit=CALIBRATION_IMAGES + HELD_OUT_IMAGES,
            skipped=skipped,
        )
        cut = min(CALIBRATION_IMAGES, len(images) - len(images) // 4)  # hold out >= 1/4
        images, held_out = images[:cut], images[cut:]
        if not len(held_out):  # a single image: checked on what it was calibrated on
            held_out = images
    _write_graphs(model, embed_dim, directory)
    quantized = quantize_int8(directory, images, _probe_feeds(model, held_out)) if quantize else {}
    model.text.tokenizer.save_pretrained(directory)
    (directory / PREPROCESS_FILE).write_text(json.dumps(preprocess_document(model), indent=2))
    info = {
        "format": "mclip-onnx",
        "version": 1,
        "embed_dim": embed_dim,
        "full_embed_dim": full,
        "max_length": model.cfg.text.max_length,
        "logit_scale": float(model.logit_scale.detach()),
        "logit_bias": (float(model.logit_bias.detach()) if config.loss.kind == "sigmoid" else None),
        "quantize": quantize,
        "quantized": quantized,
        "opset": OPSET,
        "inputs": {"image": ["pixel_values"], "text": ["input_ids", "attention_mask"]},
        "outputs": {"image": "image_embeds", "text": "text_embeds"},
    }
    (directory / INFO_FILE).write_text(json.dumps(info, indent=2))
    check = check_onnx_export(model, directory, embed_dim, quantize, held_out)
    return {
        "embed_dim": embed_dim,
        "quantize": quantize,
        "quantized": quantized,
        "check": check,
        "calibration_skipped": dict(skipped),
    }


def _write_graphs(model: DualEncoder, embed_dim: int, directory: Path) -> None:
    """Trace both encoders with dynamic batch (and text length) into ``directory``."""
    size = model.cfg.image.image_size
    batch, length = torch.export.Dim("batch", min=1), torch.export.Dim("length", min=1)
    pixels = torch.randn(2, 3, size, size)
    tokens = model.tokenize(["a photo of a cat", "x"])
    exports = [
        (
            ImageEncoder(model, embed_dim).eval(),
            (pixels,),
            ["pixel_values"],
            ["image_embeds"],
            ({0: batch},),
            IMAGE_FILE,
        ),
        (
            TextEncoder(model, embed_dim).eval(),
            (tokens["input_ids"], tokens["attention_mask"]),
            ["input_ids", "attention_mask"],
            ["text_embeds"],
            ({0: batch, 1: length}, {0: batch, 1: length}),
            TEXT_FILE,
        ),
    ]
    for module, inputs, names, outputs, dynamic, file in exports:
        axes = {
            name: {axis: dim.__name__ for axis, dim in shape.items()}
            for name, shape in zip(names, dynamic)
        } | {outputs[0]: {0: "batch"}}
        try:
            with quiet_libraries():
                try:  # the TorchScript exporter: its graphs ran 1.0-1.3x faster in onnxruntime
                    torch.onnx.export(
                        module,
                        inputs,
                        str(directory / file),
                        input_names=names,
                        output_names=outputs,
                        dynamic_axes=axes,
                        opset_version=OPSET,
                        dynamo=False,
                    )
                except Exception:  # e.g. an operator it cannot express: torch.export's exporter
                    torch.onnx.export(
                        module,
                        inputs,
                        str(directory / file),
                        input_names=names,
                        output_names=outputs,
                        dynamic_shapes=dynamic,
                        opset_version=OPSET,
                        dynamo=True,
                        external_data=False,
                        verbose=False,
                    )
        except Exception as error:  # the exporter raises many types
            first = (
                str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            )
            raise ExportError(
                f"torch.onnx.export could not trace the {file[:-5].replace('_', ' ')} ({first})"
            ) from None


def _probe_feeds(model: DualEncoder, images: torch.Tensor | None) -> dict[str, dict]:
    """onnxruntime inputs of both encoders: ``images`` (else the random probe images) and the
    probe texts."""
    if images is None:
        transform = model.image_transform(train=False)
        images = torch.stack([transform(i) for i in probe_images(model.cfg.image.image_size, n=8)])
    tokens = model.tokenize(probe_texts())
    return {
        "image": {"pixel_values": images.numpy()},
        "text": {key: value.numpy() for key, value in tokens.items()},
    }


@torch.no_grad()
def check_onnx_export(
    model: DualEncoder,
    directory: Path,
    embed_dim: int,
    quantize: str | None,
    held_out: torch.Tensor | None = None,
) -> dict:
    """onnxruntime's embeddings against PyTorch's, for image batches of 1, 3 and 8 and for text
    batches of 1, 3 and 8 texts of several lengths; {"image", "text"}: max |difference|,
    {"image_cosine", "text_cosine"}: the smallest cosine between the two. fp32 must agree to
    1e-4, int8 to a cosine of 0.98 (else ExportError).

    ``held_out`` (preprocessed [N, 3, S, S]): held-out images of the calibration source. A
    statically quantised image encoder is then judged on them ("image_cosine", "image_checked_on":
    N): its activation ranges are those of that source, and the random-noise probes lie outside
    them (their cosine is kept as "image_cosine_noise")."""
    image_session, text_session = session(directory / IMAGE_FILE), session(directory / TEXT_FILE)
    transform = model.image_transform(train=False)
    images = torch.stack([transform(i) for i in probe_images(model.cfg.image.image_size, n=8)])
    texts = probe_texts()
    worst = {"image": 0.0, "text": 0.0, "image_cosine": 1.0, "text_cosine": 1.0}
    for n in (1, 3, 8):
        ours = F.normalize(model.encode_image(images[:n], normalize=False)[:, :embed_dim], dim=-1)
        theirs = torch.from_numpy(image_session.run(None, {"pixel_values": images[:n].numpy()})[0])
        _update(worst, "image", ours, theirs)
        tokens = model.tokenize(texts[:n] if n < len(texts) else texts)
        ours_t = F.normalize(model.encode_text(tokens, normalize=False)[:, :embed_dim], dim=-1)
        theirs_t = torch.from_numpy(
            text_session.run(
                None,
                {
                    "input_ids": tokens["input_ids"].numpy(),
                    "attention_mask": tokens["attention_mask"].numpy(),
                },
            )[0]
        )
        _update(worst, "text", ours_t, theirs_t)
    if quantize and held_out is not None:
        worst["image_cosine_noise"], worst["image_cosine"] = worst["image_cosine"], 1.0
        worst["image_checked_on"] = len(held_out)
        for batch in held_out.split(8):
            ours = F.normalize(model.encode_image(batch, normalize=False)[:, :embed_dim], dim=-1)
            theirs = torch.from_numpy(image_session.run(None, {"pixel_values": batch.numpy()})[0])
            _update(worst, "image", ours, theirs)
    for kind in ("image", "text"):
        if quantize is None and worst[kind] > TOLERANCE:
            raise ExportError(
                f"the ONNX {kind} encoder differs from PyTorch's (max |difference| "
                f"{worst[kind]:.2e} > {TOLERANCE:.0e}); the export was not kept"
            )
        if quantize and worst[f"{kind}_cosine"] < INT8_MIN_COSINE:
            on = (
                f" on {worst['image_checked_on']} held-out --calibration images"
                if kind == "image" and "image_checked_on" in worst
                else ""
            )
            raise ExportError(
                f"the int8 {kind} encoder agrees with fp32 only to a cosine of "
                f"{worst[f'{kind}_cosine']:.3f}{on} (< {INT8_MIN_COSINE}); "
                f"export fp32"
            )
    return worst


def _update(worst: dict, kind: str, ours: torch.Tensor, theirs: torch.Tensor) -> None:
    worst[kind] = max(worst[kind], float((ours - theirs).abs().max()))
    worst[f"{kind}_cosine"] = min(
        worst[f"{kind}_cosine"], float(F.cosine_similarity(ours, theirs, dim=-1).min())
    )


def measure_throughput(
    directory: Path, images: torch.Tensor, tokens: dict, seconds: float = 2.0, threads: int = 0
) -> dict:
    """{"images_per_s", "texts_per_s"} of the ONNX encoders in ``directory`` on one batch each,
    repeated for about ``seconds`` after a warm-up run, with ``threads`` intra-op threads."""
    image_session = session(directory / IMAGE_FILE, threads)
    text_session = session(directory / TEXT_FILE, threads)
    feeds = (
        (image_session, {"pixel_values": images.numpy()}, len(images)),
        (text_session, {k: v.numpy() for k, v in tokens.items()}, len(tokens["input_ids"])),
    )
    out = []
    for runner, feed, n in feeds:
        runner.run(None, feed)
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            runner.run(None, feed)
            done += n
        out.append(done / (time.perf_counter() - start))
    return {"images_per_s": out[0], "texts_per_s": out[1]}
