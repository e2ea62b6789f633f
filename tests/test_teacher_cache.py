"""Offline teacher embeddings (``mclip distill embed``): the same loss as the online teacher, and
a mismatch between shards and embeddings is an error, never a silent misalignment."""

import io
import json
import tarfile
from pathlib import Path

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
    write_teacher_embeddings(
        teacher,
        str(teacher_run),
        expand_shards(str(demo_data / "train")),
        out,
        dtype="fp32",
        languages=LANGUAGES,
        batch_size=100,
    )
    return out


def _batch(demo_data, teacher, augment=True):
    stream = TrainStream(
        expand_shards(str(demo_data / "train")),
        teacher.image_transform(),
        LanguagePolicy(languages=LANGUAGES),
        24,
        shuffle_size=50,
        augment=augment,
        captions_per_image=2,
    )
    return next(iter(stream))


def test_stored_embeddings_are_the_teachers_embeddings_of_the_batch(demo_data, teacher_run, stored):
    teacher = load_model(str(teacher_run))
    batch = _batch(demo_data, teacher)
    assert any(batch["flipped"]) and not all(batch["flipped"])
    store = TeacherEmbeddingStore(stored)
    images, texts = store.lookup(
        batch["shards"],
        batch["keys"],
        batch["image_hashes"],
        batch["flipped"],
        batch["texts"],
        batch["languages"],
        batch["text_to_image"],
    )
    with torch.no_grad():
        torch.testing.assert_close(
            images, teacher.encode_image(batch["images"]), atol=1e-5, rtol=1e-4
        )
        torch.testing.assert_close(texts, teacher.encode_text(batch["texts"]), atol=1e-5, rtol=1e-4)
    meta = json.loads((stored / "teacher.json").read_text())
    assert meta["images"] == 96 and meta["languages"] == sorted(LANGUAGES)
    assert meta["logit_scale"] == pytest.approx(store.logit_scale)


def test_offline_distillation_gives_the_online_losses(demo_data, teacher_run, stored, tmp_path):
    terms = [
        "distill.similarity_weight=1.0",
        "distill.feature_weight=0.5",
        "distill.cross_weight=0.3",
        "distill.contrastive_weight=0.5",
        "model.embed_dim=32",
    ]
    online, offline = tmp_path / "online", tmp_path / "offline"
    train(
        load_config(
            DEMO,
            _train_overrides(demo_data, online, 4)
            + terms
            + [f"distill.teachers=[{{model: {teacher_run}}}]"],
        ),
        quiet=True,
    )
    train(
        load_config(
            DEMO,
            _train_overrides(demo_data, offline, 4)
            + terms
            + [f"distill.teachers=[{{embeddings: {stored}}}]"],
        ),
        quiet=True,
    )
    a, b = _losses(online), _losses(offline)
    assert sorted(a) == [1, 2, 3, 4] and a.keys() == b.keys()
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-5, abs=1e-6), step


def test_bf16_storage_is_close_to_fp32(demo_data, teacher_run, stored, tmp_path):
    shards = expand_shards(str(demo_data / "train"))[:1]
    write_teacher_embeddings(
        load_model(str(teacher_run)), "t", shards, tmp_path, dtype="bf16", languages=["en", "de"]
    )
    half, full = TeacherEmbeddingStore(tmp_path), TeacherEmbeddingStore(stored)
    index = half.part(shards[0]).index
    key = next(iter(index))
    assert set(index[key][2]) == {"en", "de"}
    lookup = dict(
        shards=shards,
        keys=[key],
        image_hashes=[index[key][1]],
        flipped=[False],
        texts=[],
        languages=[],
        text_to_image=torch.zeros(0, dtype=torch.long),
    )
    torch.testing.assert_close(
        half.lookup(**lookup)[0], full.lookup(**lookup)[0], atol=1e-2, rtol=0
    )


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


