"""An ONNX export (``mclip export --format onnx``) behind the adapter interface: ``onnx:DIR``.

The encoders run in onnxruntime on the CPU; the images go through the transform
``preprocess.json`` describes (mclip's own resize and centre crop), the texts through the
tokenizer saved in DIR. So ``mclip eval --model onnx:DIR`` scores an export with the evaluator
that scored the original, and an int8 export's accuracy change is measured the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from mclip.config import ConfigError
from mclip.models.adapters.base import TokenizingAdapter, package_versions
from mclip.models.dual import ImageTransform

INFO_FILE, PREPROCESS_FILE = "mclip_onnx.json", "preprocess.json"
IMAGE_FILE, TEXT_FILE = "image_encoder.onnx", "text_encoder.onnx"


class OnnxAdapter(TokenizingAdapter):
    """ONNX image and text encoders of one mclip export (see the module docstring)."""

    _scale: torch.Tensor  # a buffer (register_buffer in __init__)

    def __init__(self, directory: Path, name: str):
        super().__init__()
        from transformers import AutoTokenizer

        self.directory, self.name = directory, name
        self.info = json.loads((directory / INFO_FILE).read_text("utf-8"))
        pre = json.loads((directory / PREPROCESS_FILE).read_text("utf-8"))
        self._transform = ImageTransform(
            pre["size"], pre["mean"], pre["std"], interpolation=pre.get("interpolation", "bilinear")
        )
        self._image, self._text = session(directory / IMAGE_FILE), session(directory / TEXT_FILE)
        self.tokenizer = AutoTokenizer.from_pretrained(str(directory))
        self.tokenizer.padding_side = "right"
        self.embed_dim = int(self.info["embed_dim"])
        self.register_buffer("_scale", torch.tensor(float(self.info["logit_scale"])))
        bias = self.info.get("logit_bias")
        self._bias = None if bias is None else torch.tensor(float(bias))

    def tower_parameters(self) -> dict[str, int]:
        """{"image", "text", "total"}: the elements of each graph's initializers (weights; an
        int8 graph's quantised weights count once each)."""
        import onnx

        counts = {}
        for tower, name in (("image", IMAGE_FILE), ("text", TEXT_FILE)):
            graph = onnx.load(str(self.directory / name), load_external_data=False).graph
            counts[tower] = sum(int(np.prod(t.dims)) for t in graph.initializer)
        return {**counts, "total": counts["image"] + counts["text"]}

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """images [N, 3, S, S] from :meth:`image_transform` -> normalised float32 [N, embed_dim]."""
        pixels = images.detach().float().cpu().numpy()
        return torch.from_numpy(self._image.run(None, {"pixel_values": pixels})[0])

    def encode_tokens(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """{'input_ids', 'attention_mask'} int64 [N, L] from :meth:`tokenize` -> normalised
        float32 [N, embed_dim] (the exported graph normalises)."""
        return torch.from_numpy(self._text.run(None, {k: v.numpy() for k, v in tokens.items()})[0])

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Strings -> {'input_ids', 'attention_mask'}: int64 [N, L], padded to the longest."""
        out = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=int(self.info["max_length"]),
            return_tensors="np",
        )
        return {
            k: torch.from_numpy(np.asarray(out[k], dtype=np.int64))
            for k in ("input_ids", "attention_mask")
        }

    def image_transform(self, train: bool = False) -> Callable:
        """mclip's eval transform with the export's size, mean, std and interpolation."""
        return self._transform

    @property
    def logit_scale(self) -> torch.Tensor:
        """log of the temperature inverse the model was trained with (0-d)."""
        return self._scale

    @property
    def logit_bias(self) -> torch.Tensor | None:
        """The sigmoid bias of a sigmoid-trained model, else None."""
        return self._bias

    @property
    def versions(self) -> dict[str, str]:
        """onnxruntime and the tokenizer library, and the export's quantisation."""
        return {
            **package_versions("onnxruntime", "transformers"),
            "quantize": str(self.info.get("quantize")),
        }


def session(path: Path, threads: int = 0):
    """An onnxruntime CPU session of ``path`` with all graph optimisations; ``threads`` intra-op
    threads (0: onnxruntime's default)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConfigError("ONNX models need onnxruntime: pip install 'mclip[export]'") from None
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def load_onnx(directory: str) -> OnnxAdapter:
    """``onnx:DIR`` -> OnnxAdapter; onnxruntime runs it on the CPU whatever device the caller
    evaluates on (inputs are moved to the CPU)."""
    path = Path(directory).expanduser()
    missing = [
        f for f in (INFO_FILE, PREPROCESS_FILE, IMAGE_FILE, TEXT_FILE) if not (path / f).is_file()
    ]
    if missing:
        raise ConfigError(
            f"model spec 'onnx:{directory}': '{path}' is not an mclip ONNX export "
            f"({', '.join(missing)} missing); write one with 'mclip export MODEL "
            f"--format onnx --out DIR'"
        )
    return OnnxAdapter(path, f"onnx:{directory}").eval()
