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
from mclip.data.index import (build_index, language_sampling, load_index, temperature_factors,
                              write_index)
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
        writers[i % n_shards].write({"__key__": f"{i:05d}", "jpg": image,
                                     "txt": f"caption {i}".encode(),
                                     "json": json.dumps({"LANGUAGE": lang}).encode()})
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
                target[lang] / sum(target.values()), rel=1e-12)
        assert max(factors.values()) == 1.0 and factors["de"] == 1.0
    with pytest.raises(ConfigError, match="language_temperature"):
        temperature_factors(counts, 0)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 100.0])
def test_the_stream_follows_the_temperature_mix(tmp_path, temperature):
    shards = _shards(tmp_path / "s")
    write_index(build_index(shards), tmp_path / "s" / "mclip_index.json")
    factors, record = language_sampling(shards, temperature)
    assert record["samples"] == 1000
    stream = TrainStream(shards, TRANSFORM, LanguagePolicy(keep_factors=factors), batch_size=50,
                         shuffle_size=100, seed=3)
    seen, skipped, batches = Counter(), Counter(), iter(stream)
    for _ in range(80):  # 4000 samples: several passes
        batch = next(batches)
        seen.update(batch["languages"])
        skipped.update(batch["skipped"])
    share = {lang: seen[lang] / sum(seen.values()) for lang in ("en", "de", "sw")}
    target = {lang: n ** (1 / temperature) for lang, n in {"en": 800, "de": 100, "sw": 100}.items()}
    for lang in share:
        assert share[lang] == pytest.approx(target[lang] / sum(target.values()), abs=0.03), share
    assert record["target_mix"]["en"] == pytest.approx(target["en"] / sum(target.values()), abs=1e-3)
    if temperature == 1.0:
        assert "downsampled_by_language_temperature" not in skipped
    else:  # what was dropped is counted, never silent
        assert skipped["downsampled_by_language_temperature"] > 0


def test_no_index_is_said_at_t1_and_an_error_otherwise(tmp_path):
    shards = _shards(tmp_path / "s", n_shards=1)
    factors, record = language_sampling(shards, 1.0)
    assert factors == {} and record["index"] is None and "mclip data index" in record["note"]
    with pytest.raises(ConfigError, match="no index at .*mclip data index"):
        language_sampling(shards, 3.0)


def test_cli_data_index(tmp_path):
    shards = _shards(tmp_path / "s")
    result = subprocess.run([sys.executable, "-m", "mclip.cli", "data", "index",
                             str(tmp_path / "s" / "shard-{0..1}.tar")], cwd=ROOT,
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
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
    cfg = load_config(ROOT / "configs" / "demo.yaml", tiny_overrides(demo_data, run) + [
        "train.steps=2", "data.language_temperature=2", f"data.index={index_path}"])
    train(cfg, quiet=True)
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    event = next(r for r in records if r.get("event") == "languages")
    assert event["index"] == str(index_path) and event["temperature"] == 2.0
    assert len(event["target_mix"]) == 12  # every demo image has all 12 languages: mix uniform
    assert all(v == pytest.approx(1 / 12, abs=1e-3) for v in event["target_mix"].values())
    step = next(r for r in records if r.get("step") == 2 and "loss" in r)
    assert sum(step["languages"].values()) == 2 * 32  # log_every=2: one interval of 2 batches
