"""The evaluation benchmarks' shared pieces: a seeded random-init open_clip ViT written as an
open_clip ``local-dir:`` folder, an ImageFolder of photo-like JPEGs, CLIP_benchmark's ImageNet
class names and templates, and the encoding throughput of mclip's evaluation paths against
open_clip's plain ``encode_text`` (texts/s) and without / with image decoding workers (images/s),
as a markdown table.

Used by ``bench_eval_vs_clip_benchmark.py`` (its throughput rows) and ``bench_eval.py`` (its
``encoding`` case)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_model(folder: Path, quick: bool) -> None:
    """A seeded random-init open_clip ViT as an open_clip ``local-dir:`` folder."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    width, layers = (32, 1) if quick else (128, 4)
    config = {
        "embed_dim": width,
        "vision_cfg": {
            "image_size": 64,
            "layers": layers,
            "width": width,
            "head_width": 32,
            "patch_size": 16,
        },
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,
            "width": width,
            "heads": max(1, width // 32),
            "layers": layers,
        },
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench-vit.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder / "bench-vit.json")
    torch.manual_seed(0)
    model = open_clip.create_model("bench-vit")
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(folder / "open_clip_model.safetensors"),
    )
    preprocess = {
        "size": 64,
        "mean": list(open_clip.OPENAI_DATASET_MEAN),
        "std": list(open_clip.OPENAI_DATASET_STD),
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    }
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": config, "preprocess_cfg": preprocess})
    )


def write_images(root: Path, classes: int, per_class: int, size: tuple[int, int]) -> None:
    """JPEGs (smooth colour fields with noise, like photos to a decoder) in ROOT/val/NNNN/."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    w, h = size
    ramp = np.linspace(0, 1, w)[None, :, None] * np.linspace(0, 1, h)[:, None, None]
    for c in range(classes):
        folder = root / "val" / f"{c:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            colour = rng.uniform(0, 255, 3)
            pixels = ramp * colour + rng.normal(0, 20, (h, w, 3)) + rng.uniform(0, 80, 3)
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(
                folder / f"{i:04d}.jpg", quality=90
            )


def write_class_texts(
    folder: Path, languages: list[str], classes: int | None, templates: int | None
) -> None:
    """CLIP_benchmark's ImageNet class names and templates (the first ``classes`` /
    ``templates``), in its layout, under both dataset keys the two tools look up."""
    import clip_benchmark.datasets as package

    source = Path(package.__file__).parent
    folder.mkdir(parents=True, exist_ok=True)
    for code in languages:
        names = json.loads((source / f"{code}_classnames.json").read_text())["imagenet1k"]
        prompts = json.loads(
            (source / f"{code}_zeroshot_classification_templates.json").read_text()
        )["imagenet1k"]
        names, prompts = names[:classes], prompts[:templates]
        for kind, value in (("classnames", names), ("zeroshot_classification_templates", prompts)):
            (folder / f"{code}_{kind}.json").write_text(
                json.dumps(
                    {"imagenet1k": value, "imagenet1k-unverified": value}, ensure_ascii=False
                )
            )


def throughput(
    work: Path,
    model: Path,
    texts: Path,
    languages: list[str],
    count: int,
    images: Path,
    threads: int,
) -> dict:
    """texts/s and images/s of the open_clip model folder ``model``, in one child process
    with ``threads`` torch threads.

    Texts: ``count`` distinct prompts, an equal share of each language's first (class names x
    templates in ``texts``, in file order), through open_clip's plain ``tokenizer`` +
    ``encode_text`` in batches of 256 in file order, then through mclip's text path (distinct
    prompts sorted by length, each batch run at its own length, tokenised ahead) in fp32 and in
    bf16. Images: every image of the ImageFolder ``images`` through mclip's image path with 0
    decoding workers and with the default. Keys: ``texts``, ``open_clip_texts_per_s``,
    ``mclip_texts_per_s``, ``mclip_bf16_texts_per_s``, ``images_per_s_workers_{N}``,
    ``default_workers``, ``languages``, ``threads``."""
    code = f"""
import json, time, sys, torch
sys.path.insert(0, {str(ROOT)!r})
import mclip
from mclip.eval.datasets import open_image_set
from mclip.eval.embeddings import ImageEmbeddings, TextEmbeddings
from mclip.eval.image_loading import default_image_workers
adapter = mclip.load_model("open_clip:local-dir:{model}")
prompts = []
share = -(-{count} // {len(languages)})
for code in {languages!r}:
    names = json.load(open({str(texts)!r} + f"/{{code}}_classnames.json"))["imagenet1k"]
    temps = json.load(open({str(texts)!r} + \
f"/{{code}}_zeroshot_classification_templates.json"))["imagenet1k"]
    prompts += list(dict.fromkeys(t.replace("{{c}}", n) for n in names for t in temps))[:share]
prompts = list(dict.fromkeys(prompts))[:{count}]
out = {{"texts": len(prompts)}}
with torch.no_grad():
    start = time.perf_counter()
    for i in range(0, len(prompts), 256):
        adapter.model.encode_text(adapter.tokenizer(prompts[i:i + 256]))
    out["open_clip_texts_per_s"] = len(prompts) / (time.perf_counter() - start)
    start = time.perf_counter()
    TextEmbeddings(adapter).encode(prompts)
    out["mclip_texts_per_s"] = len(prompts) / (time.perf_counter() - start)
    start = time.perf_counter()
    TextEmbeddings(adapter, precision="bf16").encode(prompts)
    out["mclip_bf16_texts_per_s"] = len(prompts) / (time.perf_counter() - start)
    image_set = open_image_set({str(images)!r})
    for workers in (0, default_image_workers()):
        start = time.perf_counter()
        n = len(ImageEmbeddings(adapter, torch.device("cpu"), workers=workers).get(image_set)[1])
        out[f"images_per_s_workers_{{workers}}"] = n / (time.perf_counter() - start)
    out["default_workers"] = default_image_workers()
print(json.dumps(out))
"""
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=work,
        env={
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": str(threads),
        },
    )
    if done.returncode != 0:
        sys.exit(f"throughput measurement failed:\n{done.stderr[-3000:]}")
    speed = json.loads(done.stdout.strip().splitlines()[-1])
    return {**speed, "languages": languages, "threads": threads}


def encoding_table(speed: dict) -> str:
    """Markdown rows: each encoding path's rate and its ratio to the plain path of its kind."""
    texts, base = speed["open_clip_texts_per_s"], speed["images_per_s_workers_0"]
    rows = [
        ("texts/s", "open_clip tokenizer + encode_text (batches of 256)", texts, texts),
        (
            "texts/s",
            "mclip fp32 (length-sorted, run at own length)",
            speed["mclip_texts_per_s"],
            texts,
        ),
        ("texts/s", "mclip bf16", speed["mclip_bf16_texts_per_s"], texts),
    ] + [
        (
            "images/s",
            f"mclip, {key.removeprefix('images_per_s_workers_')} decoding workers",
            speed[key],
            base,
        )
        for key in sorted(k for k in speed if k.startswith("images_per_s_workers_"))
    ]
    lines = [
        f"| encoding ({speed['texts']} prompts in {', '.join(speed['languages'])}; "
        f"{speed['threads']} threads) | path | per s | x plain |",
        "|---|---|---:|---:|",
    ]
    lines += [
        f"| {kind} | {path} | {rate:.0f} | {rate / ref:.2f}x |" for kind, path, rate, ref in rows
    ]
    return "\n".join(lines)
