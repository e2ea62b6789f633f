"""Long tail by concept frequency: counting class names in training captions (mclip data
concepts) and zero-shot recall by training frequency (mclip eval --concept-counts)."""

import json
import os

import numpy as np
import pytest
import torch

from mclip.cli import main
from mclip.data.concepts import NameMatcher, count_concepts
from mclip.data.demo import write_demo_dataset
from mclip.data.demo_language import CLASSES, LANGUAGES, class_names
from mclip.data.shards import expand_shards
from mclip.eval.concept_frequency import frequency_bin, frequency_recall
from mclip.eval.samples import SampleRanks
from mclip.eval.zeroshot import per_class_recall


def test_word_boundary_case_folding_and_substrings():
    matcher = NameMatcher("en", ["cat", "wild cat", "T-shirt", None, "cat", "Straße"])
    assert matcher.classes_in("A category of things") == set()
    assert matcher.classes_in("My CAT!") == {0, 4}  # two classes with one name both count
    assert matcher.classes_in("a wild cat, again a cat") == {0, 1, 4}
    assert matcher.classes_in("a t shirt") == {2}  # punctuation inside a name is not required
    assert matcher.classes_in("die STRASSE") == {5}  # case folding: ß ~ ss
    # combining marks stay inside words: a Devanagari name does not match inside another word
    # (with \w alone 'बिल्ली' splits into 'ब', 'ल', 'ल' and 'बिल' would match 'बिल्ली')
    hindi = NameMatcher("hi", ["बिल्ली", "बिल", "बच्चा"])
    assert hindi.classes_in("एक बिल्ली का बच्चा") == {0, 2}
    assert hindi.classes_in("बिल भरो") == {1}
    decomposed = NameMatcher("fr", ["café"])  # NFC on both sides: e + combining acute = é
    assert decomposed.classes_in("un cafe\u0301 noir") == {0}
    chinese = NameMatcher("zh", ["红色圆形", "圆"])
    assert chinese.classes_in("一个红色圆形。") == {0, 1}  # unspaced: substrings
    assert chinese.classes_in("红色的圆形") == {1}
    assert frequency_bin(0) == "0" and frequency_bin(9) == "1-9" and frequency_bin(10) == "10-99"
    assert frequency_bin(100) == "100+"


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("concepts")
    write_demo_dataset(
        root / "demo", n_train=48, n_eval_per_class=2, image_size=32, shard_size=20, topic_images=1
    )
    return root / "demo"


def _names(languages=("en", "zh")):
    return {lang: class_names(lang) for lang in languages}


def test_counts_on_the_demo_are_the_known_ones(small_demo, tmp_path):
    shards = expand_shards(str(small_demo / "train"))
    assert len(shards) == 3
    document = count_concepts(shards, _names(), tmp_path / "counts.json", "demo")
    en = document["languages"]["en"]
    # 48 images, 2 per class; every English phrasing of a class holds its name ("a red circle")
    assert en["captions"] == 48 * len(LANGUAGES["en"].caption_templates)
    assert en["counts"] == [2 * len(LANGUAGES["en"].caption_templates)] * len(CLASSES)
    # Chinese by substring, against the phrasings themselves
    zh = document["languages"]["zh"]
    names = class_names("zh")
    expected = [
        2 * sum(names[c] in caption for caption in LANGUAGES["zh"].captions(*CLASSES[c]))
        for c in range(len(CLASSES))
    ]
    assert zh["counts"] == expected and 0 < sum(expected) < zh["captions"]
    assert json.loads((tmp_path / "counts.json").read_text()) == document


