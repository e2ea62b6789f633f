"""The evaluation runner on generated data: Babel-ImageNet subsets, skips, embedding once."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from mclip.config import ConfigError
from mclip.eval.report import build_report, markdown_table
from mclip.eval.results import resource_group
from mclip.eval.runner import ImageEmbeddings, run_tasks
from mclip.eval.suite import make_task


@pytest.fixture
def image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for c in range(6):
        folder = tmp_path / "images" / f"n{c:04d}"
        folder.mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)).save(
                folder / f"{i}.png"
            )
    (tmp_path / "images" / "n0002" / "broken.png").write_bytes(b"not a png")
    return tmp_path / "images"


def test_babel_languages_use_their_own_classes_and_bad_images_are_counted(
    adapter, image_folder, tmp_path
):
    labels = {
        "EN": [[0, 1, 2, 3, 4, 5], ["a", "b", "c", "d", "e", "f"]],
        "SW": [[1, 3, 4], ["x", "y", "z"]],
    }
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    task = make_task(
        {
            "name": "babel",
            "kind": "zeroshot_classification",
            "languages": "all",
            "images": str(image_folder),
            "class_texts": str(tmp_path / "labels.json"),
            "resource_groups": True,
        },
        tmp_path,
        "test",
    )
    result = run_tasks(adapter, [task])["babel"]
    assert result["skipped"] == {"unreadable_image": 1}
    assert (
        result["languages"]["en"]["n_classes"] == 6 and result["languages"]["en"]["n_images"] == 18
    )
    sw = result["languages"]["sw"]
    assert sw["n_classes"] == 3 and sw["n_images"] == 9 and sw["acc@5"] is None
    assert sw["resource_group"] == "<=100"
    table = markdown_table(build_report("tiny", "babel", {"babel": result}))
    assert "| sw (<=100) |" in table and "| **mean <=100** |" in table and "–" in table
    wrong = make_task(
        {
            "name": "babel",
            "kind": "zeroshot_classification",
            "languages": ["de"],
            "images": str(image_folder),
            "class_texts": str(tmp_path / "labels.json"),
        },
        tmp_path,
        "test",
    )
    with pytest.raises(ConfigError, match="de"):
        run_tasks(adapter, [wrong])


def test_each_image_set_is_embedded_once(adapter, image_folder, monkeypatch):
    from mclip.eval.datasets import open_image_set

    calls = []
    original = adapter.encode_image
    monkeypatch.setattr(adapter, "encode_image", lambda x: calls.append(len(x)) or original(x))
    cache = ImageEmbeddings(adapter, torch.device("cpu"), batch_size=8)
    first = cache.get(open_image_set(image_folder))
    again = cache.get(open_image_set(image_folder))
    assert sum(calls) == 18 and first[0] is again[0]
    limited = ImageEmbeddings(adapter, torch.device("cpu"), limit=5).get(
        open_image_set(image_folder)
    )
    assert limited[0].shape[0] == 5


def test_resource_groups():
    assert [resource_group(n) for n in (18, 100, 101, 333, 334, 666, 667, 1000)] == [
        "<=100",
        "<=100",
        "101-333",
        "101-333",
        "334-666",
        "334-666",
        ">666",
        ">666",
    ]


def test_cli_one_task_without_a_suite(adapter, image_folder, tmp_path, capsys):
    """`mclip eval --task ...` with CLIP_benchmark-style flags, on a saved mclip model."""
    from mclip.cli import main

    adapter.model.save(tmp_path / "model", adapter.config)
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "en_classnames.json").write_text(json.dumps({"toy": list("abcdef")}))
    (texts / "jp_classnames.json").write_text(json.dumps({"toy": list("uvwxyz")}))
    for code in ("en", "jp"):
        (texts / f"{code}_zeroshot_classification_templates.json").write_text(
            json.dumps({"toy": ["{c}"]})
        )
    code = main(
        [
            "eval",
            "--model",
            str(tmp_path / "model"),
            "--task",
            "zeroshot_classification",
            "--images",
            str(image_folder),
            "--class-texts",
            str(texts),
            "--dataset",
            "toy",
            "--languages",
            "en,ja",
            "--out",
            str(tmp_path / "out"),
            "--quiet",
        ]
    )
    assert code == 0
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(report["tasks"]["zeroshot_classification"]["languages"]) == {"en", "ja"}
    assert report["model"].endswith("model") and "| ja |" in capsys.readouterr().out
    assert main(["eval", "--model", "nothing:here", "--task", "retrieval", "--captions", "x"]) == 2
