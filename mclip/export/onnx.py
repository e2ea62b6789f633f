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
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mclip.config import Config
from mclip.export import ExportError, quiet_libraries
from mclip.export.open_clip import empty_directory
from mclip.export.probes import probe_images, probe_texts
from mclip.models.adapters.onnx import (IMAGE_FILE, INFO_FILE, PREPROCESS_FILE, TEXT_FILE,
                                       session)
from mclip.models.dual import DualEncoder

TOLERANCE = 1e-4
INT8_MIN_COSINE = 0.98  # an int8 export agreeing less than this with fp32 is refused
CALIBRATION_IMAGES = 64  # --calibration images that set the activation ranges (at most 3/4)
HELD_OUT_IMAGES = 64  # the next ones, which the int8 image encoder is checked on
OPSET = 18


def _require_onnx():
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ExportError("ONNX export needs onnx and onnxruntime: pip install 'mclip[export]'"
                          ) from None


class ImageEncoder(nn.Module):
    """The image tower as one graph: pixels [N, 3, S, S] -> normalised [N, embed_dim]."""

    def __init__(self, model: DualEncoder, embed_dim: int):
        super().__init__()
        self.image, self.embed_dim = model.image, embed_dim

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image(pixel_values)[:, :self.embed_dim], dim=-1)


class TextEncoder(nn.Module):
    """The text tower as one graph: token ids and mask [N, L] -> normalised [N, embed_dim]."""

    def __init__(self, model: DualEncoder, embed_dim: int):
        super().__init__()
        self.text, self.embed_dim = model.text, embed_dim

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text._encode(input_ids, attention_mask)[:, :self.embed_dim], dim=-1)


def preprocess_document(model: DualEncoder) -> dict:
    """What an onnxruntime user must do to an image before ``image_encoder.onnx``."""
    image = model.cfg.image
    return {"size": image.image_size, "mean": list(image.mean), "std": list(image.std),
            "interpolation": image.interpolation, "resize": "shorter side to size (PIL, "
            "antialiased), long side int(size * long / short)", "crop": "centre, size x size",
            "scale": "pixel / 255, then (x - mean) / std per channel, channels first"}


