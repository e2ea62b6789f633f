"""The hard level of the embedded demo: two objects in a spatial relation, captions in 12 languages.

Every image shows two objects of different shapes, each with a size (small / large), a colour and
a shape, the first left of or above the second, on the demo's random background (tinted grey,
gradient, noise). The objects never overlap and the relation is unambiguous: along the relation's
axis the gap between their extents is at least ``GAP`` of the image side, and the offset across
that axis is at most ``MAX_CROSS`` of the offset along it. Captions and class names are
:mod:`mclip.data.demo_hard_language`'s. The layout is the demo's (:mod:`mclip.data.demo`):

    OUT/train/shard-000000.tar ...   KEY.jpg, KEY.txt (English caption), KEY.json
    OUT/eval/shard-000000.tar        ``n_eval_per_class`` images per zero-shot class
    OUT/retrieval/shard-000000.tar   images in contrast pairs, captions unique to each image
    OUT/classnames/{lang}_classnames.json, {lang}_zeroshot_classification_templates.json
    OUT/dataset.json                 what was written, with ``"level": "hard"``

``KEY.json`` holds ``{"captions": {lang: [caption, ...]}, "label": int, "relation": "left" |
"above", "objects": [{"size", "colour", "shape"}, {...}]}``, the first object being the one left
of / above the other. Training and eval samples carry every full caption (each phrasing, both
orders of mention) and the bare descriptions of the zero-shot prompts ("a circle to the left of a
square"); retrieval samples carry ``retrieval_captions`` full captions per language.

The retrieval images come in pairs that share every word of their descriptions and differ only in
how the words bind: the same two objects with their places swapped, or their colours, sizes or
shapes exchanged. A model that reads a caption as a bag of attributes cannot tell the two apart.

Two settings of a training run matter here: a horizontal flip turns "left of" into "right of"
without changing the caption, so train with ``data.augment=false`` (``dataset.json`` says
``"flip_invariant": false``); and the longest captions (Hindi, Russian) run to about 175 UTF-8
bytes (``max_caption_bytes``), so a byte-level text tower needs ``model.text.max_length`` of 192
or it reads them cut short, often without the second object.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Callable, Iterator, cast

import numpy as np
from PIL import Image, ImageDraw

from mclip.data.demo import (
    _SUPERSAMPLE,
    COLOUR_RGB,
    MAX_TILT,
    _jpeg,
    _polygon,
    _write_split,
    render_background,
)
from mclip.data.demo_hard_language import HARD_LANGUAGES, hard_class_names
from mclip.data.demo_hard_scene import HARD_CLASSES, RELATIONS, SIZES, Scene, Thing, scene_label
from mclip.data.demo_language import COLOURS, SHAPES

DATASET_NAME = "demo_relations"
# object radius as a fraction of the image side, by size
RADIUS: dict[str, tuple[float, float]] = {"small": (0.07, 0.09), "large": (0.13, 0.16)}
EXTENT = 1.25  # half-extent of any shape (star, tilted triangle / square) in radii
GAP = 0.05  # least gap between the two extents along the relation's axis, fraction of side
MAX_CROSS = 0.4  # largest offset across the axis, as a fraction of the offset along it
_PLACEMENT_TRIES = 100
_PLACEMENT_BATCH = 256


def random_scene(rng: np.random.Generator, label: int | None = None) -> Scene:
    """A random scene; with ``label``, its shapes and relation are HARD_CLASSES[label]'s.

    Sizes and colours are drawn independently for both objects (they may coincide; the shapes
    always differ).
    """
    if label is None:
        label = int(rng.integers(len(HARD_CLASSES)))
    a, relation, b = HARD_CLASSES[label]
    first, second = (
        Thing(SIZES[int(rng.integers(len(SIZES)))], COLOURS[int(rng.integers(len(COLOURS)))], shape)
        for shape in (a, b)
    )
    return Scene(first, relation, second)


def place_objects(
    rng: np.random.Generator, scene: Scene, size: int
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Centres and radii ``(cx, cy, r)`` in pixels of the two objects of ``scene``.

    The first object is left of (smaller x) or above (smaller y) the second; both lie inside the
    image, their extents (``EXTENT`` radii) are ``GAP`` * ``size`` apart along the relation's axis,
    and the offset across it is at most ``MAX_CROSS`` times the offset along it.
    """
    # a drawn scene's objects have a size and a colour (only bare descriptions have None)
    radii = [rng.uniform(*RADIUS[cast(str, t.size)]) * size for t in (scene.first, scene.second)]
    extents = np.array([EXTENT * r for r in radii])
    low, high = extents + 1, size - extents - 1
    for _ in range(_PLACEMENT_TRIES):
        # candidates [n, 2 objects]: along the relation's axis, and across it
        along = rng.uniform(low, high, size=(_PLACEMENT_BATCH, 2))
        across = rng.uniform(low, high, size=(_PLACEMENT_BATCH, 2))
        gap = along[:, 1] - along[:, 0]
        good = np.flatnonzero(
            (gap >= extents.sum() + GAP * size)
            & (np.abs(across[:, 1] - across[:, 0]) <= MAX_CROSS * gap)
        )
        if len(good):
            along, across = along[good[0]], across[good[0]]
            break
    else:
        raise ValueError(f"cannot place {scene} in a {size} px image; use a larger image_size")
    if scene.relation == "left":
        return ((along[0], across[0], radii[0]), (along[1], across[1], radii[1]))
    return ((across[0], along[0], radii[0]), (across[1], along[1], radii[1]))


