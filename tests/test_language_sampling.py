"""`mclip data index` and language sampling by temperature: p(lang) proportional to n^(1/T)."""

import io
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import webdataset as wds
from PIL import Image

from mclip.config import ConfigError
from mclip.data.index import (
    build_index,
    language_sampling,
    load_index,
    temperature_factors,
    write_index,
)
from mclip.data.languages import LanguagePolicy
from mclip.data.pipeline import TrainStream
from mclip.models.dual import ImageTransform

ROOT = Path(__file__).resolve().parents[1]
TRANSFORM = ImageTransform(8, [0.5] * 3, [0.5] * 3)
COUNTS = {"en": 800, "deu": 100, "sw": 100}  # "deu" is normalised to "de"


def _jpeg():
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 200, 10)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _shards(folder: Path, n_shards=2) -> list[str]:
    """Single-caption samples (the LAION-2B-multi layout): 800 en, 100 de, 100 sw."""
    folder.mkdir(parents=True, exist_ok=True)
    langs = [lang for lang, n in COUNTS.items() for _ in range(n)]
    image = _jpeg()
    paths = [str(folder / f"shard-{i}.tar") for i in range(n_shards)]
    writers = [wds.TarWriter(p) for p in paths]
    for i, lang in enumerate(langs):
        writers[i % n_shards].write(
            {
                "__key__": f"{i:05d}",
                "jpg": image,
                "txt": f"caption {i}".encode(),
                "json": json.dumps({"LANGUAGE": lang}).encode(),
            }
        )
    for writer in writers:
        writer.close()
    return paths


def test_index_counts_languages_per_shard_and_detects_staleness(tmp_path):
    shards = _shards(tmp_path / "s")
    index = build_index(shards)
    assert index["samples"] == 1000
    assert index["languages"] == {"en": 800, "de": 100, "sw": 100}
    assert sum(s["samples"] for s in index["shards"].values()) == 1000
    path = write_index(index, tmp_path / "s" / "mclip_index.json")
    assert load_index(shards) == json.loads(path.read_text())
    assert load_index(shards[:1])["samples"] == 500  # an index of a superset serves a subset
    with open(shards[1], "ab") as handle:  # the shard changed after indexing
        handle.write(b"\0" * 512)
    with pytest.raises(ConfigError, match="older than shard .*shard-1.tar.*mclip data index"):
        load_index(shards)


def test_temperature_factors_give_the_target_mix():
    counts = {"en": 800, "de": 100, "sw": 100}
    assert temperature_factors(counts, 1.0) == {"en": 1.0, "de": 1.0, "sw": 1.0}
    for t in (2.0, 5.0):
        factors = temperature_factors(counts, t)
        kept = {lang: counts[lang] * factors[lang] for lang in counts}
        target = {lang: n ** (1 / t) for lang, n in counts.items()}
        for lang in counts:
            assert kept[lang] / sum(kept.values()) == pytest.approx(
                target[lang] / sum(target.values()), rel=1e-12
            )
        assert max(factors.values()) == 1.0 and factors["de"] == 1.0
    with pytest.raises(ConfigError, match="language_temperature"):
        temperature_factors(counts, 0)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 100.0])
@pytest.mark.slow
def test_the_stream_follows_the_temperature_mix(tmp_path, temperature):
    shards = _shards(tmp_path / "s")
    write_index(build_index(shards), tmp_path / "s" / "mclip_index.json")
    factors, record, sets = language_sampling(shards, temperature)
    assert record["samples"] == 1000
    target_mix = LanguagePolicy(keep_factors=factors).expected_mix(sets)
    stream = TrainStream(
        shards,
        TRANSFORM,
        LanguagePolicy(keep_factors=factors),
        batch_size=50,
        shuffle_size=100,
        seed=3,
    )
    seen, skipped, batches = Counter(), Counter(), iter(stream)
    for _ in range(80):  # 4000 samples: several passes
        batch = next(batches)
        seen.update(batch["languages"])
        skipped.update(batch["skipped"])
    share = {lang: seen[lang] / sum(seen.values()) for lang in ("en", "de", "sw")}
    target = {lang: n ** (1 / temperature) for lang, n in {"en": 800, "de": 100, "sw": 100}.items()}
    for lang in share:
        assert share[lang] == pytest.approx(target[lang] / sum(target.values()), abs=0.03), share
    assert target_mix["en"] == pytest.approx(target["en"] / sum(target.values()), abs=1e-3)
    if temperature == 1.0:
        assert "downsampled_by_language_temperature" not in skipped
    else:  # what was dropped is counted, never silent
        assert skipped["downsampled_by_language_temperature"] > 0


