"""The embedded demo dataset: coloured shapes with captions in 12 languages, written as shards.

Every image shows one shape (circle, square, triangle, star) in one of six colours, at a random
size, position and tilt, on a random low-saturation background with a gradient and noise.
The dataset is written in the img2dataset WebDataset layout so that it goes through exactly the
pipeline used for real data:

    OUT/train/shard-000000.tar ...   KEY.jpg, KEY.txt (English caption), KEY.json
    OUT/eval/shard-000000.tar        held-out images for zero-shot classification
    OUT/retrieval/shard-000000.tar   one image per class, captions unique to that image
    OUT/classnames/{lang}_classnames.json, {lang}_zeroshot_classification_templates.json
    OUT/topics/{shape}/NN.jpg        topic matching: the shapes are the topics, a few images each
    OUT/topics/sentences.tsv         topic<TAB>language<TAB>sentence, captions in every language
    OUT/bitext.tsv                   id<TAB>language<TAB>sentence: each class's noun phrase, in
                                     every language (translations share the id)
    OUT/dataset.json                 what was written

``KEY.json`` holds ``{"captions": {lang: [caption, ...]}, "label": int, "colour": str,
"shape": str}``. Class-name and template files use the CLIP_benchmark layout
(``{dataset: [names]}``), so the demo is read by the same loader as real suites.
"""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path
from typing import Callable

import numpy as np
import webdataset as wds
from PIL import Image, ImageDraw

from mclip.data.demo_language import CLASSES, COLOURS, LANGUAGES, SHAPES, class_names

DATASET_NAME = "demo_shapes"

COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (215, 30, 30),
    "green": (30, 165, 45),
    "blue": (35, 65, 215),
    "yellow": (235, 215, 30),
    "purple": (135, 40, 185),
    "orange": (245, 130, 20),
}
_SUPERSAMPLE = 2
MAX_TILT = math.radians(12)


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if shape == "square":
        corners, radii = 4, [r * math.sqrt(2)] * 4
        angle += math.pi / 4
    elif shape == "triangle":
        corners, radii = 3, [r * 1.25] * 3
    else:  # star: ten vertices alternating outer and inner radius
        corners, radii = 10, [r * 1.2 if i % 2 == 0 else r * 0.5 for i in range(10)]
    return [
        (
            cx + radii[i] * math.cos(angle + 2 * math.pi * i / corners),
            cy + radii[i] * math.sin(angle + 2 * math.pi * i / corners),
        )
        for i in range(corners)
    ]


def render_background(rng: np.random.Generator, size: int) -> Image.Image:
    """The demo's background, ``size`` x ``size`` RGB: a tinted grey with a linear gradient in a
    random direction (drawn from ``rng``)."""
    grey = rng.uniform(35, 220)
    tint = rng.uniform(-22, 22, size=3)
    base = np.clip(grey + tint, 0, 255)
    direction = rng.normal(size=2)
    direction /= np.linalg.norm(direction) + 1e-9
    ramp = (
        np.linspace(-1, 1, size)[None, :] * direction[0]
        + np.linspace(-1, 1, size)[:, None] * direction[1]
    )
    background = base[None, None, :] + rng.uniform(0, 30) * ramp[:, :, None]
    return Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))


