"""Images decoded in DataLoader workers embed exactly as in one process (keys, labels, skip
counts, ``--limit``, the rank split); a GPU out-of-memory error halves the batch instead of
ending the run; ``--precision bf16`` is close to fp32 and cached apart from it."""

import io
import tarfile

import numpy as np
import pytest
import torch
from conftest import tiny_model_config
from PIL import Image

from mclip.eval.cache import model_fingerprint
from mclip.eval.datasets import open_image_set
from mclip.eval.embeddings import ImageEmbeddings, TextEmbeddings
from mclip.eval.encoding import encode_text_batches, run_or_halve
from mclip.eval.image_loading import SetListing, default_image_workers, image_batches
from mclip.models.adapters.native import NativeAdapter
from mclip.models.dual import DualEncoder


@pytest.fixture(scope="module")
def adapter():
    cfg = tiny_model_config("resnet10t")
    torch.manual_seed(0)
    return NativeAdapter(DualEncoder(cfg.model), cfg, name="tiny").eval()


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder") / "images"
    rng = np.random.default_rng(0)
    for c in range(5):
        folder = root / f"n{c:04d}"
        folder.mkdir(parents=True)
        for i in range(5):
            Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)).save(
                folder / f"{i}.png"
            )
    (root / "n0001" / "2.png").write_bytes(b"not a png")
    (root / "n0003" / "0.png").write_bytes(b"")
    return root