def test_counting_resumes_and_recounts_a_rewritten_shard(small_demo, tmp_path):
    shards = expand_shards(str(small_demo / "train"))
    full = count_concepts(shards, _names(), tmp_path / "full.json", "demo")
    seen = []
    count_concepts(shards[:2], _names(), tmp_path / "part.json", "demo")
    resumed = count_concepts(
        shards,
        _names(),
        tmp_path / "part.json",
        "demo",
        progress=lambda shard, new: seen.append(new),
    )
    assert seen == [False, False, True]
    assert resumed["languages"] == full["languages"]
    os.utime(shards[0], ns=(1, 1))  # a rewritten shard (new mtime) is counted again
    seen.clear()
    count_concepts(
        shards,
        _names(),
        tmp_path / "part.json",
        "demo",
        progress=lambda shard, new: seen.append(new),
    )
    assert seen == [True, False, False]
    seen.clear()  # other class names: nothing of the old file is reused
    count_concepts(
        shards,
        _names(("en",)) | {"zh": class_names("ja")},
        tmp_path / "part.json",
        "demo",
        progress=lambda shard, new: seen.append(new),
    )
    assert seen == [True, True, True]


def test_frequency_recall_by_hand():
    # classes 0 (0 captions), 1 (5), 2 (50), 3 (500); images: 0, 0, 1, 2, 2, 3
    labels = torch.tensor([0, 0, 1, 2, 2, 3])
    ranks = torch.tensor([0, 1, 0, 0, 0, 3])
    metrics, views = frequency_recall(ranks, labels, [0, 5, 50, 500], [f"i{n}" for n in range(6)])
    assert metrics == {
        "n_classes_freq_0": 1,
        "recall_freq_0": 0.5,
        "n_classes_freq_1-9": 1,
        "recall_freq_1-9": 1.0,
        "n_classes_freq_10-99": 1,
        "recall_freq_10-99": 1.0,
        "n_classes_freq_100+": 1,
        "recall_freq_100+": 0.0,
    }
    assert views["images_freq_0"].ranks.tolist() == [0, 1]
    assert views["images_freq_10-99"].ids == SampleRanks.build(["i3", "i4"], [0, 0]).ids
    none, _ = frequency_recall(ranks, labels, [0, 0, 0, 0], [f"i{n}" for n in range(6)])
    assert none["recall_freq_100+"] is None and none["n_classes_freq_100+"] == 0