def render_shape(rng: np.random.Generator, colour: str, shape: str, size: int = 64) -> Image.Image:
    """Draw one ``colour`` ``shape`` on a random background.

    Returns an RGB PIL image of ``size`` x ``size`` pixels. Size (radius 22-42% of half the
    image), position, a small tilt of the upright shape (at most ``MAX_TILT``), colour jitter,
    background tint, gradient and noise are drawn from ``rng``.
    """
    big = size * _SUPERSAMPLE
    image = render_background(rng, big)

    r = rng.uniform(0.45, 0.85) * big / 4
    margin = r * 1.3
    cx, cy = rng.uniform(margin, big - margin, size=2)
    fill = tuple(int(np.clip(v + rng.integers(-15, 16), 0, 255)) for v in COLOUR_RGB[colour])
    draw = ImageDraw.Draw(image)
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        tilt = rng.uniform(-MAX_TILT, MAX_TILT)  # upright shapes, slightly tilted
        draw.polygon(_polygon(shape, cx, cy, r, -math.pi / 2 + tilt), fill=fill)

    image = image.resize((size, size), Image.Resampling.LANCZOS)
    pixels = np.asarray(image).astype(np.float32) + rng.normal(0, 3.0, size=(size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def _write_split(path: Path, samples, shard_size: int) -> int:
    path.mkdir(parents=True, exist_ok=True)
    count = 0
    with wds.ShardWriter(str(path / "shard-%06d.tar"), maxcount=shard_size, verbose=0) as sink:
        for sample in samples:
            sink.write(sample)
            count += 1
    return count


def _sample(
    key: int, rng: np.random.Generator, label: int, image_size: int, captions: dict[str, list[str]]
) -> dict:
    colour, shape = CLASSES[label]
    meta = {"captions": captions, "label": label, "colour": colour, "shape": shape}
    return {
        "__key__": f"{key:08d}",
        "jpg": _jpeg(render_shape(rng, colour, shape, image_size)),
        "txt": captions["en"][int(rng.integers(len(captions["en"])))],
        "json": json.dumps(meta, ensure_ascii=False).encode("utf-8"),
    }


def write_topics(out: Path, image_size: int = 64, images_per_topic: int = 6, seed: int = 0) -> dict:
    """Topic-matching data under ``out`` (``topics/`` of the module docstring).

    The topics are the four shapes. Each gets ``images_per_topic`` images (colours in turn) in
    ``out/<shape>/`` and, in every demo language, one sentence per colour (a caption phrasing
    chosen in turn), so a sentence names its topic's shape in some colour. Drawn from its own
    generator (``seed``), so the other splits do not change. Returns {"topics", "images",
    "sentences"} counts.
    """
    rng = np.random.default_rng([seed, 1])
    rows = ["topic\tlanguage\tsentence"]
    for s, shape in enumerate(SHAPES):
        folder = out / shape
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(images_per_topic):
            colour = COLOURS[i % len(COLOURS)]
            (folder / f"{i:02d}.jpg").write_bytes(
                _jpeg(render_shape(rng, colour, shape, image_size))
            )
        for lang, language in LANGUAGES.items():
            for c, colour in enumerate(COLOURS):
                template = language.caption_templates[(c + s) % len(language.caption_templates)]
                rows.append(f"{shape}\t{lang}\t{language.caption(colour, shape, template)}")
    (out / "sentences.tsv").write_text("\n".join(rows) + "\n", "utf-8")
    return {
        "topics": len(SHAPES),
        "images": len(SHAPES) * images_per_topic,
        "sentences": len(rows) - 1,
    }


def write_bitext(path: Path) -> int:
    """Parallel sentences for bitext retrieval: per class, its bare noun phrase (the first caption
    phrasing, ``"A red circle."``), in every demo language under the id ``{colour}_{shape}``.
    Returns the number of sentences written."""
    rows = ["id\tlanguage\tsentence"]
    for colour, shape in CLASSES:
        for lang, language in LANGUAGES.items():
            sentence = language.caption(colour, shape, language.caption_templates[0])
            rows.append(f"{colour}_{shape}\t{lang}\t{sentence}")
    path.write_text("\n".join(rows) + "\n", "utf-8")
    return len(rows) - 1


def write_demo_dataset(
    out_dir: str | os.PathLike,
    n_train: int = 12000,
    n_eval_per_class: int = 20,
    retrieval_captions: int = 3,
    image_size: int = 64,
    shard_size: int = 1000,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
    topic_images: int = 6,
) -> dict:
    """Generate the demo dataset under ``out_dir`` (layout in the module docstring).

    ``n_train`` training images with every caption phrasing in every language;
    ``n_eval_per_class`` held-out images per class for zero-shot classification; one retrieval
    image per class with ``retrieval_captions`` distinct phrasings per language (so every caption
    describes exactly one image of the split); ``topic_images`` images per topic (shape) for topic
    matching (:func:`write_topics`). ``progress(n)`` is called with the number of shard images
    written since the last call. Returns the summary also written to ``dataset.json``.
    """
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    langs = list(LANGUAGES)
    n_classes = len(CLASSES)

    def all_captions(label: int) -> dict[str, list[str]]:
        colour, shape = CLASSES[label]
        return {lang: LANGUAGES[lang].captions(colour, shape) for lang in langs}

    def generate(labels, caption_fn, key0):
        for i, label in enumerate(labels):
            yield _sample(key0 + i, rng, int(label), image_size, caption_fn(int(label)))
            if progress is not None:
                progress(1)

    def retrieval_caption_subset(label: int) -> dict[str, list[str]]:
        full = all_captions(label)
        return {
            lang: [
                full[lang][j]
                for j in sorted(rng.choice(len(full[lang]), retrieval_captions, replace=False))
            ]
            for lang in langs
        }

    train_labels = rng.permutation(np.arange(n_train) % n_classes)
    eval_labels = np.repeat(np.arange(n_classes), n_eval_per_class)
    counts = {
        "train": _write_split(out / "train", generate(train_labels, all_captions, 0), shard_size),
        "eval": _write_split(
            out / "eval", generate(eval_labels, all_captions, 10_000_000), shard_size
        ),
        "retrieval": _write_split(
            out / "retrieval",
            generate(range(n_classes), retrieval_caption_subset, 20_000_000),
            shard_size,
        ),
    }
    names_dir = out / "classnames"
    names_dir.mkdir(parents=True, exist_ok=True)
    for lang in langs:
        (names_dir / f"{lang}_classnames.json").write_text(
            json.dumps({DATASET_NAME: class_names(lang)}, ensure_ascii=False, indent=1), "utf-8"
        )
        (names_dir / f"{lang}_zeroshot_classification_templates.json").write_text(
            json.dumps(
                {DATASET_NAME: list(LANGUAGES[lang].prompt_templates)}, ensure_ascii=False, indent=1
            ),
            "utf-8",
        )
    topics = write_topics(out / "topics", image_size, topic_images, seed)
    summary = {
        "dataset": DATASET_NAME,
        "languages": langs,
        "classes": n_classes,
        "image_size": image_size,
        "seed": seed,
        "counts": counts,
        "topics": topics,
        "bitext_sentences": write_bitext(out / "bitext.tsv"),
    }
    (out / "dataset.json").write_text(json.dumps(summary, indent=1), "utf-8")
    return summary
