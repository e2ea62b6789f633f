"""``mclip data score`` and ``mclip data filter``: a Parquet row per caption with the model's
cosine, resumable per shard; per-language histograms and quantiles; filtered shards that keep keys
and images, drop the captions below their language's threshold and the samples left without one."""

import json

import numpy as np
import pytest
import torch

from conftest import tiny_model_config
from mclip.config import ConfigError
from mclip.data.curation import filter_shards, thresholds
from mclip.data.score import all_scores, read_scores, write_scores
from mclip.data.shards import (
    SkipCounter,
    content_hash,
    expand_shards,
    iter_raw_samples,
    usable_samples,
)
from mclip.models.adapters.native import NativeAdapter
from mclip.models.dual import DualEncoder

pa = pytest.importorskip("pyarrow")
LANGUAGES = ["en", "de"]


@pytest.fixture(scope="module")
def model():
    cfg = tiny_model_config()
    torch.manual_seed(0)
    return NativeAdapter(DualEncoder(cfg.model), cfg, name="tiny").eval()


@pytest.fixture(scope="module")
def scored(demo_data, model, tmp_path_factory):
    shards = expand_shards(str(demo_data / "train"))[:2]
    out = tmp_path_factory.mktemp("scores")
    summary = write_scores(model, "tiny", shards, out, batch_size=50, languages=LANGUAGES)
    return shards, out, summary


def test_every_caption_of_every_usable_sample_is_scored(scored, model):
    shards, out, summary = scored
    counter = SkipCounter()
    usable = list(usable_samples(shards[0], counter, languages=set(LANGUAGES)))
    scores = read_scores(out, shards[0])
    assert len(scores) == sum(len(c) for _, _, _, captions, _ in usable for c in captions.values())
    key, _, image, captions, _ = usable[3]
    text = captions["de"][0]
    with torch.no_grad():
        expected = float(
            model.encode_image(model.image_transform()(image).unsqueeze(0))
            @ model.encode_text([text]).T
        )
    assert scores[key, "de", content_hash(text)] == pytest.approx(expected, abs=1e-5)
    assert summary["captions"] == {
        lang: len([s for s in scores if s[1] == lang])
        + len([s for s in read_scores(out, shards[1]) if s[1] == lang])
        for lang in LANGUAGES
    }
    table = pa.parquet.read_table(str(next((out / "parts").glob("*.parquet"))))
    assert table.column_names == [
        "key",
        "language",
        "caption_hash",
        "score",
        "image_hash",
        "width",
        "height",
    ]
    assert set(table.column("width").to_pylist()) == {32}


def test_a_second_run_keeps_the_parts_and_a_rewritten_shard_is_scored_again(
    scored, model, tmp_path
):
    import os
    import shutil

    shards, out, _ = scored
    again = write_scores(model, "tiny", shards, out, batch_size=50, languages=LANGUAGES)
    assert again["reused"] == 2
    copies = []
    for shard in shards:
        copies.append(str(tmp_path / os.path.basename(shard)))
        shutil.copyfile(shard, copies[-1])
    moved = tmp_path / "scores"
    shutil.copytree(out, moved)
    assert (
        write_scores(model, "tiny", copies, moved, languages=LANGUAGES)["reused"] == 0
    )  # other files
    assert write_scores(model, "tiny", copies, moved, languages=LANGUAGES)["reused"] == 2
    os.utime(copies[0], ns=(1, 1))
    assert write_scores(model, "tiny", copies, moved, languages=LANGUAGES)["reused"] == 1


def test_filtering_keeps_each_languages_share_and_drops_empty_samples(scored, tmp_path):
    shards, out, _ = scored
    limits = thresholds(out, keep_fraction=0.5)
    scores = all_scores(out)
    for lang in LANGUAGES:  # the quantile keeps about half of each language
        kept = np.mean(np.asarray(scores[lang]) >= limits[lang])
        assert 0.45 <= kept <= 0.55, (lang, kept)
    counts = filter_shards(shards, out, limits, tmp_path / "filtered")
    filtered = expand_shards(str(tmp_path / "filtered"))
    assert [p.rsplit("/", 1)[1] for p in filtered] == [p.rsplit("/", 1)[1] for p in shards]
    after = list(iter_raw_samples(filtered, SkipCounter()))
    assert len(after) == counts["samples_kept"] < counts["samples_in"] == 240
    by_key = {}
    for shard in shards:
        by_key.update({k: v for k, v in read_scores(out, shard).items()})
    before = {s["__key__"]: s for s in iter_raw_samples(shards, SkipCounter())}
    for sample in after:
        original = before[sample["__key__"]]
        assert sample["jpg"] == original["jpg"]
        for lang, texts in json.loads(sample["json"])["captions"].items():
            assert lang in LANGUAGES and texts
            for text in texts:
                assert by_key[sample["__key__"], lang, content_hash(text)] >= limits[lang]
    for lang in LANGUAGES:
        assert counts["captions"][lang]["kept"] == pytest.approx(
            0.5 * counts["captions"][lang]["in"], rel=0.15
        )