def render_scene(rng: np.random.Generator, scene: Scene, size: int = 64) -> Image.Image:
    """Draw ``scene`` on a random background: an RGB PIL image of ``size`` x ``size`` pixels.

    Placement by :func:`place_objects`; each object gets its own colour jitter and, unless a
    circle, a small tilt (at most ``MAX_TILT``). Drawn at twice the size, then downsampled,
    with pixel noise added as in the demo.
    """
    big = size * _SUPERSAMPLE
    image = render_background(rng, big)
    draw = ImageDraw.Draw(image)
    for thing, (cx, cy, r) in zip((scene.first, scene.second), place_objects(rng, scene, size)):
        cx, cy, r = cx * _SUPERSAMPLE, cy * _SUPERSAMPLE, r * _SUPERSAMPLE
        fill = tuple(
            int(np.clip(v + rng.integers(-15, 16), 0, 255))
            for v in COLOUR_RGB[cast(str, thing.colour)]  # drawn: never None
        )
        if thing.shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        else:
            tilt = rng.uniform(-MAX_TILT, MAX_TILT)
            draw.polygon(_polygon(thing.shape, cx, cy, r, -math.pi / 2 + tilt), fill=fill)
    image = image.resize((size, size), Image.Resampling.LANCZOS)
    pixels = np.asarray(image).astype(np.float32) + rng.normal(0, 3.0, size=(size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def scene_captions(scene: Scene, bare: bool = True) -> dict[str, list[str]]:
    """{lang: captions} of ``scene``: every full caption, then (``bare``) the bare ones."""
    return {
        lang: language.captions(scene) + (language.bare_captions(scene) if bare else [])
        for lang, language in HARD_LANGUAGES.items()
    }


def _contrast(rng: np.random.Generator, scene: Scene) -> Scene:
    """A scene with the same words as ``scene`` bound differently: the two objects' places,
    colours, sizes or shapes exchanged (a change that leaves the scene as it was is not drawn)."""
    a, relation, b = scene
    changes = [
        Scene(b, relation, a),  # places swapped
        Scene(a._replace(colour=b.colour), relation, b._replace(colour=a.colour)),
        Scene(a._replace(size=b.size), relation, b._replace(size=a.size)),
        Scene(a._replace(shape=b.shape), relation, b._replace(shape=a.shape)),
    ]
    changes = [c for c in changes if c != scene]  # never empty: the shapes differ
    return changes[int(rng.integers(len(changes)))]


def retrieval_scenes(rng: np.random.Generator, n: int) -> list[Scene]:
    """``n`` scenes with pairwise different descriptions, in contrast pairs (:func:`_contrast`)
    at positions (0, 1), (2, 3), ...; an odd ``n`` ends with an unpaired scene."""
    scenes: list[Scene] = []
    seen: set[Scene] = set()
    while len(scenes) < n:
        scene = random_scene(rng)
        group = [scene] if len(scenes) + 1 == n else [scene, _contrast(rng, scene)]
        if not seen.intersection(group):  # equal scenes <=> equal captions
            seen.update(group)
            scenes.extend(group)
    return scenes


def _metadata(scene: Scene, captions: dict[str, list[str]]) -> dict:
    return {
        "captions": captions,
        "label": scene_label(scene),
        "relation": scene.relation,
        "objects": [t._asdict() for t in (scene.first, scene.second)],
    }


def _sample(
    key: int,
    rng: np.random.Generator,
    scene: Scene,
    image_size: int,
    captions: dict[str, list[str]],
) -> dict:
    full_en = HARD_LANGUAGES["en"].captions(scene)
    return {
        "__key__": f"{key:08d}",
        "jpg": _jpeg(render_scene(rng, scene, image_size)),
        "txt": full_en[int(rng.integers(len(full_en)))],
        "json": json.dumps(_metadata(scene, captions), ensure_ascii=False).encode("utf-8"),
    }


def write_hard_demo_dataset(
    out_dir: str | os.PathLike,
    n_train: int = 12000,
    n_eval_per_class: int = 20,
    n_retrieval: int = 200,
    retrieval_captions: int = 3,
    image_size: int = 64,
    shard_size: int = 1000,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Generate the hard demo level under ``out_dir`` (layout in the module docstring).

    ``n_train`` training images (zero-shot classes in turn, shuffled; sizes and colours random);
    ``n_eval_per_class`` held-out images for each of the 24 zero-shot classes; ``n_retrieval``
    retrieval images with pairwise different descriptions, in contrast pairs, each with
    ``retrieval_captions`` distinct full captions per language (so every caption describes
    exactly one image of the split). ``image_size`` in pixels (at least 24). ``progress(n)`` is
    called with the number of images written since the last call. Returns the summary also
    written to ``dataset.json``; its ``max_caption_bytes`` is the longest caption in UTF-8 bytes
    (the byte-level demo text tower needs ``model.text.max_length`` above it) and
    ``flip_invariant`` is False (a horizontal flip swaps left and right: no flip augmentation).
    """
    if image_size < 24:
        raise ValueError(f"image_size {image_size} is too small for two objects; use 24 or more")
    if retrieval_captions < 1:
        raise ValueError(f"retrieval_captions must be at least 1, got {retrieval_captions}")
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    n_classes = len(HARD_CLASSES)
    longest = [0]

    def generate(scenes, caption_fn, key0) -> Iterator[dict]:
        for i, scene in enumerate(scenes):
            captions = caption_fn(scene)
            longest[0] = max(
                [longest[0]]
                + [len(c.encode("utf-8")) for texts in captions.values() for c in texts]
            )
            yield _sample(key0 + i, rng, scene, image_size, captions)
            if progress is not None:
                progress(1)

    def retrieval_subset(scene: Scene) -> dict[str, list[str]]:
        full = scene_captions(scene, bare=False)
        picked = {}
        for lang, texts in full.items():
            if retrieval_captions > len(texts):
                raise ValueError(
                    f"retrieval_captions={retrieval_captions}, but {lang} has only "
                    f"{len(texts)} captions per image"
                )
            picked[lang] = [
                texts[j] for j in sorted(rng.choice(len(texts), retrieval_captions, replace=False))
            ]
        return picked

    train_labels = rng.permutation(np.arange(n_train) % n_classes)
    train = (random_scene(rng, int(label)) for label in train_labels)
    evaluation = (
        random_scene(rng, label) for label in range(n_classes) for _ in range(n_eval_per_class)
    )
    counts = {
        "train": _write_split(out / "train", generate(train, scene_captions, 0), shard_size),
        "eval": _write_split(
            out / "eval", generate(evaluation, scene_captions, 10_000_000), shard_size
        ),
        "retrieval": _write_split(
            out / "retrieval",
            generate(retrieval_scenes(rng, n_retrieval), retrieval_subset, 20_000_000),
            shard_size,
        ),
    }
    names_dir = out / "classnames"
    names_dir.mkdir(parents=True, exist_ok=True)
    for lang, language in HARD_LANGUAGES.items():
        (names_dir / f"{lang}_classnames.json").write_text(
            json.dumps({DATASET_NAME: hard_class_names(lang)}, ensure_ascii=False, indent=1),
            "utf-8",
        )
        (names_dir / f"{lang}_zeroshot_classification_templates.json").write_text(
            json.dumps(
                {DATASET_NAME: list(language.prompt_templates)}, ensure_ascii=False, indent=1
            ),
            "utf-8",
        )
    summary = {
        "dataset": DATASET_NAME,
        "level": "hard",
        "languages": list(HARD_LANGUAGES),
        "classes": n_classes,
        "relations": list(RELATIONS),
        "shapes": list(SHAPES),
        "image_size": image_size,
        "seed": seed,
        "counts": counts,
        "max_caption_bytes": longest[0],
        "flip_invariant": False,
    }
    (out / "dataset.json").write_text(json.dumps(summary, indent=1), "utf-8")
    return summary
