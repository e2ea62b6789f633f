"""The on-disk embedding cache of `mclip eval --cache DIR`: hits, misses, invalidation."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_model_config
from mclip.eval.runner import run_tasks
from mclip.eval.suite import make_task
from mclip.models.adapters.native import NativeAdapter
from mclip.models.dual import DualEncoder


class Counting(NativeAdapter):
    """The tiny native adapter, counting what goes through each tower."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.images, self.texts = 0, []

    def encode_image(self, images):
        self.images += len(images)
        return super().encode_image(images)

    def encode_text(self, texts):
        self.texts.extend(texts)
        return super().encode_text(texts)


def _model():
    cfg = tiny_model_config("resnet10t")
    torch.manual_seed(0)
    return Counting(DualEncoder(cfg.model), cfg, name="tiny")


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(0)
    for c in range(4):
        folder = tmp_path / "images" / f"n{c:04d}"
        folder.mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    labels = {"EN": [[0, 1, 2, 3], ["cat", "dog", "car", "tree"]],
              "DE": [[0, 1, 2, 3], ["Katze", "Hund", "Auto", "Baum"]],
              "SW": [[1, 3], ["mbwa", "mti"]]}
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    return tmp_path


def _task(data, languages):
    return make_task({"name": "babel", "kind": "zeroshot_classification", "languages": languages,
                      "images": str(data / "images"), "class_texts": str(data / "labels.json")},
                     data, "test")


def _numbers(result):
    return {lang: {k: v for k, v in m.items() if k != "samples"}
            for lang, m in result["babel"]["languages"].items()}


def test_second_run_with_more_languages_encodes_only_new_texts(data, tmp_path):
    cache = tmp_path / "cache"
    model = _model()
    first = run_tasks(model, [_task(data, ["en", "de"])], cache_dir=str(cache), bootstrap=100)
    assert model.images == 12 and sorted(model.texts) == sorted(
        ["cat", "dog", "car", "tree", "Katze", "Hund", "Auto", "Baum"])
    model.images, model.texts = 0, []
    second = run_tasks(model, [_task(data, ["en", "de", "sw"])], cache_dir=str(cache),
                       bootstrap=100)
    assert model.images == 0 and sorted(model.texts) == ["mbwa", "mti"]
    uncached = run_tasks(_model(), [_task(data, ["en", "de", "sw"])], bootstrap=100)
    assert _numbers(second) == _numbers(uncached)
    assert {k: _numbers(second)[k] for k in ("en", "de")} == _numbers(first)
    assert (list((cache).iterdir())[0] / "model.json").exists()


def test_changed_weights_or_image_files_invalidate_their_entries(data, tmp_path):
    cache = tmp_path / "cache"
    run_tasks(_model(), [_task(data, ["en"])], cache_dir=str(cache), bootstrap=0)
    changed = _model()
    with torch.no_grad():
        next(changed.parameters()).add_(0.01)
    run_tasks(changed, [_task(data, ["en"])], cache_dir=str(cache), bootstrap=0)
    assert changed.images == 12 and len(changed.texts) == 4        # another model: all misses
    assert len(list(cache.iterdir())) == 2

    image = data / "images" / "n0001" / "0.png"
    Image.fromarray(np.zeros((36, 36, 3), dtype=np.uint8)).save(image)
    os.utime(image, (1, 1))
    again = _model()
    result = run_tasks(again, [_task(data, ["en"])], cache_dir=str(cache), bootstrap=0)
    assert again.images == 12 and again.texts == []                # images re-embedded, texts hit
    fresh = run_tasks(_model(), [_task(data, ["en"])], bootstrap=0)
    assert _numbers(result) == _numbers(fresh)


def test_unusable_cache_directory_is_a_clear_error(data, tmp_path):
    from mclip.config import ConfigError
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="--cache"):
        run_tasks(_model(), [_task(data, ["en"])], cache_dir=str(blocker), bootstrap=0)
