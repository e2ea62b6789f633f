"""Offline teacher embeddings (``mclip distill embed``): the same loss as the online teacher, and
a mismatch between shards and embeddings is an error, never a silent misalignment."""

import io
import json
import tarfile

import pytest
import torch
from PIL import Image

from conftest import run_cli
from mclip.config import load_config
from mclip.data.languages import LanguagePolicy
from mclip.data.pipeline import TrainStream
from mclip.data.shards import DataError, expand_shards
from mclip.data.teacher_cache import TeacherEmbeddingStore, write_teacher_embeddings
from mclip.models.adapters import load_model
from mclip.train.trainer import train
from test_resume import DEMO, _losses, _overrides


LANGUAGES = ["en", "de", "ja"]


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    """96 training images in 2 shards (captions of 3 languages are embedded and trained on)."""
    from mclip.data.demo import write_demo_dataset

    out = tmp_path_factory.mktemp("small_demo")
    write_demo_dataset(out, n_train=96, n_eval_per_class=1, image_size=32, shard_size=48, seed=2)
    return out


def _train_overrides(data, run, steps, **kw):
    return _overrides(data, run, steps, **kw) + [f"data.languages=[{','.join(LANGUAGES)}]"]


@pytest.fixture(scope="module")
def teacher_run(demo_data, tmp_path_factory):
    run = tmp_path_factory.mktemp("teacher") / "run"
    train(load_config(DEMO, _train_overrides(demo_data, run, 3, save_every=3)), quiet=True)
    return run


