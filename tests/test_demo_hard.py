"""The hard demo level: layout, captions unique to an image, grammar, rendering, determinism."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mclip.data.demo import COLOUR_RGB
from mclip.data.demo_hard import (
    DATASET_NAME,
    place_objects,
    random_scene,
    render_scene,
    retrieval_scenes,
    write_hard_demo_dataset,
)
from mclip.data.demo_hard_language import HARD_LANGUAGES, hard_class_names
from mclip.data.demo_hard_scene import HARD_CLASSES, RELATIONS, SIZES, Scene, Thing, scene_label
from mclip.data.demo_language import COLOURS, SHAPES
from mclip.data.shards import SkipCounter, expand_shards, iter_raw_samples
from mclip.eval.datasets.caption_shards import CaptionShardSet
from mclip.eval.datasets.clip_benchmark import ClipBenchmarkTexts
from mclip.eval.suite import load_suite

ROOT = Path(__file__).resolve().parents[1]
LANGS = ["en", "de", "fr", "es", "it", "pt", "ru", "zh", "ja", "ar", "hi", "sw"]


def _small(out: Path, seed: int = 1) -> dict:
    return write_hard_demo_dataset(
        out, n_train=60, n_eval_per_class=2, n_retrieval=24, image_size=48, shard_size=25, seed=seed
    )


def _samples(path: Path) -> list[dict]:
    return list(iter_raw_samples(expand_shards(str(path)), SkipCounter()))


@pytest.fixture(scope="module")
def hard_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo_hard")
    _small(out)
    return out


def test_layout_and_counts(hard_data):
    summary = json.loads((hard_data / "dataset.json").read_text())
    assert summary["level"] == "hard" and summary["dataset"] == DATASET_NAME
    assert summary["flip_invariant"] is False and summary["max_caption_bytes"] > 150
    assert summary["counts"] == {"train": 60, "eval": 48, "retrieval": 24}
    assert summary["languages"] == LANGS and summary["classes"] == 24 == len(HARD_CLASSES)
    assert len(expand_shards(str(hard_data / "train"))) == 3
    train = _samples(hard_data / "train")
    per_class = Counter(json.loads(s["json"])["label"] for s in train)
    assert sorted(per_class.values()) == [2] * 12 + [3] * 12  # 60 = 2.5 x 24, classes in turn
    for sample in train[:5]:
        meta = json.loads(sample["json"])
        assert set(meta["captions"]) == set(LANGS)
        first, second = (Thing(**o) for o in meta["objects"])
        scene = Scene(first, meta["relation"], second)
        assert meta["label"] == scene_label(scene) and first.shape != second.shape
        full = HARD_LANGUAGES["de"].captions(scene)
        assert meta["captions"]["de"] == full + HARD_LANGUAGES["de"].bare_captions(scene)
        assert sample["txt"].decode() in HARD_LANGUAGES["en"].captions(scene)
    evaluation = _samples(hard_data / "eval")
    assert Counter(json.loads(s["json"])["label"] for s in evaluation) == {k: 2 for k in range(24)}

    texts = ClipBenchmarkTexts(hard_data / "classnames")
    for lang in LANGS:
        loaded = texts.load(lang, DATASET_NAME)
        assert loaded.names == hard_class_names(lang)
        assert all("{c}" in t for t in loaded.templates)


def test_retrieval_captions_describe_exactly_one_image(hard_data):
    samples = _samples(hard_data / "retrieval")
    assert len(samples) == 24
    metas = [json.loads(s["json"]) for s in samples]
    shards = CaptionShardSet(str(hard_data / "retrieval"))
    for lang in LANGS:
        assert all(len(m["captions"][lang]) == 3 == len(set(m["captions"][lang])) for m in metas)
        captions = shards.captions(lang)
        assert len(captions.texts) == 72 == len(set(captions.texts)), lang
        owners = Counter(captions.image_keys)
        assert len(owners) == 24 and set(owners.values()) == {3}
    # every caption is a true full description of its own image only
    for meta in metas:
        scene = Scene(Thing(**meta["objects"][0]), meta["relation"], Thing(**meta["objects"][1]))
        for lang in LANGS:
            assert set(meta["captions"][lang]) <= set(HARD_LANGUAGES[lang].captions(scene))


def test_captions_are_unique_to_a_scene_in_every_language():
    things = [Thing(s, c, h) for s in SIZES for c in COLOURS for h in SHAPES]
    scenes = [
        Scene(a, r, b) for a in things for b in things for r in RELATIONS if a.shape != b.shape
    ]
    for lang, language in HARD_LANGUAGES.items():
        owner: dict[str, int] = {}
        for i, scene in enumerate(scenes):
            for caption in language.captions(scene):
                assert owner.setdefault(caption, i) == i, (lang, caption)
        assert len(owner) >= 8 * len(scenes)


def test_retrieval_scenes_come_in_contrast_pairs():
    scenes = retrieval_scenes(np.random.default_rng(0), 200)
    assert len(set(scenes)) == 200
    for a, b in zip(scenes[::2], scenes[1::2]):
        words = lambda s: Counter([s.relation, *s.first, *s.second])  # noqa: E731
        assert a != b and words(a) == words(b)


def test_class_names_need_the_relation_read():
    for lang in LANGS:
        names = hard_class_names(lang)
        assert len(set(names)) == 24, lang
        for (a, relation, b), name in zip(HARD_CLASSES, names):
            swapped = names[HARD_CLASSES.index((b, relation, a))]
            assert swapped != name, (lang, name)
    assert hard_class_names("en")[0] == "a circle to the left of a square"
    assert hard_class_names("de")[0] == "ein Kreis links von einem Quadrat"
    assert hard_class_names("ru")[12] == "круг над квадратом"


SMALL_RED_CIRCLE = Thing("small", "red", "circle")
LARGE_BLUE_SQUARE = Thing("large", "blue", "square")
LARGE_YELLOW_STAR = Thing("large", "yellow", "star")
SMALL_GREEN_TRIANGLE = Thing("small", "green", "triangle")
LEFT = Scene(SMALL_RED_CIRCLE, "left", LARGE_BLUE_SQUARE)
ABOVE = Scene(LARGE_YELLOW_STAR, "above", SMALL_GREEN_TRIANGLE)


def _say(lang: str, scene: Scene, first: bool = True, template: int = 0) -> str:
    x, d, y = scene.mentions()[0 if first else 1]
    language = HARD_LANGUAGES[lang]
    return language.describe(x, d, y, language.caption_templates[template])


@pytest.mark.parametrize(
    "lang, scene, first, template, expected",
    [
        ("en", LEFT, True, 0, "a small red circle left of a large blue square"),
        ("en", LEFT, False, 1, "a large blue square to the right of a small red circle"),
        ("en", LEFT, True, 3, "There is a small red circle to the left of a large blue square."),
        ("en", ABOVE, False, 2, "A small green triangle is below a large yellow star."),
        # German: nominative / accusative / dative after "links von", "über", "unter"
        ("de", LEFT, True, 0, "ein kleiner roter Kreis links von einem großen blauen Quadrat"),
        ("de", LEFT, False, 0, "ein großes blaues Quadrat rechts von einem kleinen roten Kreis"),
        ("de", ABOVE, True, 3, "Über einem kleinen grünen Dreieck ist ein großer gelber Stern."),
        ("de", ABOVE, False, 0, "ein kleines grünes Dreieck unter einem großen gelben Stern"),
        (
            "de",
            ABOVE,
            True,
            4,
            "Das Bild zeigt einen großen gelben Stern über einem kleinen grünen Dreieck.",
        ),
        # French: agreement, adjective positions, elision of "de"
        ("fr", LEFT, True, 0, "un petit cercle rouge à gauche d'un grand carré bleu"),
        (
            "fr",
            ABOVE,
            False,
            1,
            "Il y a un petit triangle vert en dessous d'une grande étoile jaune.",
        ),
        (
            "fr",
            Scene(SMALL_GREEN_TRIANGLE, "above", LARGE_YELLOW_STAR),
            True,
            0,
            "un petit triangle vert au-dessus d'une grande étoile jaune",
        ),
        (
            "es",
            ABOVE,
            True,
            3,
            "Una gran estrella amarilla está encima de un pequeño triángulo verde.",
        ),
        ("it", ABOVE, False, 0, "un piccolo triangolo verde sotto una grande stella gialla"),
        ("pt", LEFT, True, 0, "um pequeno círculo vermelho à esquerda de um grande quadrado azul"),
        # Russian: genitive after "слева от", instrumental after "над" / "под", accusative
        ("ru", LEFT, True, 0, "маленький красный круг слева от большого синего квадрата"),
        (
            "ru",
            LEFT,
            False,
            3,
            "Справа от маленького красного круга находится большой синий квадрат.",
        ),
        ("ru", ABOVE, False, 0, "маленький зелёный треугольник под большой жёлтой звездой"),
        (
            "ru",
            ABOVE,
            True,
            4,
            "Мы видим большую жёлтую звезду над маленьким зелёным треугольником.",
        ),
        # Chinese and Japanese word order
        ("zh", LEFT, True, 0, "红色的小圆形在蓝色的大正方形的左边"),
        ("zh", LEFT, True, 2, "蓝色的大正方形的左边有一个红色的小圆形。"),
        ("ja", LEFT, True, 0, "大きな青い正方形の左にある小さな赤い円"),
        ("ja", ABOVE, True, 2, "大きな黄色い星が小さな緑の三角形の上にあります。"),
        # Arabic: adjectives and verb agree with the noun's gender
        ("ar", LEFT, True, 0, "دائرة حمراء صغيرة على يسار مربع أزرق كبير"),
        ("ar", LEFT, True, 2, "توجد دائرة حمراء صغيرة على يسار مربع أزرق كبير."),
        ("ar", LEFT, False, 2, "يوجد مربع أزرق كبير على يمين دائرة حمراء صغيرة."),
        ("ar", ABOVE, True, 0, "نجمة صفراء كبيرة فوق مثلث أخضر صغير"),
        # Hindi: the landmark before a postposition is oblique
        ("hi", LEFT, True, 0, "बड़े नीले वर्ग के बाईं ओर एक छोटा लाल वृत्त"),
        ("hi", ABOVE, False, 2, "एक छोटा हरा त्रिभुज बड़े पीले तारे के नीचे है।"),
        # Swahili: size adjective and locative copula agree with the noun class (3 / 9)
        (
            "sw",
            LEFT,
            True,
            1,
            "Duara ndogo nyekundu iko upande wa kushoto wa mraba mkubwa wa buluu.",
        ),
        (
            "sw",
            LEFT,
            False,
            1,
            "Mraba mkubwa wa buluu uko upande wa kulia wa duara ndogo nyekundu.",
        ),
        (
            "sw",
            Scene(Thing("small", "red", "square"), "above", LARGE_YELLOW_STAR),
            True,
            0,
            "mraba mdogo mwekundu juu ya nyota kubwa ya manjano",
        ),
    ],
)
def test_hard_grammar(lang, scene, first, template, expected):
    assert _say(lang, scene, first, template) == expected


def test_bare_captions_are_the_zero_shot_prompts():
    language = HARD_LANGUAGES["hi"]
    assert language.bare_captions(LEFT) == [
        "वर्ग के बाईं ओर एक वृत्त",
        "तस्वीर में वर्ग के बाईं ओर एक वृत्त है।",
        "वृत्त के दाईं ओर एक वर्ग",
        "तस्वीर में वृत्त के दाईं ओर एक वर्ग है।",
    ]
    star, circle = Thing("large", "red", "star"), Thing("small", "red", "circle")
    assert language.bare_captions(Scene(star, "above", circle))[:3] == [
        "वृत्त के ऊपर एक तारा",
        "तस्वीर में वृत्त के ऊपर एक तारा है।",
        "तारे के नीचे एक वृत्त",
    ]
    assert (
        language.captions(Scene(circle, "left", star))[0] == "बड़े लाल तारे के बाईं ओर एक छोटा लाल वृत्त"
    )


def _centroid(image: np.ndarray, colour: str) -> np.ndarray:
    distance = np.linalg.norm(image.astype(float) - np.array(COLOUR_RGB[colour]), axis=-1)
    ys, xs = np.nonzero(distance < 45)
    assert len(xs) >= 8, colour
    return np.array([xs.mean(), ys.mean()])


@pytest.mark.parametrize("relation", RELATIONS)
def test_rendering_puts_the_first_object_where_the_relation_says(relation):
    rng = np.random.default_rng(5)
    for trial in range(6):
        first = Thing(SIZES[trial % 2], "red", SHAPES[trial % 4])
        second = Thing(SIZES[trial // 3], "blue", SHAPES[(trial + 1 + trial // 4) % 4])
        image = np.asarray(render_scene(rng, Scene(first, relation, second), 64))
        (x1, y1), (x2, y2) = _centroid(image, "red"), _centroid(image, "blue")
        along, across = (x2 - x1, abs(y2 - y1)) if relation == "left" else (y2 - y1, abs(x2 - x1))
        assert along > 10 and across < 0.6 * along, (trial, along, across)


def test_placement_separates_objects_clearly():
    rng = np.random.default_rng(0)
    for size in (32, 64):
        for _ in range(200):
            scene = random_scene(rng)
            (x1, y1, r1), (x2, y2, r2) = place_objects(rng, scene, size)
            along, across = (x2 - x1, y2 - y1) if scene.relation == "left" else (y2 - y1, x2 - x1)
            assert along >= 1.25 * (r1 + r2) + 0.05 * size - 1e-9
            assert abs(across) <= 0.4 * along
            assert all(
                1.25 * r < c < size - 1.25 * r for c, r in ((x1, r1), (y1, r1), (x2, r2), (y2, r2))
            )
            ratio = (r1 / r2) if scene.first.size != scene.second.size else 1.0
            assert ratio == 1.0 or (ratio > 1.4) == (scene.first.size == "large")


def test_generation_is_deterministic(hard_data, tmp_path):
    _small(tmp_path / "again")
    for split in ("train", "eval", "retrieval"):
        a, b = _samples(hard_data / split), _samples(tmp_path / "again" / split)
        assert [(s["__key__"], s["jpg"], s["json"], s["txt"]) for s in a] == [
            (s["__key__"], s["jpg"], s["json"], s["txt"]) for s in b
        ]
    _small(tmp_path / "other", seed=2)
    other = _samples(tmp_path / "other" / "train")
    assert other[0]["jpg"] != _samples(hard_data / "train")[0]["jpg"]


def test_suite_reads_the_written_names(hard_data):
    suite = load_suite(ROOT / "eval_suites" / "demo_hard.yaml", data_root=hard_data)
    kinds = {task.kind: task for task in suite.tasks}
    assert set(kinds) == {"zeroshot_classification", "retrieval"}
    assert kinds["zeroshot_classification"].dataset == DATASET_NAME
    assert all(task.languages == LANGS for task in suite.tasks)


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="image_size 16"):
        write_hard_demo_dataset(tmp_path, n_train=1, image_size=16)
    with pytest.raises(ValueError, match="retrieval_captions=20"):
        write_hard_demo_dataset(
            tmp_path,
            n_train=1,
            n_eval_per_class=0,
            n_retrieval=2,
            retrieval_captions=20,
            image_size=32,
        )