def test_mismatches_are_errors_naming_the_sample(demo_data, teacher_run, tmp_path):
    shard = tmp_path / "shard.tar"
    shard.write_bytes(Path(expand_shards(str(demo_data / "train"))[0]).read_bytes())
    write_teacher_embeddings(
        load_model(str(teacher_run)),
        "t",
        [str(shard)],
        tmp_path / "emb",
        dtype="fp32",
        languages=LANGUAGES,
    )
    store = TeacherEmbeddingStore(tmp_path / "emb")
    with pytest.raises(DataError, match="other shards than"):
        store.check_shards([str(tmp_path / "other.tar")])
    key = _rewrite_first_image(shard, tmp_path / "changed.tar")
    (tmp_path / "changed.tar").replace(shard)  # the same shard path, one image changed
    stream = TrainStream(
        [str(shard)],
        load_model(str(teacher_run)).image_transform(),
        LanguagePolicy(languages=LANGUAGES),
        48,
        shuffle_size=1,
        augment=False,
    )
    batch = next(iter(stream))
    args = (
        batch["shards"],
        batch["keys"],
        batch["image_hashes"],
        batch["flipped"],
        batch["texts"],
        batch["languages"],
        batch["text_to_image"],
    )
    with pytest.raises(DataError, match=f"the image of sample '{key}' .* differs"):
        store.lookup(*args)
    with pytest.raises(DataError, match="sample 'nope' of shard .* has no teacher embedding"):
        store.lookup(
            [str(shard)], ["nope"], ["0"], [False], [], [], torch.zeros(0, dtype=torch.long)
        )
    with pytest.raises(DataError, match="shard '.*other.tar' has no teacher embeddings"):
        store.lookup(
            [str(tmp_path / "other.tar")],
            ["x"],
            ["0"],
            [False],
            [],
            [],
            torch.zeros(0, dtype=torch.long),
        )
    entry = store.part(str(shard)).index[batch["keys"][1]]
    with pytest.raises(DataError, match="has no teacher embedding"):
        store.lookup(
            [str(shard)],
            [batch["keys"][1]],
            [entry[1]],
            [False],
            ["never embedded"],
            ["en"],
            torch.zeros(1, dtype=torch.long),
        )
    with pytest.raises(DataError, match="holds no teacher embeddings"):
        TeacherEmbeddingStore(tmp_path)


def test_cli_distill_embed(demo_data, teacher_run, tmp_path):
    result = run_cli(
        "distill",
        "embed",
        "--teacher",
        teacher_run,
        "--shards",
        expand_shards(str(demo_data / "train"))[0],
        "--out",
        tmp_path / "emb",
        "--languages",
        "en,sw",
    )
    assert result.returncode == 0, result.stderr
    assert (
        "embedded 48 images and" in result.stdout
        and "distill.teachers=[{embeddings:" in result.stdout
    )
    assert json.loads((tmp_path / "emb" / "teacher.json").read_text())["languages"] == ["en", "sw"]


def test_cli_distill_embed_reads_caption_languages_as_the_training_config_does(
    teacher_run, tmp_path
):
    """--language-key / --default-language: as data.language_key / data.default_language."""
    shard = tmp_path / "captions.tar"
    with tarfile.open(shard, "w") as tar:
        for i, (caption, meta) in enumerate(
            [("un cercle rouge", {"lang": "fr"}), ("a red circle", {})]
        ):
            png = io.BytesIO()
            Image.new("RGB", (32, 32), (200, 20 * i, 0)).save(png, "PNG")
            for name, data in (
                (f"{i:04d}.png", png.getvalue()),
                (f"{i:04d}.txt", caption.encode()),
                (f"{i:04d}.json", json.dumps(meta).encode()),
            ):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    result = run_cli(
        "distill",
        "embed",
        "--teacher",
        teacher_run,
        "--shards",
        shard,
        "--out",
        tmp_path / "emb",
        "--default-language",
        "de",
        "--language-key",
        "lang",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "emb" / "teacher.json").read_text())["languages"] == ["de", "fr"]


def test_embed_resumes_shard_by_shard_and_redoes_a_changed_shard(demo_data, teacher_run, tmp_path):
    """A second run reuses every finished shard; a shard whose file changed is embedded again,
    and one embedded with another teacher is not reused."""
    shards = [tmp_path / "a.tar", tmp_path / "b.tar"]
    for shard, source in zip(shards, expand_shards(str(demo_data / "train"))):
        shard.write_bytes(Path(source).read_bytes())
    teacher, out = load_model(str(teacher_run)), tmp_path / "emb"
    first = write_teacher_embeddings(teacher, "t", [str(s) for s in shards], out, dtype="fp32")
    assert first["reused_parts"] == 0 and first["images"] == 96
    stored_b = (
        out / "parts" / TeacherEmbeddingStore(out).shards[str(shards[1].resolve())] / "images.npy"
    ).read_bytes()
    again = write_teacher_embeddings(teacher, "t", [str(s) for s in shards], out, dtype="fp32")
    assert again["reused_parts"] == 2 and again["images"] == 96
    key = _rewrite_first_image(shards[0], tmp_path / "changed.tar")
    (tmp_path / "changed.tar").replace(shards[0])
    changed = write_teacher_embeddings(teacher, "t", [str(s) for s in shards], out, dtype="fp32")
    assert changed["reused_parts"] == 1
    store = TeacherEmbeddingStore(out)
    batch = next(
        iter(
            TrainStream(
                [str(shards[0])],
                teacher.image_transform(),
                LanguagePolicy(languages=LANGUAGES),
                48,
                shuffle_size=1,
            )
        )
    )
    assert key in batch["keys"]  # the changed image's embedding is found and is its teacher's
    images, _ = store.lookup(
        batch["shards"],
        batch["keys"],
        batch["image_hashes"],
        batch["flipped"],
        batch["texts"],
        batch["languages"],
        batch["text_to_image"],
    )
    with torch.no_grad():
        torch.testing.assert_close(
            images, teacher.encode_image(batch["images"]), atol=1e-5, rtol=1e-4
        )
    part_b = out / "parts" / store.shards[str(shards[1].resolve())] / "images.npy"
    assert part_b.read_bytes() == stored_b
    with torch.no_grad():
        next(teacher.parameters()).add_(1.0)  # other teacher weights under the same spec
    assert (
        write_teacher_embeddings(teacher, "t", [str(s) for s in shards], out, dtype="fp32")[
            "reused_parts"
        ]
        == 0
    )
    assert len(TeacherEmbeddingStore(out).shards) == 2
    with torch.no_grad():
        next(teacher.parameters()).add_(1.0)
    write_teacher_embeddings(teacher, "t", [str(shards[1])], out, dtype="fp32")
    with pytest.raises(DataError, match="another teacher or dtype.*delete that part"):
        TeacherEmbeddingStore(out)  # shard a's part is of the previous teacher


