"""data.sources: several shard sets mixed by weight, each with its own language restriction."""

import json

import pytest

from conftest import log_records, run_cli, tiny_overrides
from mclip.config import ConfigError, config_from_dict
from mclip.data.languages import LanguagePolicy
from mclip.data.pipeline import Source, TrainStream
from mclip.data.sources import build_sources
from test_data import TRANSFORM, _txt_sample, _write


def _source_shards(tmp_path, prefix, n_shards, per_shard, captions):
    """Shards whose sample keys restart at 0 in every source (keys may collide across sources)."""
    paths = []
    for s in range(n_shards):
        path = tmp_path / f"{prefix}-{s}.tar"
        _write(
            path,
            [
                {
                    **_txt_sample(str(s * per_shard + i), "unused"),
                    "json": json.dumps({"captions": captions}).encode(),
                }
                for i in range(per_shard)
            ],
        )
        paths.append(str(path))
    return paths


def _two_sources(tmp_path, weights=(3.0, 1.0)):
    big = _source_shards(tmp_path, "big", 2, 40, {"en": ["a photo"], "de": ["ein Foto"]})
    small = _source_shards(tmp_path, "small", 2, 10, {"fr": ["une photo"], "sw": ["picha"]})
    return [
        Source("big", big, LanguagePolicy(languages=["de"]), weights[0]),
        Source("small", small, LanguagePolicy(), weights[1]),
    ]


def test_batches_mix_sources_by_weight_and_keep_each_language_restriction(tmp_path):
    stream = TrainStream(_two_sources(tmp_path), TRANSFORM, None, 8, shuffle_size=4, seed=1)
    counts = {"big": 0, "small": 0}
    for _, batch in zip(range(50), stream):
        for source, language in zip(batch["sources"], batch["languages"]):
            counts[source] += 1
            assert language == "de" if source == "big" else language in ("fr", "sw")
        pairs = list(zip(batch["sources"], batch["keys"]))
        # never a sample twice; equal keys of two sources are fine
        assert len(set(pairs)) == len(pairs)
    share = counts["big"] / 400
    assert 0.70 < share < 0.80, counts  # weight 3:1 -> 0.75 (binomial sd 0.022)
    # the small source (20 samples) wraps around many times, never twice in one batch
    assert counts["small"] > 20


def test_a_source_that_cannot_fill_its_slots_stops_with_its_name(tmp_path):
    sources = _two_sources(tmp_path, weights=(1.0, 1000.0))
    sources[1].shards = sources[1].shards[:1]  # 10 samples, almost all 16 slots
    with pytest.raises(Exception, match="source 'small'.*hold 10 usable sample.*batch of 16"):
        next(iter(TrainStream(sources, TRANSFORM, None, 16, shuffle_size=1)))


def test_resume_from_a_position_replays_the_mixed_stream_exactly(tmp_path):
    sources = _two_sources(tmp_path)
    full = [
        b
        for _, b in zip(
            range(9), TrainStream(sources, TRANSFORM, None, 8, shuffle_size=5, seed=4, augment=True)
        )
    ]
    resumed = TrainStream(
        sources,
        TRANSFORM,
        None,
        8,
        shuffle_size=5,
        seed=4,
        augment=True,
        positions={0: full[3]["position"]},
        batches_done=4,
    )
    for expected, got in zip(full[4:], resumed):
        assert got["keys"] == expected["keys"] and got["sources"] == expected["sources"]
        assert got["texts"] == expected["texts"]
        assert got["images"].equal(expected["images"])


def test_source_config_is_checked_with_the_key_named(tmp_path):
    cfg = config_from_dict(
        {"data": {"sources": [{"shards": "a.tar", "weight": 2}, {"name": "mt", "shards": "b.tar"}]}}
    )
    assert [s.name for s in cfg.data.sources] == ["source0", "mt"]
    assert cfg.data.sources[0].weight == 2.0
    bad = [
        ({"shards": "a.tar", "wieght": 2}, "Did you mean 'data.sources\\[0\\].weight'"),
        ({"shards": "a.tar", "weight": 0}, "data.sources\\[0\\].weight' must be a number > 0"),
        ({"shards": ""}, "data.sources\\[0\\].shards' is empty"),
        ({"shards": "a.tar", "languages": ["klingonish"]}, "data.sources\\[0\\].languages"),
    ]
    for source, message in bad:
        with pytest.raises(ConfigError, match=message):
            config_from_dict({"data": {"sources": [source]}})
    with pytest.raises(ConfigError, match="'x' names two sources"):
        config_from_dict(
            {"data": {"sources": [{"name": "x", "shards": "a"}, {"name": "x", "shards": "b"}]}}
        )
    with pytest.raises(ConfigError, match="expected a list of mappings"):
        config_from_dict({"data": {"sources": "a.tar"}})
    missing = config_from_dict(
        {"data": {"sources": [{"shards": str(tmp_path / "none-{0..1}.tar")}]}}
    )
    with pytest.raises(ConfigError, match="data.sources\\[0\\].shards.*do not exist"):
        build_sources(missing.data, world_size=1)


@pytest.mark.slow
def test_training_on_two_sources_logs_what_each_interval_saw(demo_data, tmp_path):
    shards = sorted(str(p) for p in (demo_data / "train").glob("*.tar"))
    out = tmp_path / "run"
    first, second = ",".join(shards[: len(shards) // 2]), ",".join(shards[len(shards) // 2 :])
    sources = (
        f"data.sources=[{{name: a, shards: '{first}', weight: 1, languages: [de]}}, "
        f"{{name: b, shards: '{second}', weight: 1}}]"
    )
    run = run_cli(
        "train",
        "--config",
        "configs/demo.yaml",
        *tiny_overrides(demo_data, out),
        sources,
        "train.steps=4",
        "train.batch_size=8",
        "data.captions_per_image=2",
    )
    assert run.returncode == 0, run.stderr[-2000:]
    records = log_records(out)
    event = next(r for r in records if r.get("event") == "sources")
    assert event["a"]["share"] == 0.5 and event["a"]["languages"] == ["de"]
    steps = [r for r in records if "loss" in r]
    assert len(steps) == 2
    for record in steps:
        assert set(record["sources"]) == {"a", "b"}
        assert sum(record["sources"].values()) == 2 * 8  # images of 2 steps, batch 8
        assert sum(record["languages"].values()) == 2 * 8 * 2  # two captions per image
