import io
import json
import random
import unicodedata
from pathlib import Path

import pytest
import torch
import webdataset as wds
from PIL import Image

from mclip.config import ConfigError
from mclip.data.demo_language import CLASSES, LANGUAGES, class_names
from mclip.data.languages import LanguagePolicy
from mclip.data.pipeline import TrainStream
from mclip.data.shards import (
    DataError,
    SkipCounter,
    check_shard_count,
    expand_shards,
    iter_raw_samples,
)
from mclip.models.dual import ImageTransform

TRANSFORM = ImageTransform(32, [0.5] * 3, [0.5] * 3)


def _jpeg(colour=(200, 10, 10)):
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def _write(path: Path, samples: list[dict]):
    with wds.TarWriter(str(path)) as sink:
        for sample in samples:
            sink.write(sample)


def test_webdataset_version_reads_generated_shards(demo_data):
    """The installed webdataset (1.x API) reads the shards mclip writes, every member intact."""
    shards = expand_shards(str(demo_data / "train"))
    assert len(shards) == 4
    counter = SkipCounter()
    samples = list(iter_raw_samples(shards, counter))
    assert len(samples) == 480 and not counter
    meta = json.loads(samples[0]["json"])
    assert set(meta["captions"]) == set(LANGUAGES)
    assert Image.open(io.BytesIO(samples[0]["jpg"])).size == (32, 32)
    assert samples[0]["txt"].decode() in meta["captions"]["en"]


def test_demo_dataset_layout(demo_data):
    summary = json.loads((demo_data / "dataset.json").read_text())
    assert summary["counts"] == {"train": 480, "eval": 48, "retrieval": 24}
    names = json.loads((demo_data / "classnames" / "de_classnames.json").read_text())
    assert names["demo_shapes"] == class_names("de")
    retrieval = list(iter_raw_samples(expand_shards(str(demo_data / "retrieval")), SkipCounter()))
    captions = [c for s in retrieval for c in json.loads(s["json"])["captions"]["fr"]]
    # every retrieval caption describes exactly one image of the split
    owners = {}
    for s in retrieval:
        for c in json.loads(s["json"])["captions"]["fr"]:
            owners.setdefault(c, set()).add(s["__key__"])
    assert all(len(v) == 1 for v in owners.values()) and len(captions) == 72


def test_stream_skips_and_counts_bad_samples(tmp_path):
    good = {"jpg": _jpeg(), "json": json.dumps({"captions": {"en": ["a red square"]}}).encode()}
    _write(
        tmp_path / "a.tar",
        [
            {"__key__": "0", **good},
            {"__key__": "1", "jpg": b"definitely not a jpeg", "txt": b"a broken image"},
            {"__key__": "2", "jpg": _jpeg(), "txt": b"   "},
            {
                "__key__": "3",
                "jpg": _jpeg(),
                "json": json.dumps({"captions": {"de": [""]}}).encode(),
            },
            {"__key__": "4", "txt": b"caption without image"},
            {"__key__": "5", **good},
        ],
    )
    stream = TrainStream(
        [str(tmp_path / "a.tar")], TRANSFORM, LanguagePolicy(), batch_size=2, shuffle_size=1
    )
    batch = next(iter(stream))
    assert batch["keys"] == ["0", "5"]
    assert batch["images"].shape == (2, 3, 32, 32)
    assert batch["texts"] == ["a red square"] * 2
    assert batch["skipped"] == {"corrupt_image": 1, "empty_caption": 2, "missing_image": 1}


def test_truncated_shard_is_counted_not_fatal(tmp_path, demo_data):
    whole = Path(expand_shards(str(demo_data / "train"))[0]).read_bytes()
    (tmp_path / "cut.tar").write_bytes(whole[: len(whole) // 2 + 100])
    (tmp_path / "whole.tar").write_bytes(whole)
    counter = SkipCounter()
    samples = list(
        iter_raw_samples([str(tmp_path / "cut.tar"), str(tmp_path / "whole.tar")], counter)
    )
    assert counter["unreadable_shard_or_member"] >= 1
    assert len(samples) >= 120  # everything of the intact shard, and what was readable before


def test_all_bad_data_raises_instead_of_training_on_nothing(tmp_path):
    _write(tmp_path / "bad.tar", [{"__key__": str(i), "jpg": b"x", "txt": b"y"} for i in range(3)])
    stream = TrainStream([str(tmp_path / "bad.tar")], TRANSFORM, LanguagePolicy(), batch_size=2)
    with pytest.raises(DataError, match="hold 0 usable sample.*corrupt_image"):
        next(iter(stream))


def test_stream_in_dataloader_workers_splits_shards(demo_data):
    shards = expand_shards(str(demo_data / "train"))
    stream = TrainStream(shards, TRANSFORM, LanguagePolicy(), batch_size=60, shuffle_size=10)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=2)
    keys = []
    for _, batch in zip(range(8), loader):
        keys.extend(batch["keys"])
    assert len(set(keys)) == 480  # two workers, two shards each, one pass: no duplicates


def test_shard_errors_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="do not exist.*mclip data demo"):
        expand_shards(str(tmp_path / "shard-{000..003}.tar"))
    with pytest.raises(ConfigError, match="matches no shard"):
        expand_shards(str(tmp_path))
    with pytest.raises(ConfigError, match="lower 'data.num_workers' to 1"):
        check_shard_count(2, world_size=2, num_workers=4)
    with pytest.raises(ConfigError, match="at least 4 shards"):
        check_shard_count(1, world_size=2, num_workers=2)
    check_shard_count(8, world_size=2, num_workers=4)


