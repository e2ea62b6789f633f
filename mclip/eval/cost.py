"""What a model costs, recorded next to what it scores (``cost`` in a results file).

Per model, at the sizes the evaluation used:

* ``parameters``: ``{"image", "text", "total"}``, each tower's parameters: those that receive a
  gradient from one image / one text through the adapter's own ``encode_image`` /
  ``encode_text`` (so shared weights count in both towers and ``total`` counts them once, and
  weights outside both, such as the logit scale, only in ``total``); an adapter may count its
  own (``tower_parameters()``: the ONNX adapter counts its graphs' initializers).
* ``flops``: ``{"image", "text"}``: forward FLOPs (2 per multiply-add) of one image at the
  evaluated input size and of one text, the mean over up to 16 of the evaluated texts, each at its
  own length (no padding), counted by ``torch.utils.flop_counter.FlopCounterMode`` (matrix
  products, convolutions, attention). None where the model does not run in torch (ONNX).
* ``embed_dim`` and ``embedding_bytes`` (``{"fp32", "fp16", "int8"}``: one stored embedding).
* ``throughput``: ``{"images_per_s", "texts_per_s"}`` measured by this evaluation on its device
  (decoding and batching included; None when everything came from the cache), with ``device``,
  ``precision`` and ``batch_size``.

:mod:`mclip.eval.cost_report` puts several models' costs next to their accuracy and marks the
Pareto front (``mclip report A.json B.json ...``).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Sequence

import torch
from PIL import Image


@contextlib.contextmanager
def _gradients_on(model):
    params = list(model.parameters())
    saved = [(p.requires_grad, p.grad) for p in params]
    try:
        for p in params:
            p.requires_grad_(True)
            p.grad = None
        yield params
    finally:
        for p, (requires, grad) in zip(params, saved):
            p.grad = grad
            p.requires_grad_(requires)


@contextlib.contextmanager
def _evaluating(model):
    """``model`` in eval mode (batch norm with one sample), its mode restored after."""
    training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        yield
    finally:
        if training:
            model.train()


def _used(model, run: Callable[[], torch.Tensor]) -> set[int]:
    with _gradients_on(model) as params, torch.enable_grad(), _evaluating(model):
        run().float().sum().backward()
        return {id(p) for p in params if p.grad is not None}


def probe_image(model, device: torch.device) -> torch.Tensor:
    """One transformed image [1, 3, H, W] at the size the model evaluates, on ``device``."""
    transform = model.image_transform(train=False)
    return transform(Image.new("RGB", (256, 256), (128, 128, 128))).unsqueeze(0).to(device)


def tower_parameters(model, device: torch.device, text: str = "a photo of a cat") -> dict:
    """{"image", "text", "total"} parameter counts (see the module docstring)."""
    own = getattr(model, "tower_parameters", None)
    if callable(own):
        return own()
    size = {id(p): p.numel() for p in model.parameters()}
    image = _used(model, lambda: model.encode_image(probe_image(model, device)))
    words = _used(model, lambda: model.encode_text([text]))
    return {
        "image": sum(size[i] for i in image),
        "text": sum(size[i] for i in words),
        "total": sum(size.values()),
    }


def forward_flops(model, device: torch.device, texts: Sequence[str]) -> dict:
    """{"image": FLOPs of one image, "text": mean FLOPs of one of ``texts``} (None: no torch
    model, or no text)."""
    from torch.utils.flop_counter import FlopCounterMode

    if not any(True for _ in model.parameters()):
        return {"image": None, "text": None}
    with torch.no_grad(), _evaluating(model):
        with FlopCounterMode(display=False) as counter:
            model.encode_image(probe_image(model, device))
        image = int(counter.get_total_flops())
        text = None
        if texts:
            with FlopCounterMode(display=False) as counter:
                for one in texts:
                    model.encode_text([one])
            text = counter.get_total_flops() / len(texts)
    return {"image": image, "text": text}


def model_cost(model, device: torch.device, images, text, precision: str, batch_size: int) -> dict:
    """The cost block of one evaluation: ``images`` / ``text`` are its
    :class:`~mclip.eval.embeddings.ImageEmbeddings` / ``TextEmbeddings`` (their counts, wall
    time and sample of texts)."""
    dim = int(model.embed_dim)
    sample = list(text.sample) or ["a photo of a cat"]
    return {
        "parameters": tower_parameters(model, device, sample[0]),
        "flops": forward_flops(model, device, sample),
        "embed_dim": dim,
        "embedding_bytes": {"fp32": 4 * dim, "fp16": 2 * dim, "int8": dim},
        "throughput": {
            "images_per_s": images.embedded / images.seconds if images.embedded else None,
            "texts_per_s": text.encoded / text.seconds if text.encoded else None,
        },
        "device": str(device),
        "precision": precision,
        "batch_size": batch_size,
    }
