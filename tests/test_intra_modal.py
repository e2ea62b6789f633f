"""Intra-modal retrieval (image -> image, caption -> caption): the metric by hand and against
torchmetrics, the runners on generated data, the shared image pass, the CLI flags."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import webdataset as wds
from PIL import Image
from torchmetrics.functional.retrieval import retrieval_average_precision

from mclip.config import ConfigError
from mclip.data.shards import SkipCounter
from mclip.eval.intra_modal import positive_ranks, run_image_to_image, run_text_to_text
from mclip.eval.report import build_report, markdown_table
from mclip.eval.runner import run_tasks
from mclip.eval.suite import make_task


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


class FakeImages:
    """ImageEmbeddings stand-in: a vector per image key."""

    def __init__(self, vectors: dict[str, list[float]]):
        self.vectors = vectors

    def get(self, image_set):
        items = list(image_set.items(SkipCounter()))
        emb = F.normalize(torch.tensor([self.vectors[i.key] for i in items]), dim=-1)
        return emb, [i.key for i in items], [i.label for i in items], {}


class FakeText:
    def __init__(self, vectors: dict[str, list[float]]):
        self.vectors, self.calls = vectors, []

    def encode(self, texts, language=None):
        self.calls.append(language)
        return F.normalize(
            torch.tensor([self.vectors[t] for t in texts], dtype=torch.float32), dim=-1
        )


def test_positive_ranks_match_torchmetrics_and_a_plain_loop():
    torch.manual_seed(0)
    emb = F.normalize(torch.randn(60, 6), dim=-1)
    labels = torch.randint(0, 7, (60,))
    import mclip.eval.intra_modal as intra

    old, intra.QUERY_CHUNK = intra.QUERY_CHUNK, 16  # several chunks
    try:
        result = positive_ranks(emb, emb, labels, labels, same_set=True)
    finally:
        intra.QUERY_CHUNK = old
    scores = emb @ emb.T
    expected_queries = [i for i in range(60) if int((labels == labels[i]).sum()) > 1]
    assert result.queries.tolist() == expected_queries
    for row, i in enumerate(expected_queries):
        others = [j for j in range(60) if j != i]
        # + 2: torchmetrics drops positives scored <= 0; cosines are >= -1, the order stays
        preds, target = scores[i, others] + 2, labels[others] == labels[i]
        assert float(result.average_precision[row]) == pytest.approx(
            float(retrieval_average_precision(preds, target)), abs=1e-6
        )
        order = sorted(others, key=lambda j: (-float(scores[i, j]), j))
        first = next(n for n, j in enumerate(order) if labels[j] == labels[i])
        assert int(result.ranks[row]) == first


def test_ties_go_to_the_lower_index_and_the_query_is_never_a_candidate():
    emb = F.normalize(torch.tensor([[1.0, 0], [1.0, 0], [1.0, 0], [0, 1.0]]), dim=-1)
    labels = torch.tensor([0, 1, 0, 1])
    result = positive_ranks(emb, emb, labels, labels, same_set=True)
    # query 0: candidates 1, 2 tie at 1.0 (1 first, a negative) -> rank 1, AP 1/2
    # query 1: 0 and 2 tie above its positive 3 -> rank 2, AP 1/3
    # query 2: 0 (positive) and 1 tie -> rank 0; query 3: 0, 1, 2 tie at 0 -> 1 is second: 1
    assert result.ranks.tolist() == [1, 2, 0, 1]
    assert result.average_precision.tolist() == pytest.approx([1 / 2, 1 / 3, 1, 1 / 2])


def test_image_to_image_by_hand(tmp_path):
    """Class a: i0 = x, i1 between; class b: i2 = y, i3 between; class c has one image (no
    query). i0 and i2 find their class first; i1 and i3 find each other (wrong) first."""
    vectors = {
        "a/0.png": [1, 0],
        "a/1.png": [0.8, 0.6],
        "b/0.png": [0, 1],
        "b/1.png": [0.6, 0.8],
        "c/0.png": [-1, 0],
    }
    for key in vectors:
        (tmp_path / "imgs" / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "imgs" / key).write_bytes(_png(len(key)))
    task = make_task(
        {
            "name": "i2i",
            "kind": "image_to_image",
            "images": str(tmp_path / "imgs"),
            "recall_at": [1, 2],
        },
        Path("."),
        "test",
    )
    assert task.languages == "all"
    result = run_image_to_image(task, FakeImages(vectors), None, lambda m: None)
    metrics = result["languages"]["images"]
    assert metrics["image_to_image_R@1"] == 0.5 and metrics["image_to_image_R@2"] == 1.0
    assert metrics["image_to_image_mAP"] == pytest.approx((1 + 0.5 + 1 + 0.5) / 4)
    assert (metrics["n_images"], metrics["n_queries"], metrics["n_classes"]) == (5, 4, 3)
    assert result["views"]["images"]["image_queries"].ranks.tolist() == [0, 1, 0, 1]


def _caption_shard(path: Path, samples: list[tuple[str, dict]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wds.TarWriter(str(path)) as sink:
        for n, (key, captions) in enumerate(samples):
            sink.write({"__key__": key, "png": _png(n), "json": json.dumps({"captions": captions})})


def test_text_to_text_within_and_across_languages_by_hand(tmp_path):
    _caption_shard(
        tmp_path / "caps" / "000.tar",
        [
            ("A", {"en": ["a1", "a2"], "de": ["da1"]}),
            ("B", {"en": ["b1", "b2"], "de": ["db1", "db2"]}),
            ("C", {"en": ["c1"]}),
        ],
    )
    text = FakeText(
        {
            "a1": [1, 0, 0],
            "a2": [0.9, 0.1, 0],
            "b1": [0, 1, 0],
            "b2": [0.8, 0.6, 0],
            "c1": [0, 0, 1],
            "da1": [1, 0, 0],
            "db1": [0, 1, 0],
            "db2": [0.9, 0.1, 0],
        }
    )
    task = make_task(
        {
            "name": "t2t",
            "kind": "text_to_text",
            "languages": "all",
            "captions": str(tmp_path / "caps" / "000.tar"),
            "recall_at": [1, 5],
        },
        Path("."),
        "test",
    )
    result = run_text_to_text(task, None, text, lambda m: None)
    en, de = result["languages"]["en"], result["languages"]["de"]
    # en: a1 <-> a2 and b1 -> b2 first; b2 -> a2, a1, then b1 (rank 2, AP 1/3); c1 no query
    assert en["n_queries"] == 4 and en["text_to_text_R@1"] == 0.75
    assert en["text_to_text_mAP"] == pytest.approx((1 + 1 + 1 + 1 / 3) / 4)
    assert "text_to_pivot_text_R@1" not in en  # the pivot is not matched against itself
    # de within: db1 -> db2 first; db2 -> da1 first (rank 1, AP 1/2); da1 has no other A caption
    assert de["n_queries"] == 2 and de["text_to_text_R@1"] == 0.5
    assert de["text_to_text_mAP"] == pytest.approx(0.75)
    # de -> en: da1 -> a1, a2 (AP 1); db1 -> b1, b2 (AP 1); db2 -> a2, a1, b2, b1 (rank 2,
    # AP (1/3 + 2/4) / 2)
    assert de["n_pivot_queries"] == 3 and de["text_to_pivot_text_R@1"] == pytest.approx(2 / 3)
    assert de["text_to_pivot_text_mAP"] == pytest.approx((1 + 1 + (1 / 3 + 1 / 2) / 2) / 3)
    assert result["views"]["de"]["pivot_text_queries"].ranks.tolist() == [0, 0, 2]
    assert text.calls.count("en") == 1  # the pivot's captions are encoded once
    table = markdown_table(build_report("m", "s", {"t2t": {**result, "views": None}}))
    assert "t2t ->pivot R@1" in table


class CountingAdapter:
    """Wraps an adapter and counts the images it encodes."""

    def __init__(self, inner):
        self.inner, self.images = inner, 0

    def encode_image(self, images):
        self.images += len(images)
        return self.inner.encode_image(images)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_image_to_image_shares_the_image_pass_with_zero_shot(adapter, demo_data):
    tasks = [
        make_task(
            {
                "name": "shapes",
                "kind": "zeroshot_classification",
                "languages": ["en"],
                "images": "eval",
                "class_texts": "classnames",
                "dataset": "demo_shapes",
            },
            demo_data,
            "t",
        ),
        make_task({"name": "i2i", "kind": "image_to_image", "images": "eval"}, demo_data, "t"),
    ]
    counting = CountingAdapter(adapter)
    results = run_tasks(counting, tasks, bootstrap=20)
    n = results["i2i"]["languages"]["images"]["n_images"]
    assert counting.images == n  # one pass over the images for both tasks
    metrics = results["i2i"]["languages"]["images"]
    assert set(metrics["ci"]) == {"image_to_image_R@1", "image_to_image_R@5", "image_to_image_R@10"}


def test_cli_flags_and_a_set_without_usable_images(adapter, demo_data, tmp_path, monkeypatch):
    from mclip.cli import main

    monkeypatch.setattr("mclip.models.adapters.load_model", lambda *a, **k: adapter)
    out = tmp_path / "out"
    assert (
        main(
            [
                "eval",
                "--model",
                "x",
                "--task",
                "text_to_text",
                "--captions",
                str(demo_data / "retrieval"),
                "--languages",
                "en,de",
                "--pivot",
                "de",
                "--out",
                str(out),
                "--quiet",
                "--bootstrap",
                "0",
            ]
        )
        == 0
    )
    languages = json.loads((out / "results.json").read_text())["tasks"]["text_to_text"]["languages"]
    assert set(languages) == {"en", "de"} and languages["en"]["pivot"] == "de"
    assert (
        main(
            [
                "eval",
                "--model",
                "x",
                "--task",
                "image_to_image",
                "--images",
                str(demo_data / "eval"),
                "--out",
                str(out),
                "--quiet",
                "--bootstrap",
                "0",
            ]
        )
        == 0
    )
    # unlabelled shards: every image skipped (counted) and one clear error; this crashed in
    # EvalRanks.gather_rows (RuntimeError: shape mismatch) before
    _caption_shard(tmp_path / "unlabelled" / "000.tar", [("A", {"en": ["x"]})])
    with pytest.raises(ConfigError, match="no usable image .*'missing_label': 1"):
        run_tasks(
            adapter,
            [
                make_task(
                    {
                        "name": "i",
                        "kind": "image_to_image",
                        "images": str(tmp_path / "unlabelled" / "000.tar"),
                    },
                    Path("."),
                    "t",
                )
            ],
            bootstrap=0,
        )