def test_language_policies():
    rng = random.Random(0)
    uniform = LanguagePolicy("uniform")
    counts = {}
    for _ in range(3000):
        lang = uniform.choose(["en", "de", "zh"], rng)
        counts[lang] = counts.get(lang, 0) + 1
    assert all(900 < c < 1100 for c in counts.values())
    weighted = LanguagePolicy("weighted", weights={"en": 3.0, "de": 1.0})
    picks = [weighted.choose(["en", "de", "zh"], rng) for _ in range(4000)]
    assert "zh" not in picks and 0.7 < picks.count("en") / len(picks) < 0.8
    restricted = LanguagePolicy("uniform", languages=["sw"])
    assert restricted.choose(["en", "de"], rng) is None
    assert restricted.choose(["en", "sw"], rng) == "sw"


def _scripts(text):
    return {unicodedata.name(ch).split()[0] for ch in text if ch.isalpha()}


def test_demo_captions_cover_12_languages_5_scripts():
    assert {"en", "de", "fr", "es", "it", "pt", "ru", "zh", "ja", "ar", "hi", "sw"} <= set(
        LANGUAGES
    )
    scripts = set()
    for code in LANGUAGES:
        for colour, shape in CLASSES:
            captions = LANGUAGES[code].captions(colour, shape)
            assert len(set(captions)) >= 5, (code, colour, shape)
            scripts |= _scripts(" ".join(captions))
        assert len(set(class_names(code))) == 24, code
    assert {"LATIN", "CYRILLIC", "CJK", "ARABIC", "DEVANAGARI"} <= scripts


@pytest.mark.parametrize(
    "lang,colour,shape,expected",
    [
        ("en", "orange", "circle", "an orange circle"),
        ("en", "red", "star", "a red star"),
        ("de", "red", "circle", "ein roter Kreis"),
        ("de", "red", "square", "ein rotes Quadrat"),
        ("fr", "green", "star", "une étoile verte"),
        ("fr", "green", "circle", "un cercle vert"),
        ("es", "yellow", "star", "una estrella amarilla"),
        ("it", "red", "star", "una stella rossa"),
        ("pt", "purple", "star", "uma estrela roxa"),
        ("ru", "blue", "star", "синяя звезда"),
        ("ru", "blue", "circle", "синий круг"),
        ("zh", "red", "circle", "红色圆形"),
        ("ja", "red", "circle", "赤い円"),
        ("ja", "green", "circle", "緑の円"),
        ("ar", "red", "circle", "دائرة حمراء"),
        ("ar", "red", "square", "مربع أحمر"),
        ("hi", "green", "star", "एक हरा तारा"),
        ("sw", "red", "square", "mraba mwekundu"),
        ("sw", "red", "star", "nyota nyekundu"),
        ("sw", "green", "square", "mraba wa kijani"),
    ],
)
def test_demo_grammar(lang, colour, shape, expected):
    assert LANGUAGES[lang].class_name(colour, shape) == expected


def test_demo_grammar_cases():
    assert "Das Bild zeigt einen roten Kreis." in LANGUAGES["de"].captions("red", "circle")
    assert "Мы видим синюю звезду." in LANGUAGES["ru"].captions("blue", "star")
    assert "एक हरे तारे की तस्वीर" in LANGUAGES["hi"].captions("green", "star")
    assert "Huu ni mraba wa kijani." in LANGUAGES["sw"].captions("green", "square")
    assert "تظهر في الصورة دائرة حمراء." in LANGUAGES["ar"].captions("red", "circle")


def _txt_sample(key, caption, meta=None):
    sample = {"__key__": key, "jpg": _jpeg(), "txt": caption.encode()}
    if meta is not None:
        sample["json"] = json.dumps(meta).encode()
    return sample