def test_thresholds_from_a_file_and_a_missing_one(scored):
    _, out, _ = scored
    assert thresholds(out, min_score=0.1) == {"en": 0.1, "de": 0.1}
    assert thresholds(out, min_score=0.1, by_language={"deu": 0.3}) == {"en": 0.1, "de": 0.3}
    with pytest.raises(ConfigError, match="no threshold for the scored language"):
        thresholds(out, by_language={"en": 0.2})


def test_the_cli_scores_reports_and_filters(demo_data, tmp_path, capsys):
    from mclip.cli import main

    cfg = tiny_model_config()
    DualEncoder(cfg.model).save(tmp_path / "model", cfg)
    shard = expand_shards(str(demo_data / "train"))[0]
    assert (
        main(
            [
                "data",
                "score",
                shard,
                "--model",
                str(tmp_path / "model"),
                "--out",
                str(tmp_path / "scores"),
                "--languages",
                "en,sw",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "| en | 720 |" in out and "| sw | 720 |" in out  # 120 samples x 6 phrasings
    for name in ("histograms.png", "histograms.csv", "quantiles.csv"):
        assert (tmp_path / "scores" / name).stat().st_size > 0
    assert (
        main(
            [
                "data",
                "filter",
                shard,
                "--scores",
                str(tmp_path / "scores"),
                "--out",
                str(tmp_path / "kept"),
                "--keep-fraction",
                "0.25",
            ]
        )
        == 0
    )
    assert "wrote 1 shards" in capsys.readouterr().out
    assert (
        main(
            [
                "data",
                "filter",
                shard,
                "--scores",
                str(tmp_path / "scores"),
                "--out",
                str(tmp_path / "kept2"),
            ]
        )
        == 2
    )
    assert "--keep-fraction" in capsys.readouterr().err


def test_training_leaves_out_captions_below_the_threshold(scored, demo_data, tmp_path):
    """data.scores + data.min_score: every caption trained on reaches its threshold; the others
    are counted."""
    from collections import Counter

    from conftest import log_records, tiny_overrides
    from mclip.config import load_config
    from mclip.data.curation import ScoreFilter
    from mclip.data.languages import LanguagePolicy
    from mclip.data.pipeline import TrainStream
    from mclip.models.dual import ImageTransform
    from mclip.train.trainer import train
    from test_resume import DEMO

    shards, out, _ = scored
    limits = thresholds(out, keep_fraction=0.5)
    stream = iter(
        TrainStream(
            shards,
            ImageTransform(32, [0.5] * 3, [0.5] * 3),
            LanguagePolicy(languages=LANGUAGES),
            batch_size=16,
            seed=1,
            score_filter=ScoreFilter(out, limits),
        )
    )
    scores, skipped = {}, Counter()
    for shard in shards:
        scores.update(read_scores(out, shard))
    for _ in range(10):
        batch = next(stream)
        skipped.update(batch["skipped"])
        for key, text, lang in zip(batch["keys"], batch["texts"], batch["languages"]):
            assert scores[key, lang, content_hash(text)] >= limits[lang]
    assert skipped["below_min_score"] > 0 and "unscored" not in skipped

    run = tmp_path / "run"
    cfg = load_config(
        DEMO,
        tiny_overrides(demo_data, run)
        + [
            f"data.train_shards={','.join(shards)}",
            f"data.scores={out}",
            "data.min_score=-1",
            f"data.min_score_by_language={{de: {limits['de']}, en: {limits['en']}}}",
            "data.languages=[en,de]",
            "train.steps=2",
        ],
    )
    train(cfg, quiet=True)
    end = next(r for r in log_records(run) if r.get("event") == "end")
    assert end["skipped"]["below_min_score"] > 0
    with pytest.raises(ConfigError, match="needs data.scores"):
        load_config(DEMO, ["data.min_score=0.2"])
    with pytest.raises(ConfigError, match="no threshold"):
        load_config(DEMO, [f"data.scores={out}"])


def test_ranks_split_the_shards_and_together_score_what_one_process_does(scored, model, tmp_path):
    shards, out, _ = scored
    summaries = [
        write_scores(
            model,
            "tiny",
            shards,
            tmp_path,
            batch_size=50,
            languages=LANGUAGES,
            rank=rank,
            world_size=2,
        )
        for rank in (0, 1)
    ]
    assert [s["shards"] for s in summaries] == [1, 1]
    for shard in shards:
        assert read_scores(tmp_path, shard) == pytest.approx(read_scores(out, shard), abs=1e-6)