def export_onnx(model: DualEncoder, config: Config, directory: str | Path,
                embed_dim: int | None = None, quantize: str | None = None,
                calibration: str | Path | None = None) -> dict:
    """Write ``model``'s encoders as ONNX into the empty (or new) ``directory`` (module
    docstring) and check them with onnxruntime (ExportError if they differ); returns
    {"embed_dim", "quantize", "quantized": {tower: how}, "check": {...}}. ``calibration``: images
    for static int8 convolutions (:func:`quantize_int8`)."""
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
    if calibration is not None:
        images = calibration_images(calibration, model.image_transform(train=False),
                                    limit=CALIBRATION_IMAGES + HELD_OUT_IMAGES)
        cut = min(CALIBRATION_IMAGES, len(images) - len(images) // 4)  # hold out >= 1/4
        images, held_out = images[:cut], images[cut:]
        if not len(held_out):  # a single image: checked on what it was calibrated on
            held_out = images
    _write_graphs(model, embed_dim, directory)
    quantized = quantize_int8(directory, images, _probe_feeds(model, held_out)) if quantize else {}
    model.text.tokenizer.save_pretrained(directory)
    (directory / PREPROCESS_FILE).write_text(json.dumps(preprocess_document(model), indent=2))
    info = {"format": "mclip-onnx", "version": 1, "embed_dim": embed_dim,
            "full_embed_dim": full, "max_length": model.cfg.text.max_length,
            "logit_scale": float(model.logit_scale.detach()),
            "logit_bias": (float(model.logit_bias.detach())
                           if config.loss.kind == "sigmoid" else None),
            "quantize": quantize, "quantized": quantized, "opset": OPSET,
            "inputs": {"image": ["pixel_values"], "text": ["input_ids", "attention_mask"]},
            "outputs": {"image": "image_embeds", "text": "text_embeds"}}
    (directory / INFO_FILE).write_text(json.dumps(info, indent=2))
    check = check_onnx_export(model, directory, embed_dim, quantize, held_out)
    return {"embed_dim": embed_dim, "quantize": quantize, "quantized": quantized, "check": check}


def _write_graphs(model: DualEncoder, embed_dim: int, directory: Path) -> None:
    """Trace both encoders with dynamic batch (and text length) into ``directory``."""
    size = model.cfg.image.image_size
    batch, length = torch.export.Dim("batch", min=1), torch.export.Dim("length", min=1)
    pixels = torch.randn(2, 3, size, size)
    tokens = model.tokenize(["a photo of a cat", "x"])
    exports = [(ImageEncoder(model, embed_dim).eval(), (pixels,), ["pixel_values"],
                ["image_embeds"], ({0: batch},), IMAGE_FILE),
               (TextEncoder(model, embed_dim).eval(),
                (tokens["input_ids"], tokens["attention_mask"]), ["input_ids", "attention_mask"],
                ["text_embeds"], ({0: batch, 1: length}, {0: batch, 1: length}), TEXT_FILE)]
    for module, inputs, names, outputs, dynamic, file in exports:
        axes = {name: {axis: dim.__name__ for axis, dim in shape.items()}
                for name, shape in zip(names, dynamic)} | {outputs[0]: {0: "batch"}}
        try:
            with quiet_libraries():
                try:  # the TorchScript exporter: its graphs ran 1.0-1.3x faster in onnxruntime
                    torch.onnx.export(module, inputs, str(directory / file), input_names=names,
                                      output_names=outputs, dynamic_axes=axes,
                                      opset_version=OPSET, dynamo=False)
                except Exception:  # e.g. an operator it cannot express: torch.export's exporter
                    torch.onnx.export(module, inputs, str(directory / file), input_names=names,
                                      output_names=outputs, dynamic_shapes=dynamic,
                                      opset_version=OPSET, dynamo=True, external_data=False,
                                      verbose=False)
        except Exception as error:  # the exporter raises many types
            first = (str(error).strip().splitlines()[0] if str(error).strip()
                     else type(error).__name__)
            raise ExportError(f"torch.onnx.export could not trace the {file[:-5].replace('_', ' ')}"
                              f" ({first})") from None


def quantize_int8(directory: Path, calibration: torch.Tensor | None = None,
                  probes: dict[str, dict] | None = None) -> dict[str, str]:
    """Replace both encoders in ``directory`` by int8 ones (onnxruntime quantisation); returns
    how each was quantised.

    The matrix products (MatMul / Gemm: transformer layers, projections) get int8 weights per
    output channel and dynamically quantised activations; embedding tables stay fp32 (quantising
    them cost a MiniLM tower a cosine of 0.94 to fp32). Convolutions need activation ranges:
    with ``calibration`` (preprocessed images [N, 3, S, S]) an image tower with convolutions is
    quantised statically (QLinearConv, ranges from those images), else its convolutions stay
    fp32 (dynamic int8 convolutions run slower than fp32 on CPUs).

    ``probes`` ({"image": feed, "text": feed} of numpy inputs): where a dynamically quantised
    tower agrees with its fp32 graph to a cosine below INT8_MIN_COSINE on them, it is quantised
    again with its narrowing matrix products (weights with more inputs than outputs: the
    feed-forward down projections, whose inputs have the widest ranges) left fp32 (MiniLM:
    0.968 with them, 0.985 without)."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_dynamic, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Images(CalibrationDataReader):
        def __init__(self, batches):
            self.batches = iter(batches)

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"pixel_values": batch.numpy()}

    how = {}
    for file, kind in ((IMAGE_FILE, "image"), (TEXT_FILE, "text")):
        path = directory / file
        prepared = directory / f".{file}.prepared"
        try:
            with quiet_libraries():
                quant_pre_process(str(path), str(prepared), skip_symbolic_shape=True)
        except Exception:  # pre-processing is an optimisation; quantise the graph as it is
            shutil.copyfile(path, prepared)
        graph = onnx.load(str(prepared)).graph
        convolutions = any(node.op_type == "Conv" for node in graph.node)
        with quiet_libraries():
            if kind == "image" and convolutions and calibration is not None:
                quantize_static(str(prepared), str(path), Images(calibration.split(8)),
                                quant_format=QuantFormat.QOperator, per_channel=True,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
                how[kind] = "static int8 (convolutions and matrix products, calibrated)"
            else:
                quantize_dynamic(str(prepared), str(path), weight_type=QuantType.QInt8,
                                 op_types_to_quantize=["MatMul", "Gemm"], per_channel=True)
                how[kind] = "dynamic int8 matrix products"
                agreement = (_agreement(prepared, path, probes[kind]) if probes else 1.0)
                if agreement < INT8_MIN_COSINE:
                    products, narrowing = _matrix_products(graph)
                    quantize_dynamic(str(prepared), str(path), weight_type=QuantType.QInt8,
                                     nodes_to_quantize=[n for n in products if n not in narrowing],
                                     per_channel=True)
                    how[kind] += (f" except the {len(narrowing)} narrowing ones (feed-forward "
                                  f"outputs), left fp32: with them the cosine to fp32 was "
                                  f"{agreement:.3f}")
                if convolutions:
                    how[kind] += "; convolutions fp32 (pass --calibration IMAGES to quantise them)"
        prepared.unlink()
    return how


def _agreement(fp32: Path, int8: Path, feed: dict) -> float:
    """Smallest cosine between the outputs of two graphs on ``feed``."""
    ours, theirs = (torch.from_numpy(session(path).run(None, feed)[0]) for path in (fp32, int8))
    return float(F.cosine_similarity(ours, theirs, dim=-1).min())


def _matrix_products(graph) -> tuple[list[str], set[str]]:
    """Names of the MatMul / Gemm nodes of an ONNX graph, and of those among them whose
    constant weight has more inputs than outputs."""
    shapes = {init.name: tuple(init.dims) for init in graph.initializer}
    products, narrowing = [], set()
    for node in graph.node:
        if node.op_type not in ("MatMul", "Gemm") or not node.name:
            continue
        products.append(node.name)
        weight = next((shapes[i] for i in node.input[1:2] if len(shapes.get(i, ())) == 2), None)
        transposed = any(a.name == "transB" and a.i for a in node.attribute)
        if weight is not None and (weight[1] > weight[0] if transposed else weight[0] > weight[1]):
            narrowing.add(node.name)
    return products, narrowing


def calibration_images(source: str | Path, transform, limit: int = 64) -> torch.Tensor:
    """Up to ``limit`` readable images of ``source`` preprocessed by ``transform``:
    [N, 3, S, S]. ``source``: a folder of image files (searched recursively, sorted), or
    WebDataset shards (a folder of .tar files or a shard spec: any sample's image member). An
    ExportError when there is none."""
    import io

    from PIL import Image

    from mclip.data.shards import IMAGE_KEYS, SkipCounter, expand_shards, iter_raw_samples

    folder = Path(source)
    if folder.is_dir() and not any(folder.glob("*.tar")):
        suffixes = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
        encoded = (path.read_bytes() for path in sorted(folder.rglob("*"))
                   if path.suffix.lower() in suffixes)
    else:
        samples = iter_raw_samples(expand_shards(str(source), "--calibration"), SkipCounter())
        encoded = (next(s[k] for k in IMAGE_KEYS if k in s) for s in samples
                   if any(k in s for k in IMAGE_KEYS))
    tensors = []
    for data in encoded:
        try:
            with Image.open(io.BytesIO(data)) as image:
                tensors.append(transform(image.convert("RGB")))
        except OSError:
            continue
        if len(tensors) == limit:
            break
    if not tensors:
        raise ExportError(f"--calibration '{source}' holds no readable image (image files or "
                          f"shards with jpg / png / webp members)")
    return torch.stack(tensors)


def _probe_feeds(model: DualEncoder, images: torch.Tensor | None) -> dict[str, dict]:
    """onnxruntime inputs of both encoders: ``images`` (else the random probe images) and the
    probe texts."""
    if images is None:
        transform = model.image_transform(train=False)
        images = torch.stack([transform(i) for i in probe_images(model.cfg.image.image_size, n=8)])
    tokens = model.tokenize(probe_texts())
    return {"image": {"pixel_values": images.numpy()},
            "text": {key: value.numpy() for key, value in tokens.items()}}


@torch.no_grad()
def check_onnx_export(model: DualEncoder, directory: Path, embed_dim: int,
                      quantize: str | None, held_out: torch.Tensor | None = None) -> dict:
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
        theirs_t = torch.from_numpy(text_session.run(None, {
            "input_ids": tokens["input_ids"].numpy(),
            "attention_mask": tokens["attention_mask"].numpy()})[0])
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
            raise ExportError(f"the ONNX {kind} encoder differs from PyTorch's (max |difference| "
                              f"{worst[kind]:.2e} > {TOLERANCE:.0e}); the export was not kept")
        if quantize and worst[f"{kind}_cosine"] < INT8_MIN_COSINE:
            on = (f" on {worst['image_checked_on']} held-out --calibration images"
                  if kind == "image" and "image_checked_on" in worst else "")
            raise ExportError(f"the int8 {kind} encoder agrees with fp32 only to a cosine of "
                              f"{worst[f'{kind}_cosine']:.3f}{on} (< {INT8_MIN_COSINE}); "
                              f"export fp32")
    return worst


def _update(worst: dict, kind: str, ours: torch.Tensor, theirs: torch.Tensor) -> None:
    worst[kind] = max(worst[kind], float((ours - theirs).abs().max()))
    worst[f"{kind}_cosine"] = min(worst[f"{kind}_cosine"],
                                  float(F.cosine_similarity(ours, theirs, dim=-1).min()))


def measure_throughput(directory: Path, images: torch.Tensor, tokens: dict, seconds: float = 2.0,
                       threads: int = 0) -> dict:
    """{"images_per_s", "texts_per_s"} of the ONNX encoders in ``directory`` on one batch each,
    repeated for about ``seconds`` after a warm-up run, with ``threads`` intra-op threads."""
    image_session = session(directory / IMAGE_FILE, threads)
    text_session = session(directory / TEXT_FILE, threads)
    feeds = ((image_session, {"pixel_values": images.numpy()}, len(images)),
             (text_session, {k: v.numpy() for k, v in tokens.items()}, len(tokens["input_ids"])))
    out = []
    for runner, feed, n in feeds:
        runner.run(None, feed)
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            runner.run(None, feed)
            done += n
        out.append(done / (time.perf_counter() - start))
    return {"images_per_s": out[0], "texts_per_s": out[1]}