def test_txt_caption_takes_its_language_from_the_metadata(tmp_path):
    """img2dataset writes LAION-2B-multi captions to KEY.txt with "LANGUAGE" in KEY.json."""
    _write(
        tmp_path / "a.tar",
        [
            _txt_sample("0", "ein roter Kreis", {"LANGUAGE": "de", "url": "http://x"}),
            _txt_sample("1", "un cercle rouge", {"language": "fr"}),
            _txt_sample("2", "a red circle", {"similarity": 0.3}),
            _txt_sample("3", "un cercle rouge", {"lang_code": "fr", "LANGUAGE": "xx"}),
        ],
    )
    shard = [str(tmp_path / "a.tar")]
    batch = next(iter(TrainStream(shard, TRANSFORM, LanguagePolicy(), 4, shuffle_size=1)))
    assert batch["languages"] == ["de", "fr", "en", "und"]
    custom = TrainStream(
        shard,
        TRANSFORM,
        LanguagePolicy(),
        4,
        shuffle_size=1,
        default_language="sw",
        language_key="lang_code",
    )
    assert next(iter(custom))["languages"] == ["sw", "sw", "sw", "fr"]
    # with data.languages the German caption is used, not dropped as "English"
    german = TrainStream(shard, TRANSFORM, LanguagePolicy(languages=["de"]), 1, shuffle_size=1)
    assert next(iter(german))["texts"] == ["ein roter Kreis"]


def test_captions_field_that_is_not_a_mapping_is_bad_metadata(tmp_path):
    _write(
        tmp_path / "a.tar",
        [
            _txt_sample("0", "a red circle", {"captions": ["a red circle", "a circle"]}),
            _txt_sample("1", "a blue star", {"captions": "a blue star"}),
            _txt_sample("2", "a green square", [1, 2]),
        ],
    )
    batch = next(
        iter(TrainStream([str(tmp_path / "a.tar")], TRANSFORM, LanguagePolicy(), 3, shuffle_size=1))
    )
    assert batch["texts"] == ["a red circle", "a blue star", "a green square"]
    assert batch["skipped"] == {"bad_metadata": 3}


def test_shuffle_buffer_zero_means_no_shuffle(tmp_path):
    _write(tmp_path / "a.tar", [_txt_sample(str(i), f"caption {i}") for i in range(6)])
    stream = TrainStream([str(tmp_path / "a.tar")], TRANSFORM, LanguagePolicy(), 6, shuffle_size=0)
    assert next(iter(stream))["keys"] == [str(i) for i in range(6)]


def test_one_bad_shard_does_not_stop_a_healthy_run(tmp_path):
    _write(
        tmp_path / "a-bad.tar", [{"__key__": f"b{i}", "jpg": b"x", "txt": b"y"} for i in range(4)]
    )
    _write(tmp_path / "b-good.tar", [_txt_sample(f"g{i}", f"caption {i}") for i in range(8)])
    shards = [str(tmp_path / "a-bad.tar"), str(tmp_path / "b-good.tar")]
    stream = TrainStream(shards, TRANSFORM, LanguagePolicy(), 4, shuffle_size=1)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=2)
    batches = [b for _, b in zip(range(4), loader)]
    assert all(k.startswith("g") for b in batches for k in b["keys"])
    # rank 0 of 2 owns only the bad shard: it reads the whole list instead of failing
    rank0 = TrainStream(shards, TRANSFORM, LanguagePolicy(), 4, shuffle_size=1, world_size=2)
    batch = next(iter(rank0))
    assert batch["skipped"]["reader_fell_back_to_all_shards"] == 1 and len(batch["keys"]) == 4


def test_a_sample_is_never_twice_in_a_batch(tmp_path):
    _write(tmp_path / "a.tar", [_txt_sample(str(i), f"caption {i}") for i in range(5)])
    stream = TrainStream([str(tmp_path / "a.tar")], TRANSFORM, LanguagePolicy(), 4, shuffle_size=3)
    for _, batch in zip(range(6), stream):
        assert len(set(batch["keys"])) == 4, batch["keys"]
    small = TrainStream([str(tmp_path / "a.tar")], TRANSFORM, LanguagePolicy(), 6, shuffle_size=3)
    with pytest.raises(DataError, match="hold 5 usable sample.*batch of 6"):
        next(iter(small))


def test_stream_leaves_torch_global_rng_alone(tmp_path):
    """The trainer owns torch's RNG (restored on --resume, seeded per rank for dropout)."""
    _write(tmp_path / "a.tar", [_txt_sample(str(i), f"caption {i}") for i in range(8)])
    torch.manual_seed(123)
    before = torch.get_rng_state()
    next(iter(TrainStream([str(tmp_path / "a.tar")], TRANSFORM, LanguagePolicy(), 4, seed=3)))
    assert torch.equal(torch.get_rng_state(), before)
    stream = TrainStream(
        [str(tmp_path / "a.tar")],
        TRANSFORM,
        LanguagePolicy(),
        4,
        shuffle_size=4,
        augment=True,
        seed=3,
    )
    first = next(iter(stream))
    assert torch.equal(torch.get_rng_state(), before)
    again = next(iter(stream))  # the same seed gives the same order and the same flips
    assert first["keys"] == again["keys"] and torch.equal(first["images"], again["images"])
