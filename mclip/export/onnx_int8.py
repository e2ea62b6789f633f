"""int8 ONNX encoders: onnxruntime's quantisation of an fp32 export (:func:`quantize_int8`) and
the calibration images that set the activation ranges of static int8 convolutions
(:func:`calibration_images`). Used by :func:`mclip.export.onnx.export_onnx`."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F

from mclip.export import ExportError, quiet_libraries
from mclip.models.adapters.onnx import IMAGE_FILE, TEXT_FILE, session

INT8_MIN_COSINE = 0.98  # an int8 export agreeing less than this with fp32 is refused


def quantize_int8(
    directory: Path, calibration: torch.Tensor | None = None, probes: dict[str, dict] | None = None
) -> dict[str, str]:
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
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
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
                quantize_static(
                    str(prepared),
                    str(path),
                    Images(calibration.split(8)),
                    quant_format=QuantFormat.QOperator,
                    per_channel=True,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                )
                how[kind] = "static int8 (convolutions and matrix products, calibrated)"
            else:
                quantize_dynamic(
                    str(prepared),
                    str(path),
                    weight_type=QuantType.QInt8,
                    op_types_to_quantize=["MatMul", "Gemm"],
                    per_channel=True,
                )
                how[kind] = "dynamic int8 matrix products"
                agreement = _agreement(prepared, path, probes[kind]) if probes else 1.0
                if agreement < INT8_MIN_COSINE:
                    products, narrowing = _matrix_products(graph)
                    quantize_dynamic(
                        str(prepared),
                        str(path),
                        weight_type=QuantType.QInt8,
                        nodes_to_quantize=[n for n in products if n not in narrowing],
                        per_channel=True,
                    )
                    how[kind] += (
                        f" except the {len(narrowing)} narrowing ones (feed-forward "
                        f"outputs), left fp32: with them the cosine to fp32 was "
                        f"{agreement:.3f}"
                    )
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


def calibration_images(
    source: str | Path, transform, limit: int = 64, skipped: Counter[str] | None = None
) -> torch.Tensor:
    """Up to ``limit`` readable images of ``source`` preprocessed by ``transform``:
    [N, 3, S, S]. ``source``: a folder of image files (searched recursively, sorted), or
    WebDataset shards (a folder of .tar files or a shard spec: any sample's image member). An
    ExportError when there is none. Unreadable images are skipped and counted in ``skipped``
    (``unreadable_image``)."""
    import io

    from PIL import Image

    from mclip.data.shards import IMAGE_KEYS, SkipCounter, expand_shards, iter_raw_samples

    folder = Path(source)
    if folder.is_dir() and not any(folder.glob("*.tar")):
        suffixes = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
        encoded = (
            path.read_bytes()
            for path in sorted(folder.rglob("*"))
            if path.suffix.lower() in suffixes
        )
    else:
        samples = iter_raw_samples(expand_shards(str(source), "--calibration"), SkipCounter())
        encoded = (
            next(s[k] for k in IMAGE_KEYS if k in s)
            for s in samples
            if any(k in s for k in IMAGE_KEYS)
        )
    tensors = []
    for data in encoded:
        try:
            with Image.open(io.BytesIO(data)) as image:
                tensors.append(transform(image.convert("RGB")))
        except OSError:  # PIL's UnidentifiedImageError and truncated files included
            if skipped is not None:
                skipped["unreadable_image"] += 1
            continue
        if len(tensors) == limit:
            break
    if not tensors:
        raise ExportError(
            f"--calibration '{source}' holds no readable image (image files or "
            f"shards with jpg / png / webp members)"
        )
    return torch.stack(tensors)