@pytest.fixture(scope="module")
def stored(demo_data, teacher_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("embeddings")
    teacher = load_model(str(teacher_run))
    write_teacher_embeddings(teacher, str(teacher_run), expand_shards(str(demo_data / "train")),
                             out, dtype="fp32", languages=LANGUAGES, batch_size=100)
    return out


def _batch(demo_data, teacher, augment=True):
    stream = TrainStream(expand_shards(str(demo_data / "train")), teacher.image_transform(),
                         LanguagePolicy(languages=LANGUAGES), 24, shuffle_size=50, augment=augment,
                         captions_per_image=2)
    return next(iter(stream))


def test_stored_embeddings_are_the_teachers_embeddings_of_the_batch(demo_data, teacher_run, stored):
    teacher = load_model(str(teacher_run))
    batch = _batch(demo_data, teacher)
    assert any(batch["flipped"]) and not all(batch["flipped"])
    store = TeacherEmbeddingStore(stored)
    images, texts = store.lookup(batch["keys"], batch["image_hashes"], batch["flipped"],
                                 batch["texts"], batch["languages"], batch["text_to_image"])
    with torch.no_grad():
        torch.testing.assert_close(images, teacher.encode_image(batch["images"]), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(texts, teacher.encode_text(batch["texts"]), atol=1e-5, rtol=1e-4)
    meta = json.loads((stored / "teacher.json").read_text())
    assert meta["images"] == 96 and meta["languages"] == sorted(LANGUAGES)
    assert meta["logit_scale"] == pytest.approx(store.logit_scale)


def test_offline_distillation_gives_the_online_losses(demo_data, teacher_run, stored, tmp_path):
    terms = ["distill.similarity_weight=1.0", "distill.feature_weight=0.5",
             "distill.cross_weight=0.3", "distill.contrastive_weight=0.5", "model.embed_dim=32"]
    online, offline = tmp_path / "online", tmp_path / "offline"
    train(load_config(DEMO, _train_overrides(demo_data, online, 4) + terms + [
        f"distill.teachers=[{{model: {teacher_run}}}]"]), quiet=True)
    train(load_config(DEMO, _train_overrides(demo_data, offline, 4) + terms + [
        f"distill.teachers=[{{embeddings: {stored}}}]"]), quiet=True)
    a, b = _losses(online), _losses(offline)
    assert sorted(a) == [1, 2, 3, 4] and a.keys() == b.keys()
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-5, abs=1e-6), step


def test_bf16_storage_is_close_to_fp32(demo_data, teacher_run, stored, tmp_path):
    shards = expand_shards(str(demo_data / "train"))[:1]
    write_teacher_embeddings(load_model(str(teacher_run)), "t", shards, tmp_path, dtype="bf16",
                             languages=["en", "de"])
    half, full = TeacherEmbeddingStore(tmp_path), TeacherEmbeddingStore(stored)
    key = next(iter(half.index))
    assert set(half.index[key][2]) == {"en", "de"}
    lookup = dict(keys=[key], image_hashes=[half.index[key][1]], flipped=[False], texts=[],
                  languages=[], text_to_image=torch.zeros(0, dtype=torch.long))
    torch.testing.assert_close(half.lookup(**lookup)[0], full.lookup(**lookup)[0], atol=1e-2, rtol=0)


def _rewrite_first_image(shard, out):
    """A copy of ``shard`` whose first image has other pixels (its key unchanged)."""
    with tarfile.open(shard) as src, tarfile.open(out, "w") as dst:
        members = src.getmembers()
        first = next(m for m in members if m.name.endswith(".jpg"))
        for member in members:
            data = src.extractfile(member).read()
            if member.name == first.name:
                buffer = io.BytesIO()
                Image.new("RGB", (32, 32), (1, 2, 3)).save(buffer, format="JPEG")
                data = buffer.getvalue()
            info = tarfile.TarInfo(member.name)
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
    return first.name.split(".")[0]


def test_mismatches_are_errors_naming_the_sample(demo_data, teacher_run, stored, tmp_path):
    store = TeacherEmbeddingStore(stored)
    shard = expand_shards(str(demo_data / "train"))[0]
    key = _rewrite_first_image(shard, tmp_path / "changed.tar")
    with pytest.raises(DataError, match="other shards than"):
        store.check_shards([str(tmp_path / "changed.tar")])
    stream = TrainStream([str(tmp_path / "changed.tar")], load_model(str(teacher_run)).image_transform(),
                         LanguagePolicy(languages=LANGUAGES), 48, shuffle_size=1, augment=False)
    batch = next(iter(stream))
    args = (batch["keys"], batch["image_hashes"], batch["flipped"], batch["texts"],
            batch["languages"], batch["text_to_image"])
    with pytest.raises(DataError, match=f"the image of sample '{key}' differs"):
        store.lookup(*args)
    with pytest.raises(DataError, match="sample 'nope' has no teacher embedding"):
        store.lookup(["nope"], ["0"], [False], [], [], torch.zeros(0, dtype=torch.long))
    entry = store.index[batch["keys"][1]]
    with pytest.raises(DataError, match="has no teacher embedding"):
        store.lookup([batch["keys"][1]], [entry[1]], [False], ["never embedded"], ["en"],
                     torch.zeros(1, dtype=torch.long))
    with pytest.raises(DataError, match="holds no teacher embeddings"):
        TeacherEmbeddingStore(tmp_path)


def test_cli_distill_embed(demo_data, teacher_run, tmp_path):
    result = run_cli("distill", "embed", "--teacher", teacher_run, "--shards",
                     expand_shards(str(demo_data / "train"))[0], "--out", tmp_path / "emb",
                     "--languages", "en,sw")
    assert result.returncode == 0, result.stderr
    assert "embedded 48 images and" in result.stdout and "distill.teachers=[{embeddings:" in result.stdout
    assert json.loads((tmp_path / "emb" / "teacher.json").read_text())["languages"] == ["en", "sw"]


def test_cli_distill_embed_reads_caption_languages_as_the_training_config_does(teacher_run,
                                                                               tmp_path):
    """--language-key / --default-language: as data.language_key / data.default_language."""
    shard = tmp_path / "captions.tar"
    with tarfile.open(shard, "w") as tar:
        for i, (caption, meta) in enumerate([("un cercle rouge", {"lang": "fr"}),
                                             ("a red circle", {})]):
            png = io.BytesIO()
            Image.new("RGB", (32, 32), (200, 20 * i, 0)).save(png, "PNG")
            for name, data in ((f"{i:04d}.png", png.getvalue()), (f"{i:04d}.txt", caption.encode()),
                               (f"{i:04d}.json", json.dumps(meta).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    for flags, languages in (([], ["en"]), (["--default-language", "de"], ["de"]),
                             (["--language-key", "lang"], ["en", "fr"])):
        out = tmp_path / f"emb{len(flags)}{languages[-1]}"
        result = run_cli("distill", "embed", "--teacher", teacher_run, "--shards", shard,
                         "--out", out, *flags)
        assert result.returncode == 0, result.stderr
        assert json.loads((out / "teacher.json").read_text())["languages"] == languages, flags