def test_cli_counts_then_eval_reports_recall_by_frequency(small_demo, tmp_path, capsys):
    from conftest import tiny_model_config
    from mclip.models.dual import DualEncoder

    counts = tmp_path / "counts.json"
    assert (
        main(
            [
                "data",
                "concepts",
                str(small_demo / "train"),
                "--class-texts",
                str(small_demo / "classnames"),
                "--dataset",
                "demo_shapes",
                "--languages",
                "en,de",
                "--out",
                str(counts),
            ]
        )
        == 0
    )
    assert "classes never mentioned: en 0, de 0" in capsys.readouterr().out
    document = json.loads(counts.read_text())
    # make the bins non-trivial: classes 0-5 never named, 6-11 a few times, 12-17 often
    for lang in ("en", "de"):
        document["languages"][lang]["counts"] = [0] * 6 + [3] * 6 + [40] * 6 + [400] * 6
    counts.write_text(json.dumps(document))
    cfg = tiny_model_config()
    torch.manual_seed(0)
    DualEncoder(cfg.model).save(tmp_path / "model", cfg)
    out = tmp_path / "eval"
    assert (
        main(
            [
                "eval",
                "--model",
                str(tmp_path / "model"),
                "--task",
                "zeroshot_classification",
                "--images",
                str(small_demo / "eval"),
                "--class-texts",
                str(small_demo / "classnames"),
                "--dataset",
                "demo_shapes",
                "--languages",
                "en,de,fr",
                "--concept-counts",
                str(counts),
                "--bootstrap",
                "50",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    languages = json.loads((out / "results.json").read_text())["tasks"]["zeroshot_classification"][
        "languages"
    ]
    assert "recall_freq_0" not in languages["fr"]  # no counts for French: no bins
    en = languages["en"]
    view = SampleRanks.from_json(en["samples"]["images"])
    labels = torch.as_tensor(view.labels)
    hits = torch.as_tensor(view.ranks.astype(np.int64)) == 0
    for name, classes in (
        ("0", range(0, 6)),
        ("1-9", range(6, 12)),
        ("10-99", range(12, 18)),
        ("100+", range(18, 24)),
    ):
        members = torch.isin(labels, torch.tensor(list(classes)))
        assert en[f"n_classes_freq_{name}"] == 6
        assert en[f"recall_freq_{name}"] == pytest.approx(
            per_class_recall(hits[members], labels[members], 24)
        )
        low, high = en["ci"][f"recall_freq_{name}"]
        assert low <= en[f"recall_freq_{name}"] <= high
    assert "Recall@1 by how many training captions" in (out / "results.md").read_text()
    assert (out / "results_concepts.png").stat().st_size > 5000
    document["languages"]["en"]["names"][0] = "something else"
    counts.write_text(json.dumps(document))
    capsys.readouterr()
    assert (
        main(
            [
                "eval",
                "--model",
                str(tmp_path / "model"),
                "--task",
                "zeroshot_classification",
                "--images",
                str(small_demo / "eval"),
                "--class-texts",
                str(small_demo / "classnames"),
                "--dataset",
                "demo_shapes",
                "--languages",
                "en",
                "--concept-counts",
                str(counts),
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert "were made for other class names" in capsys.readouterr().err


def test_bins_follow_the_classes_a_language_keeps(tmp_path):
    """Babel-ImageNet style: German has no name for class 2, so class 2 and its images leave the
    German evaluation; the counts' bins must follow the renumbered classes."""
    from conftest import random_image_folder, tiny_model_config
    from mclip.eval.runner import run_tasks
    from mclip.eval.suite import make_task
    from mclip.models.adapters.native import NativeAdapter
    from mclip.models.dual import DualEncoder

    random_image_folder(tmp_path / "images", per_class=3)
    labels = {"EN": [[0, 1, 2], ["cat", "dog", "car"]], "DE": [[0, 1], ["Katze", "Hund"]]}
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    # the reader gives 1000 ImageNet class slots, None where German has no name
    counts = {
        "languages": {
            "de": {
                "names": ["Katze", "Hund"] + [None] * 998,
                "counts": [0, 500, 5] + [0] * 997,
                "captions": 10,
            }
        }
    }
    (tmp_path / "counts.json").write_text(json.dumps(counts))
    task = make_task(
        {
            "name": "babel",
            "kind": "zeroshot_classification",
            "languages": ["de"],
            "images": str(tmp_path / "images"),
            "class_texts": str(tmp_path / "labels.json"),
            "concept_counts": str(tmp_path / "counts.json"),
        },
        tmp_path,
        "t",
    )
    cfg = tiny_model_config()
    torch.manual_seed(0)
    de = run_tasks(NativeAdapter(DualEncoder(cfg.model), cfg, name="t"), [task], bootstrap=0)[
        "babel"
    ]["languages"]["de"]
    assert de["n_classes"] == 2 and de["n_images"] == 6
    assert (de["n_classes_freq_0"], de["n_classes_freq_1-9"], de["n_classes_freq_100+"]) == (
        1,
        0,
        1,
    )
    view = SampleRanks.from_json(de["samples"]["images"])
    hits = view.ranks == 0
    assert de["recall_freq_0"] == pytest.approx(hits[view.labels == 0].mean())
    assert de["recall_freq_100+"] == pytest.approx(hits[view.labels == 1].mean())
    assert de["recall_freq_1-9"] is None
    (tmp_path / "bad.json").write_text(json.dumps({"languages": {"de": {"names": ["x"]}}}))
    task.concept_counts = str(tmp_path / "bad.json")
    from mclip.config import ConfigError

    with pytest.raises(ConfigError, match="lack 'names' and 'counts' lists.*mclip data concepts"):
        run_tasks(NativeAdapter(DualEncoder(cfg.model), cfg, name="t"), [task], bootstrap=0)


def test_captions_in_languages_without_class_names_are_counted(small_demo, tmp_path):
    shards = expand_shards(str(small_demo / "train"))
    document = count_concepts(shards, _names(("en",)), tmp_path / "c.json", "demo")
    assert document["other_languages"]["de"] == 48 * len(LANGUAGES["de"].caption_templates)
    assert set(document["other_languages"]) == set(LANGUAGES) - {"en"}
