"""Export one mclip checkpoint: load it, write the format into a staging folder beside ``--out``,
add the model card and ``mclip_export.json``, and only then move the folder into place.

So a failed export (a setting the format cannot express, a check that finds other embeddings, a
full disk) leaves ``--out`` as it was, and ``--overwrite`` replaces only an earlier export: a
folder that holds files of another kind, or the run being exported, is refused.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from mclip.export import ExportError
from mclip.export.model_card import model_card
from mclip.models.dual import DualEncoder

RECORD_FILE = "mclip_export.json"
FORMATS = ("open_clip", "onnx")
_EXPORT_MARKERS = (RECORD_FILE, "open_clip_config.json", "mclip_onnx.json")


def check_out_dir(out_dir: str | Path, overwrite: bool, source: Path) -> Path:
    """``out_dir`` resolved, once it is known to be safe to write: new or empty, or (with
    ``overwrite``) an earlier export; never the source checkpoint, its run, or a folder above
    them. An ExportError naming the folder otherwise."""
    out_dir = Path(out_dir).resolve()
    source = source.resolve()
    protected = [source, *source.parents]
    if out_dir in protected or source in out_dir.parents:
        raise ExportError(
            f"--out '{out_dir}' is the checkpoint being exported, its run or a "
            f"folder containing it; choose a new folder"
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"--out '{out_dir}' is a file; choose a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise ExportError(
                f"--out '{out_dir}' is not empty; choose a new folder or pass "
                f"--overwrite to replace an earlier export there"
            )
        if not any((out_dir / marker).is_file() for marker in _EXPORT_MARKERS):
            raise ExportError(
                f"--out '{out_dir}' holds files that are not an mclip export; "
                f"--overwrite replaces only an earlier export: choose a new folder"
            )
    return out_dir


def export_checkpoint(
    checkpoint: Path,
    fmt: str,
    out_dir: str | Path,
    embed_dim: int | None = None,
    quantize: str | None = None,
    calibration: str | Path | None = None,
    hub_id: str | None = None,
    results: dict | None = None,
    license: str = "other",
    overwrite: bool = False,
) -> dict:
    """Export the model directory ``checkpoint`` as ``fmt`` (``open_clip`` / ``onnx``) into
    ``out_dir`` with its model card; returns the record also written as ``mclip_export.json``:
    {"source", "format", "path", "embed_dim", "warnings", ...the format's check}. ``results``: a
    results document of ``mclip eval`` for the card; ``license``: the card's licence field."""
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if fmt == "open_clip" and (quantize or calibration):
        raise ExportError("--quantize and --calibration apply to --format onnx only")
    if fmt == "onnx" and hub_id:
        raise ExportError("--hub-id applies to --format open_clip only")
    out_dir = check_out_dir(out_dir, overwrite, checkpoint)
    model, config = DualEncoder.load(checkpoint, verify=False)
    warnings = []
    adapters = sorted(p.name for p in (checkpoint / "adapters").glob("*") if p.is_dir())
    if adapters:
        warnings.append(
            f"the LoRA language adapters beside the checkpoint "
            f"({', '.join(adapters)}) are not part of the export: it encodes as "
            f"'mclip eval --no-adapters' does"
        )
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    except OSError as error:
        raise ExportError(f"cannot write beside '{out_dir}': {error.strerror or error}") from None
    try:
        if fmt == "open_clip":
            from mclip.export.open_clip import export_open_clip

            info = export_open_clip(model, config, staging, embed_dim, hub_id)
            spec = f"hf-hub:{hub_id}" if hub_id else f"local-dir:{out_dir}"
            if not hub_id:  # the text tower is named by the folder's final place
                _point_at(staging, out_dir)
        else:
            from mclip.export.onnx import export_onnx

            info = export_onnx(model, config, staging, embed_dim, quantize, calibration)
            spec = f"onnx:{out_dir}"
        record = {
            "source": str(checkpoint),
            "format": fmt,
            "path": str(out_dir),
            "spec": spec,
            "warnings": warnings,
            **info,
        }
        card = model_card(
            model,
            config,
            checkpoint,
            {**record, "usage": usage(fmt, spec)},
            results,
            license=license,
            adapters=adapters,
        )
        (staging / "README.md").write_text(card, "utf-8")
        (staging / RECORD_FILE).write_text(json.dumps(record, indent=2), "utf-8")
        _replace(staging, out_dir)
    except OSError as error:
        raise ExportError(
            f"could not write the export to '{out_dir}': "
            f"{error.strerror or error}; an earlier export there is unchanged"
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return record


def _point_at(directory: Path, final: Path) -> None:
    """Name ``final`` (where ``directory`` will be) as the text tower's place in its config."""
    from mclip.export.open_clip import CONFIG_FILE, _local

    path = directory / CONFIG_FILE
    path.write_text(
        json.dumps(_local(json.loads(path.read_text("utf-8")), str(final)), indent=2), "utf-8"
    )


def _replace(staging: Path, out_dir: Path) -> None:
    """Move ``staging`` to ``out_dir``; an earlier ``out_dir`` is moved aside first and removed
    only once the new one is in place (put back if the move fails)."""
    aside = None
    if out_dir.exists():
        aside = out_dir.with_name(f".{out_dir.name}.replaced-{staging.name[-8:]}")
        out_dir.rename(aside)
    try:
        staging.rename(out_dir)
    except OSError:
        if aside is not None:
            aside.rename(out_dir)
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


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

folder = "{folder}"
pre = json.load(open(f"{{folder}}/preprocess.json"))
info = json.load(open(f"{{folder}}/mclip_onnx.json"))
image_encoder = ort.InferenceSession(f"{{folder}}/image_encoder.onnx")
text_encoder = ort.InferenceSession(f"{{folder}}/text_encoder.onnx")
tokenizer = AutoTokenizer.from_pretrained(folder)

def pixels(image):  # mclip's eval transform: shorter side to size, centre crop, normalise
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
                                      "attention_mask": \
tokens["attention_mask"].astype(np.int64)}})[0]
scores = image_embeds @ text_embeds.T    # cosine similarities
```"""


def usage(fmt: str, spec: str) -> str:
    """The code block of the model card that loads the export."""
    if fmt == "open_clip":
        return OPEN_CLIP_USAGE.format(spec=spec)
    return ONNX_USAGE.format(folder=spec.split(":", 1)[1])