def test_two_sources_whose_keys_repeat_share_one_embedding_directory(
    demo_data, teacher_run, tmp_path
):
    """img2dataset numbers every source's keys the same way: samples are found by shard and key;
    the shards were embedded by two runs (as one per GPU would) into the same directory."""
    source = expand_shards(str(demo_data / "train"))[0]
    first, second = tmp_path / "laion" / "00000.tar", tmp_path / "cc3m" / "00000.tar"
    first.parent.mkdir()
    second.parent.mkdir()
    first.write_bytes(Path(source).read_bytes())
    _rewrite_first_image(source, second)  # same keys, one image differs
    teacher = load_model(str(teacher_run))
    for shard in (first, second):  # two processes, each on a slice, into one directory
        write_teacher_embeddings(teacher, "t", [str(shard)], tmp_path / "emb", dtype="fp32")
    store = TeacherEmbeddingStore(tmp_path / "emb")
    store.check_shards([str(first), str(second)])
    for shard in (first, second):
        stream = TrainStream(
            [str(shard)],
            teacher.image_transform(),
            LanguagePolicy(languages=LANGUAGES),
            48,
            shuffle_size=1,
            augment=False,
        )
        batch = next(iter(stream))
        images, texts = store.lookup(
            batch["shards"],
            batch["keys"],
            batch["image_hashes"],
            batch["flipped"],
            batch["texts"],
            batch["languages"],
            batch["text_to_image"],
        )
        with torch.no_grad():
            torch.testing.assert_close(
                images, teacher.encode_image(batch["images"]), atol=1e-5, rtol=1e-4
            )
            torch.testing.assert_close(
                texts, teacher.encode_text(batch["texts"]), atol=1e-5, rtol=1e-4
            )


def test_http_shards_are_embedded_as_local_ones_and_keyed_by_url_and_version(
    demo_data, teacher_run, tmp_path
):
    """``distill embed`` on shards over HTTP (a server of the test's own on 127.0.0.1): the same
    embeddings as from the files; a second run reuses every part; a rewritten object (new size
    or ETag) is embedded again; the store finds them by the URLs training names."""
    import os
    import shutil

    import numpy as np

    from shard_server import ShardServer

    served = tmp_path / "served"
    served.mkdir()
    for shard in sorted((demo_data / "train").glob("*.tar"))[:2]:
        shutil.copy(shard, served / shard.name)
    names = sorted(p.name for p in served.glob("*.tar"))
    teacher = load_model(str(teacher_run))
    kwargs = dict(dtype="fp32", languages=LANGUAGES, batch_size=100)
    write_teacher_embeddings(
        teacher, str(teacher_run), [str(served / n) for n in names], tmp_path / "local", **kwargs
    )
    with ShardServer(served) as server:
        urls = [server.url(n) for n in names]
        first = write_teacher_embeddings(
            teacher, str(teacher_run), urls, tmp_path / "http", **kwargs
        )
        again = write_teacher_embeddings(
            teacher, str(teacher_run), urls, tmp_path / "http", **kwargs
        )
        os.utime(served / names[1], ns=(1, 1))  # same bytes, another version (ETag)
        third = write_teacher_embeddings(
            teacher, str(teacher_run), urls, tmp_path / "http", **kwargs
        )
        store, local = (TeacherEmbeddingStore(tmp_path / d) for d in ("http", "local"))
        store.check_shards(urls)
        for url, name in zip(urls, names):
            ours, theirs = store.part(url), local.part(str(served / name))
            assert ours.index == theirs.index
            for array in ours.arrays:
                np.testing.assert_array_equal(ours.arrays[array], theirs.arrays[array])
    assert (first["reused_parts"], again["reused_parts"], third["reused_parts"]) == (0, 2, 1)