def test_no_index_is_said_at_t1_and_an_error_otherwise(tmp_path):
    shards = _shards(tmp_path / "s", n_shards=1)
    factors, record, _ = language_sampling(shards, 1.0)
    assert factors == {} and record["index"] is None and "mclip data index" in record["note"]
    with pytest.raises(ConfigError, match="no index at .*mclip data index"):
        language_sampling(shards, 3.0)


def test_cli_data_index(tmp_path):
    shards = _shards(tmp_path / "s")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mclip.cli",
            "data",
            "index",
            str(tmp_path / "s" / "shard-{0..1}.tar"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert "1000 samples, 3 languages (en 800, de 100, sw 100)" in result.stdout
    assert load_index(shards)["languages"]["de"] == 100


def test_training_logs_the_language_mix_it_samples(demo_data, tmp_path):
    from conftest import tiny_overrides
    from mclip.config import load_config
    from mclip.data.shards import expand_shards
    from mclip.train.trainer import train

    index_path = tmp_path / "index.json"
    write_index(build_index(expand_shards(str(demo_data / "train"))), index_path)
    run = tmp_path / "run"
    cfg = load_config(
        ROOT / "configs" / "demo.yaml",
        tiny_overrides(demo_data, run)
        + ["train.steps=2", "data.language_temperature=2", f"data.index={index_path}"],
    )
    train(cfg, quiet=True)
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    event = next(r for r in records if r.get("event") == "languages")
    assert event["index"] == str(index_path) and event["temperature"] == 2.0
    assert len(event["target_mix"]) == 12  # every demo image has all 12 languages: mix uniform
    assert all(v == pytest.approx(1 / 12, abs=1e-3) for v in event["target_mix"].values())
    step = next(r for r in records if r.get("step") == 2 and "loss" in r)
    assert sum(step["languages"].values()) == 2 * 32  # log_every=2: one interval of 2 batches


def _mixed_shards(folder: Path, n_shards=2) -> list[str]:
    """Samples with different sets of caption languages, and some no training can use:
    400 {en}, 200 {en, de}, 200 {de, fr, sw}, 100 {sw}; 100 {fr} without an image member."""
    folder.mkdir(parents=True, exist_ok=True)
    kinds = (
        [["en"]] * 400
        + [["en", "de"]] * 200
        + [["de", "fr", "sw"]] * 200
        + [["sw"]] * 100
        + [None] * 100
    )
    image = _jpeg()
    paths = [str(folder / f"mixed-{i}.tar") for i in range(n_shards)]
    writers = [wds.TarWriter(p) for p in paths]
    for i, languages in enumerate(kinds):
        captions = {
            lang: [f"{lang} caption {i}", f"{lang} other {i}"] for lang in languages or ["fr"]
        }
        sample = {"__key__": f"{i:05d}", "json": json.dumps({"captions": captions}).encode()}
        if languages is not None:
            sample["jpg"] = image
        writers[i % n_shards].write(sample)
    for writer in writers:
        writer.close()
    return paths


def test_the_index_counts_only_samples_training_can_use(tmp_path):
    index = build_index(_mixed_shards(tmp_path / "m"))
    assert index["samples"] == 900 and index["skipped"]["missing_image"] == 100
    assert index["languages"] == {"en": 600, "de": 400, "sw": 300, "fr": 200}
    assert index["language_sets"] == {"en": 400, "de,en": 200, "de,fr,sw": 200, "sw": 100}


@pytest.mark.parametrize(
    "restriction,temperature,per_image",
    [
        ({"languages": ["en", "de", "sw"]}, 1.0, 1),
        ({"languages": ["en", "de", "sw"]}, 2.0, 1),
        ({"sources": [{"name": "mixed", "languages": ["de", "fr"]}]}, 3.0, 1),
        ({"languages": ["en", "de", "sw"]}, 2.0, 2),
        ({}, 1.0, 1),
    ],
)
@pytest.mark.slow
def test_the_logged_target_mix_is_what_the_stream_draws(
    tmp_path, restriction, temperature, per_image
):
    from mclip.config import config_from_dict
    from mclip.data.sources import build_sources

    shards = _mixed_shards(tmp_path / "m")
    write_index(build_index(shards), tmp_path / "m" / "mclip_index.json")
    spec = ",".join(shards)
    data = {
        "train_shards": spec,
        "language_temperature": temperature,
        "num_workers": 0,
        "captions_per_image": per_image,
        **restriction,
    }
    if "sources" in data:
        data["sources"] = [{**s, "shards": spec} for s in data["sources"]]
    sources, records = build_sources(config_from_dict({"data": data}).data, world_size=1)
    target = next(iter(records.values()))["sampling"]["target_mix"]
    allowed = set(
        restriction.get("languages")
        or (restriction.get("sources") or [{}])[0].get("languages")
        or ["en", "de", "fr", "sw"]
    )
    assert set(target) == allowed  # never a language the policy cannot draw
    stream = iter(
        TrainStream(
            sources,
            TRANSFORM,
            None,
            batch_size=50,
            shuffle_size=100,
            seed=5,
            captions_per_image=per_image,
        )
    )
    seen = Counter()
    for _ in range(120):  # 6000 images: several passes
        seen.update(next(stream)["languages"])
    measured = {lang: n / sum(seen.values()) for lang, n in seen.items()}
    assert set(measured) == set(target)
    for lang in target:
        assert measured[lang] == pytest.approx(target[lang], abs=0.03), (measured, target)


def test_an_index_matches_shards_however_they_are_named(tmp_path):
    """Relative, absolute, from another directory, or the data set moved with its index."""
    import shutil

    folder = tmp_path / "data"
    _mixed_shards(folder)
    relative = ["data/mixed-0.tar", "data/mixed-1.tar"]
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        write_index(build_index(relative), folder / "mclip_index.json")
        assert load_index(relative)["samples"] == 900
        os.chdir(folder)
        assert load_index(["mixed-0.tar", "./mixed-1.tar"])["samples"] == 900
    finally:
        os.chdir(cwd)
    absolute = [str(folder / "mixed-0.tar"), str(folder / "mixed-1.tar")]
    assert load_index(absolute)["samples"] == 900
    assert load_index(absolute[:1])["samples"] == 450
    moved = tmp_path / "moved"
    shutil.copytree(folder, moved)  # copy2: names, sizes and times kept
    assert load_index([str(moved / "mixed-0.tar"), str(moved / "mixed-1.tar")])["samples"] == 900


def test_a_stale_index_is_a_warning_at_t1_and_an_error_otherwise(tmp_path):
    shards = _mixed_shards(tmp_path / "m")
    write_index(build_index(shards[:1]), tmp_path / "m" / "mclip_index.json")  # lacks a shard
    factors, record, sets = language_sampling(shards, 1.0)
    assert factors == {} and sets is None and record["index"] is None
    assert "does not list shard" in record["warning"] and "Temperature 1" in record["warning"]
    with pytest.raises(ConfigError, match="does not list shard"):
        language_sampling(shards, 2.0)


def test_training_at_t1_with_an_index_of_other_shards_runs_and_warns(demo_data, tmp_path):
    from conftest import log_records, tiny_overrides
    from mclip.config import load_config
    from mclip.train.trainer import train

    index_path = tmp_path / "index.json"  # an index of two of the four training shards
    write_index(
        build_index([str(p) for p in sorted((demo_data / "train").glob("*.tar"))][:2]), index_path
    )
    run = tmp_path / "run"
    train(
        load_config(
            ROOT / "configs" / "demo.yaml",
            tiny_overrides(demo_data, run) + ["train.steps=2", f"data.index={index_path}"],
        ),
        quiet=True,
    )
    event = next(r for r in log_records(run) if r.get("event") == "languages")
    assert "does not list shard" in event["warning"] and event["index"] is None