@pytest.fixture(scope="module")
def labelled_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(1)
    for shard in range(2):
        with tarfile.open(root / f"eval-{shard:04d}.tar", "w") as tar:
            for i in range(7):
                key = f"{shard:02d}{i:03d}"
                buffer = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)).save(
                    buffer, "JPEG"
                )
                data = buffer.getvalue() if i != 4 else b"\xff\xd8 truncated"
                for name, payload in ((f"{key}.jpg", data), (f"{key}.cls", str(i % 3).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    return root


@pytest.mark.parametrize("where", ["image_folder", "labelled_shards"])
@pytest.mark.parametrize("limit", [pytest.param(None, marks=pytest.mark.slow), 9])
def test_workers_embed_exactly_as_one_process(adapter, request, where, limit):
    image_set = open_image_set(request.getfixturevalue(where))
    alone = ImageEmbeddings(adapter, torch.device("cpu"), batch_size=4, limit=limit)
    emb, keys, labels, skipped = alone.get(image_set)
    assert skipped.get("unreadable_image") in (1, 2)
    for workers in (1, 2):
        other = ImageEmbeddings(
            adapter, torch.device("cpu"), batch_size=4, limit=limit, workers=workers
        ).get(image_set)
        assert torch.equal(other[0], emb)
        assert (other[1], other[2], other[3]) == (keys, labels, skipped)


def test_the_rank_split_is_kept_with_workers(image_folder):
    image_set = open_image_set(image_folder)

    def transform(image):
        return torch.zeros(1)

    def positions(rank, world, workers):
        seen, listing = [], None
        for batch in image_batches(image_set, transform, 3, 20, rank, world, workers):
            if isinstance(batch, SetListing):
                listing = batch
            else:
                seen.extend(batch.positions)
        return sorted(seen), listing.total

    rank0, total = positions(0, 2, 2)
    rank1, _ = positions(1, 2, 0)
    assert total == 20
    readable = positions(0, 1, 0)[0]
    assert rank0 == [p for p in readable if p % 2 == 0]
    assert rank1 == [p for p in readable if p % 2 == 1]


def test_default_workers_use_the_cpus_and_leave_one_to_feed_a_gpu(monkeypatch):
    import mclip.eval.image_loading as loading

    monkeypatch.setattr(loading, "usable_cpus", lambda: 2)
    assert default_image_workers("cpu") == 2 and default_image_workers("cuda") == 1
    monkeypatch.setattr(loading, "usable_cpus", lambda: 64)
    assert default_image_workers("cuda") == 8 and default_image_workers("cuda", 16) == 3
    monkeypatch.setattr(loading, "usable_cpus", lambda: 1)
    assert default_image_workers("cpu") == 1 and default_image_workers("cuda") == 0


def test_out_of_memory_halves_the_batch_and_keeps_the_rows_in_order():
    calls, said = [], []

    def run(items):
        calls.append(len(items))
        if len(items) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return torch.tensor(items, dtype=torch.float32)[:, None]

    rows, fitted = run_or_halve(run, list(range(10)), said.append)
    assert rows[:, 0].tolist() == list(range(10)) and fitted == 2
    assert calls[0] == 10 and said and "batch size 10" in said[0]
    with pytest.raises(torch.OutOfMemoryError):
        run_or_halve(
            lambda items: (_ for _ in ()).throw(torch.OutOfMemoryError("x")), [1], said.append
        )


def test_text_batches_after_out_of_memory_stay_small(adapter, monkeypatch):
    texts = [f"text number {i}" for i in range(40)]
    want = torch.cat(encode_text_batches(adapter, texts, 16))
    sizes = []
    original = adapter.encode_tokens

    def limited(tokens):
        sizes.append(tokens["input_ids"].shape[0])
        if sizes[-1] > 5:
            raise torch.OutOfMemoryError("simulated")
        return original(tokens)

    monkeypatch.setattr(adapter, "encode_tokens", limited)
    said = []
    got = torch.cat(encode_text_batches(adapter, texts, 16, said=said.append))
    assert torch.allclose(got, want, atol=1e-6)
    assert sizes[:7] == [16, 8, 4, 4, 8, 4, 4]  # the first batch, halved until it fits
    assert said and max(sizes[7:]) <= 4  # later batches at the size that fitted


def test_bf16_is_close_to_fp32_and_cached_apart(adapter, image_folder):
    image_set = open_image_set(image_folder)
    fp32 = ImageEmbeddings(adapter, torch.device("cpu"), 8).get(image_set)[0]
    bf16 = ImageEmbeddings(adapter, torch.device("cpu"), 8, precision="bf16").get(image_set)[0]
    assert bf16.dtype == torch.float32 and not torch.equal(bf16, fp32)
    assert (bf16 * fp32).sum(-1).min() > 0.98
    texts = ["a cat", "ein Hund", "一只狗"]
    t32 = TextEmbeddings(adapter).encode(texts)
    t16 = TextEmbeddings(adapter, precision="bf16").encode(texts)
    assert not torch.equal(t16, t32) and (t16 * t32).sum(-1).min() > 0.98
    assert model_fingerprint(adapter) != model_fingerprint(adapter, "bf16")
    assert model_fingerprint(adapter) == model_fingerprint(adapter, "fp32")


@pytest.mark.slow
def test_cli_workers_and_precision(tmp_path, image_folder):
    import json

    from mclip.cli import main

    cfg = tiny_model_config("resnet10t")
    torch.manual_seed(0)
    DualEncoder(cfg.model).save(tmp_path / "model", cfg)
    labels = {"EN": [list(range(5)), [f"class {c}" for c in range(5)]]}
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    runs = {}
    for name, extra in (
        ("fp32", ["--workers", "2"]),
        ("fp32_alone", ["--workers", "0"]),
        ("bf16", ["--precision", "bf16"]),
    ):
        assert (
            main(
                [
                    "eval",
                    "--model",
                    str(tmp_path / "model"),
                    "--task",
                    "zeroshot_classification",
                    "--images",
                    str(image_folder),
                    "--class-texts",
                    str(tmp_path / "labels.json"),
                    "--bootstrap",
                    "0",
                    "--quiet",
                    "--out",
                    str(tmp_path / name),
                    *extra,
                ]
            )
            == 0
        )
        task = json.loads((tmp_path / name / "results.json").read_text())["tasks"][
            "zeroshot_classification"
        ]
        runs[name] = task
    assert runs["fp32"]["precision"] == "fp32" and runs["bf16"]["precision"] == "bf16"
    assert runs["fp32"]["languages"] == runs["fp32_alone"]["languages"]
    assert runs["fp32"]["skipped"] == {"unreadable_image": 2}
    assert (
        main(
            [
                "eval",
                "--model",
                str(tmp_path / "model"),
                "--task",
                "zeroshot_classification",
                "--images",
                str(image_folder),
                "--class-texts",
                str(tmp_path / "labels.json"),
                "--precision",
                "fp16",
            ]
        )
        == 2
    )


def test_a_batch_that_ran_whole_never_lowers_the_batch_size(adapter):
    rows, fitted = run_or_halve(lambda items: torch.zeros(len(items), 1), list(range(3)), print)
    assert fitted is None and rows.shape == (3, 1)
    texts = [f"text {i}" for i in range(21)]
    sizes = []
    original = adapter.encode_tokens
    adapter.encode_tokens = lambda tokens: (
        sizes.append(len(tokens["input_ids"])) or original(tokens)
    )
    try:
        encode_text_batches(adapter, texts, 8)
        encode_text_batches(adapter, texts, 8)  # the short last batch of a call lowers nothing
    finally:
        del adapter.encode_tokens
    assert sizes == [8, 8, 5, 8, 8, 5]


def test_an_adapter_written_to_the_old_contract_still_builds_and_encodes():
    from mclip.models.adapters.base import ModelAdapter

    class Old(ModelAdapter):
        embed_dim = 2

        def encode_image(self, images):
            return torch.ones(len(images), 2)

        def encode_text(self, texts):
            return torch.ones(len(texts), 2)

        def image_transform(self, train=False):
            return lambda image: image

        @property
        def logit_scale(self):
            return torch.tensor(0.0)

    assert TextEmbeddings(Old()).encode(["a", "b", "a"]).shape == (3, 2)
