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
            Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)).save(
                folder / f"{i}.png"
            )
    labels = {
        "EN": [[0, 1, 2, 3], ["cat", "dog", "car", "tree"]],
        "DE": [[0, 1, 2, 3], ["Katze", "Hund", "Auto", "Baum"]],
        "SW": [[1, 3], ["mbwa", "mti"]],
    }
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    return tmp_path


def _task(data, languages):
    return make_task(
        {
            "name": "babel",
            "kind": "zeroshot_classification",
            "languages": languages,
            "images": str(data / "images"),
            "class_texts": str(data / "labels.json"),
        },
        data,
        "test",
    )


def _numbers(result):
    return {
        lang: {k: v for k, v in m.items() if k != "samples"}
        for lang, m in result["babel"]["languages"].items()
    }


def test_second_run_with_more_languages_encodes_only_new_texts(data, tmp_path):
    cache = tmp_path / "cache"
    model = _model()
    first = run_tasks(model, [_task(data, ["en", "de"])], cache_dir=str(cache), bootstrap=100)
    assert model.images == 12 and sorted(model.texts) == sorted(
        ["cat", "dog", "car", "tree", "Katze", "Hund", "Auto", "Baum"]
    )
    model.images, model.texts = 0, []
    second = run_tasks(
        model, [_task(data, ["en", "de", "sw"])], cache_dir=str(cache), bootstrap=100
    )
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
    assert changed.images == 12 and len(changed.texts) == 4  # another model: all misses
    assert len(list(cache.iterdir())) == 2

    image = data / "images" / "n0001" / "0.png"
    Image.fromarray(np.zeros((36, 36, 3), dtype=np.uint8)).save(image)
    os.utime(image, (1, 1))
    again = _model()
    result = run_tasks(again, [_task(data, ["en"])], cache_dir=str(cache), bootstrap=0)
    assert again.images == 12 and again.texts == []  # images re-embedded, texts hit
    fresh = run_tasks(_model(), [_task(data, ["en"])], bootstrap=0)
    assert _numbers(result) == _numbers(fresh)


def test_unusable_cache_directory_is_a_clear_error(data, tmp_path):
    from mclip.config import ConfigError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="--cache"):
        run_tasks(_model(), [_task(data, ["en"])], cache_dir=str(blocker), bootstrap=0)


def _write_labelled_shard(path, labels, images):
    """A shard of ``KEY.png`` + ``KEY.cls``; members carry mtime 0, so a rewrite with other
    one-digit labels has exactly the same size."""
    import io
    import tarfile

    with tarfile.open(path, "w") as tar:
        for i, (label, png) in enumerate(zip(labels, images)):
            for ext, data in (("png", png), ("cls", str(label).encode())):
                info = tarfile.TarInfo(f"s{i:03d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_a_same_size_rewrite_of_a_shard_misses_the_cache_a_touch_is_harmless(data, tmp_path):
    import io

    rng = np.random.default_rng(1)
    images = []
    for _ in range(8):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)).save(buffer, "PNG")
        images.append(buffer.getvalue())
    shard, cache = tmp_path / "eval.tar", str(tmp_path / "cache")
    _write_labelled_shard(shard, [0, 1, 2, 3] * 2, images)

    def task():
        return make_task(
            {
                "name": "babel",
                "kind": "zeroshot_classification",
                "languages": ["en"],
                "images": str(shard),
                "class_texts": str(data / "labels.json"),
            },
            data,
            "test",
        )

    first = run_tasks(_model(), [task()], cache_dir=cache, bootstrap=0)
    size, stamp = shard.stat().st_size, shard.stat().st_mtime_ns
    _write_labelled_shard(shard, [1, 2, 3, 0] * 2, images)  # new labels, same size
    assert shard.stat().st_size == size
    os.utime(shard, ns=(stamp + 10**9, stamp + 10**9))
    model = _model()
    rewritten = run_tasks(model, [task()], cache_dir=cache, bootstrap=0)
    assert model.images == 8  # a miss: embedded again
    assert _numbers(rewritten) == _numbers(run_tasks(_model(), [task()], bootstrap=0))
    # the true classes moved: each image's rank of its true class (kept per sample) differs
    assert (
        rewritten["babel"]["languages"]["en"]["samples"]
        != first["babel"]["languages"]["en"]["samples"]
    )

    # the same size and the same mtime as before, other labels: the content hash misses
    stamp = shard.stat().st_mtime_ns
    _write_labelled_shard(shard, [2, 3, 0, 1] * 2, images)
    os.utime(shard, ns=(stamp, stamp))
    model = _model()
    again = run_tasks(model, [task()], cache_dir=cache, bootstrap=0)
    assert model.images == 8
    assert _numbers(again) == _numbers(run_tasks(_model(), [task()], bootstrap=0))

    # touched, unchanged: a hit or a miss, but never other numbers
    os.utime(shard, ns=(stamp + 5 * 10**9, stamp + 5 * 10**9))
    assert _numbers(run_tasks(_model(), [task()], cache_dir=cache, bootstrap=0)) == _numbers(again)


def test_a_renamed_image_file_misses_the_cache(data, tmp_path):
    cache = str(tmp_path / "cache")
    run_tasks(_model(), [_task(data, ["en"])], cache_dir=cache, bootstrap=0)
    (data / "images" / "n0001" / "0.png").rename(data / "images" / "n0001" / "7.png")
    model = _model()
    result = run_tasks(model, [_task(data, ["en"])], cache_dir=cache, bootstrap=0)
    assert model.images == 12
    keys = result["babel"]["languages"]["en"]["samples"]
    fresh = run_tasks(_model(), [_task(data, ["en"])], bootstrap=0)
    assert _numbers(result) == _numbers(fresh)
    assert keys == fresh["babel"]["languages"]["en"]["samples"]
