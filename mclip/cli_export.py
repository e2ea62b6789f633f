"""Handler of ``mclip export``: an mclip model as an open_clip directory or ONNX encoders, with its
model card (parser in :mod:`mclip.cli`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

OPEN_CLIP_USAGE = """```python
import open_clip

model, _, preprocess = open_clip.create_model_and_transforms("{spec}")
tokenizer = open_clip.get_tokenizer("{spec}")
image_embeds = model.encode_image(preprocess(image).unsqueeze(0), normalize=True)
text_embeds = model.encode_text(tokenizer(["a photo of a cat"]), normalize=True)
```"""

ONNX_USAGE = """```python
import json
import numpy as np
import onnxruntime as ort
from PIL import Image
from transformers import AutoTokenizer   # tokenizes without torch

folder = "{spec}"
pre = json.load(open(f"{{folder}}/preprocess.json"))
info = json.load(open(f"{{folder}}/mclip_onnx.json"))
image_encoder = ort.InferenceSession(f"{{folder}}/image_encoder.onnx")
text_encoder = ort.InferenceSession(f"{{folder}}/text_encoder.onnx")
tokenizer = AutoTokenizer.from_pretrained(folder)

def pixels(image):
    image, size = image.convert("RGB"), pre["size"]
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    resample = Image.BICUBIC if pre["interpolation"] == "bicubic" else Image.BILINEAR
    if (w, h) != (size, size):
        image = image.resize((new_short, new_long) if w <= h else (new_long, new_short), resample)
        left, top = (image.width - size) // 2, (image.height - size) // 2
        image = image.crop((left, top, left + size, top + size))
    x = np.asarray(image, dtype=np.float32) / 255.0
    x = (x - np.array(pre["mean"], np.float32)) / np.array(pre["std"], np.float32)
    return x.transpose(2, 0, 1)[None]

image_embeds = image_encoder.run(None, {{"pixel_values": pixels(Image.open("cat.jpg"))}})[0]
tokens = tokenizer(["a photo of a cat", "ein Foto einer Katze"], padding=True, truncation=True,
                   max_length=info["max_length"], return_tensors="np")
text_embeds = text_encoder.run(None, {{"input_ids": tokens["input_ids"].astype(np.int64),
                                       "attention_mask": tokens["attention_mask"].astype(np.int64)}})[0]
scores = image_embeds @ text_embeds.T    # both L2-normalised: cosine similarities
```"""


def cmd_export(args: argparse.Namespace) -> int:
    from mclip.config import ConfigError
    from mclip.export.model_card import model_card
    from mclip.models.dual import DualEncoder
    from mclip.outputs import check_writable, write_text_atomically
    from mclip.train.checkpoint import resolve_model_dir

    if args.relocate:
        from mclip.export.open_clip import relocate_open_clip

        print(f"pointed {relocate_open_clip(args.model)} at {Path(args.model).resolve()}")
        return 0
    if not args.out:
        raise ConfigError("mclip export needs --out DIR (a new folder for the export)")
    check_writable(Path(args.out).resolve().parent, "--out's folder")
    results = None
    if args.results:
        from mclip.eval.report import load_report

        results = load_report(args.results)
    passed_over: list = []
    checkpoint = resolve_model_dir(args.model, passed_over)
    for path, problem in passed_over:
        print(f"[mclip export] warning: passed over damaged checkpoint {path} ({problem})",
              file=sys.stderr)
    model, config = DualEncoder.load(checkpoint, verify=False)
    print(f"[mclip export] {checkpoint} -> {args.format} in {args.out}", file=sys.stderr)
    if args.format == "open_clip":
        from mclip.export.open_clip import export_open_clip

        info = export_open_clip(model, config, args.out, args.embed_dim, args.hub_id,
                                overwrite=args.overwrite)
        spec = f"hf-hub:{args.hub_id}" if args.hub_id else f"local-dir:{info['path']}"
        usage = OPEN_CLIP_USAGE.format(spec=spec)
        checked = (f"open_clip's embeddings equal mclip's: max |difference| image "
                   f"{info['max_difference']['image']:.1e}, text {info['max_difference']['text']:.1e}")
    else:
        from mclip.export.onnx import export_onnx

        info = export_onnx(model, config, args.out, args.embed_dim, args.quantize,
                           overwrite=args.overwrite, calibration=args.calibration)
        check = info["check"]
        usage = ONNX_USAGE.format(spec=info["path"])
        checked = (f"onnxruntime against PyTorch: max |difference| image {check['image']:.1e}, "
                   f"text {check['text']:.1e}; smallest cosine image "
                   f"{check['image_cosine']:.5f}, text {check['text_cosine']:.5f}"
                   + "".join(f"\n{tower} encoder: {how}"
                             for tower, how in info["quantized"].items()))
        info["min_cosine"] = min(check["image_cosine"], check["text_cosine"])
    card = model_card(model, config, checkpoint, {**info, "format": args.format, "usage": usage},
                      results, license=args.license)
    write_text_atomically(Path(info["path"]) / "README.md", card)
    print(f"exported {checkpoint} as {args.format} (embed_dim {info['embed_dim']}"
          f"{', ' + args.quantize if args.format == 'onnx' and args.quantize else ''}) to "
          f"{info['path']}\n{checked}\nload it with: "
          f"{'onnx:' + info['path'] if args.format == 'onnx' else spec}")
    write_text_atomically(Path(info["path"]) / "mclip_export.json", json.dumps(
        {"source": str(checkpoint), "format": args.format,
         **{k: v for k, v in info.items() if k != "path"}}, indent=2))
    return 0
