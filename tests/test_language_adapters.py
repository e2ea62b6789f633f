"""LoRA language adapters (mclip adapt): train, save, load, apply to one language only, remove."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import tiny_model_config

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "eval_suites" / "demo.yaml"
SW = ["Picha ya mduara mwekundu.", "Kuna nyota ya kijani kwenye picha.", "Mchoro wa mraba."]
OTHERS = ["a picture of a red circle", "Auf dem Bild ist ein grüner Stern.", "一张红色圆形的图片。"]


@pytest.fixture
def checkpoint(tmp_path):
    """A saved tiny model (random weights): a checkpoint directory."""
    from mclip.models.dual import DualEncoder

    config = tiny_model_config()
    torch.manual_seed(0)
    DualEncoder(config.model, load_pretrained=False).save(tmp_path / "ckpt", config)
    return tmp_path / "ckpt"


def _settings(**overrides):
    from mclip.train.language_adapters import AdaptSettings

    return AdaptSettings(
        **{"steps": 4, "batch_size": 16, "lr": 0.05, "warmup_steps": 1, **overrides}
    )


def _load(directory, adapters=True):
    from mclip.models.adapters import load_model

    return load_model(directory, language_adapters=adapters)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@torch.no_grad()
def _encode(adapter, texts, language=None):
    with adapter.text_language(language):
        return adapter.encode_text(texts)


def test_round_trip_save_load_apply_remove(checkpoint, demo_data):
    from mclip.data.language_subset import read_caption_subset
    from mclip.models import lora
    from mclip.models.dual import DualEncoder
    from mclip.train.language_adapters import train_language_adapter

    model, _ = DualEncoder.load(checkpoint)
    model.eval()
    with torch.no_grad():
        base_sw, base_others = model.encode_text(SW), model.encode_text(OTHERS)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    data = read_caption_subset(str(demo_data / "train"), "sw", 64, seed=0)
    stats = train_language_adapter(model, data, _settings())
    assert stats["targets"] == ["query", "value"] and stats["trainable_parameters"] > 0

    with torch.no_grad(), lora.text_language(model, "sw"):
        trained_sw = model.encode_text(SW)
    assert (trained_sw - base_sw).abs().max() > 1e-3  # the adapter changes sw texts
    with torch.no_grad():  # off (the default), and for any other language: the base model
        assert torch.equal(model.encode_text(SW), base_sw)
        with lora.text_language(model, "de"):
            assert torch.equal(model.encode_text(OTHERS), base_others)
    base_now = {
        k.replace("base_model.model.", "").replace(".base_layer", ""): v
        for k, v in model.state_dict().items()
        if "lora_" not in k
    }
    assert base_now.keys() == weights.keys()
    assert all(torch.equal(base_now[k], weights[k]) for k in weights)  # base weights untouched

    lora.save_adapter(
        model,
        "sw",
        lora.adapters_dir(checkpoint) / "sw",
        {"base_weights_sha256": lora.weights_digest(checkpoint)},
    )
    lora.remove_language_adapters(model)
    assert lora.attached_languages(model) == []
    with torch.no_grad():  # removed: the base encoder itself again, bit for bit
        assert torch.equal(model.encode_text(SW), base_sw)
    assert model.state_dict().keys() == weights.keys()

    reloaded = _load(checkpoint)  # mclip eval's loader: adapters beside the checkpoint
    assert reloaded.adapter_languages == ("sw",)
    assert torch.equal(_encode(reloaded, SW, "sw"), trained_sw)  # identical after reload
    assert torch.equal(_encode(reloaded, SW), base_sw)
    assert torch.equal(_encode(reloaded, OTHERS, "en"), base_others)
    plain = _load(checkpoint, adapters=False)
    assert plain.adapter_languages == () and torch.equal(_encode(plain, SW, "sw"), base_sw)


def test_adapt_saves_beside_the_newest_checkpoint_and_leaves_the_base_alone(
    tmp_path, checkpoint, demo_data
):
    from mclip.models.lora import INFO_FILE
    from mclip.train.language_adapters import adapt_language

    run = tmp_path / "run"
    for step in (3, 6):  # a run directory: the adapter goes beside its newest checkpoint
        shutil.copytree(checkpoint, run / "checkpoints" / f"step_{step:07d}")
    newest = run / "checkpoints" / "step_0000006"
    before = {p.name: _sha(p) for p in newest.iterdir() if p.is_file()}
    info = adapt_language(run, "swh", str(demo_data / "train"), _settings(), max_captions=50)
    assert Path(info["path"]) == newest / "adapters" / "sw" and info["language"] == "sw"
    assert {p.name: _sha(p) for p in newest.iterdir() if p.is_file()} == before
    assert not (run / "checkpoints" / "step_0000003" / "adapters").exists()
    saved = json.loads((newest / "adapters" / "sw" / INFO_FILE).read_text())
    assert saved["data"]["captions_used"] == 50 and saved["data"]["kind"] == "captions"
    assert saved["base_weights_sha256"] == before["model.safetensors"]
    assert saved["lora"]["rank"] == 8 and saved["training"]["steps"] == 4
    assert (newest / "adapters" / "sw" / "adapter_model.safetensors").is_file()
    with pytest.raises(Exception, match="already exists; pass --overwrite"):
        adapt_language(run, "sw", str(demo_data / "train"), _settings(), max_captions=50)


def test_caption_subset_is_fixed_by_the_seed_and_restricted_to_the_language(demo_data):
    from mclip.data.language_subset import read_caption_subset

    a = read_caption_subset(str(demo_data / "train"), "sw", 30, seed=1)
    b = read_caption_subset(str(demo_data / "train"), "sw", 30, seed=1)
    c = read_caption_subset(str(demo_data / "train"), "sw", 30, seed=2)
    assert a.captions == b.captions and a.captions != c.captions and len(a.captions) == 30
    assert a.candidates > 30 and len(a.images) == max(a.image_of) + 1
    english = set(read_caption_subset(str(demo_data / "train"), "en", 500).captions)
    assert not english & set(a.captions)


def test_parallel_text_adapter(checkpoint, tmp_path):
    from mclip.data.demo_language import CLASSES, LANGUAGES
    from mclip.train.language_adapters import adapt_language

    tsv = tmp_path / "en-sw.tsv"
    lines = [
        f"{en}\t{sw}"
        for c, s in CLASSES
        for en, sw in zip(LANGUAGES["en"].captions(c, s), LANGUAGES["sw"].captions(c, s))
    ]
    tsv.write_text("\n".join(lines + ["a line without a tab"]) + "\n", "utf-8")
    info = adapt_language(checkpoint, "sw", str(tsv), _settings(), max_captions=40)
    assert info["data"]["kind"] == "parallel_text" and info["data"]["captions_used"] == 40
    assert info["data"]["skipped"] == {"malformed_parallel_line": 1}
    assert info["training"]["objective"] == "parallel-mse"
    model = _load(checkpoint)
    assert model.adapter_languages == ("sw",)
    base = _load(checkpoint, adapters=False)
    assert not torch.equal(_encode(model, SW, "sw"), _encode(base, SW))
    assert torch.equal(_encode(model, OTHERS, "de"), _encode(base, OTHERS))


def test_parallel_file_of_mclip_data_parallel_gives_the_language_rows(demo_data, tmp_path):
    from mclip.config import ConfigError
    from mclip.data.language_subset import read_parallel_subset
    from mclip.data.parallel import parallel_from_shards, write_parallel_tsv
    from mclip.data.shards import expand_shards

    pairs, _ = parallel_from_shards(expand_shards(str(demo_data / "train")), languages=["de", "sw"])
    path = write_parallel_tsv(pairs, tmp_path / "parallel.tsv")
    subset = read_parallel_subset(path, "sw", 25, seed=3)
    sw = [(s, t) for s, t, lang in pairs if lang == "sw"]
    assert len(subset.sources) == 25 and subset.candidates == len(sw)
    assert set(zip(subset.sources, subset.translations)) <= set(sw)
    with pytest.raises(ConfigError, match="no pair into 'ja' .*--languages ja"):
        read_parallel_subset(path, "ja", 25)


def test_eval_uses_the_adapter_for_its_language_only(checkpoint, demo_data, tmp_path, capsys):
    from mclip.cli import main

    assert (
        main(
            [
                "adapt",
                "--model",
                str(checkpoint),
                "--language",
                "sw",
                "--data",
                str(demo_data / "train"),
                "--max-captions",
                "64",
                "--steps",
                "4",
                "--batch-size",
                "16",
                "--lr",
                "0.05",
                "--warmup-steps",
                "1",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert f"wrote {checkpoint / 'adapters' / 'sw'}" in capsys.readouterr().out
    reports = {}
    for name, flags in (("adapted", []), ("base", ["--no-adapters"])):
        assert (
            main(
                [
                    "eval",
                    "--model",
                    str(checkpoint),
                    "--suite",
                    str(SUITE),
                    "--data-root",
                    str(demo_data),
                    "--out",
                    str(tmp_path / name),
                    "--bootstrap",
                    "0",
                    "--languages",
                    "en,zh,sw",
                    "--device",
                    "cpu",
                    "--quiet",
                    *flags,
                ]
            )
            == 0
        )
        reports[name] = json.loads((tmp_path / name / "results.json").read_text())
    changed = 0
    for task, result in reports["adapted"]["tasks"].items():
        base = reports["base"]["tasks"][task]
        if result["kind"] == "image_to_image":  # no texts: no adapter, the same numbers
            assert result["language_adapters"] == [] and result["languages"] == base["languages"]
            continue
        assert result["language_adapters"] == ["sw"] and "language_adapters" not in base
        for lang, metrics in result["languages"].items():
            if lang != "sw":  # every other language: exactly the base model's numbers
                assert metrics == base["languages"][lang], (task, lang)
        changed += result["languages"]["sw"]["samples"] != base["languages"]["sw"]["samples"]
    assert changed  # sw texts were encoded with the adapter
    assert reports["adapted"]["model_versions"]["peft"]


def test_cache_keeps_a_text_encoded_with_and_without_the_adapter_apart(
    checkpoint, demo_data, tmp_path
):
    """One string in two languages (a name, say): the adapted and the base embedding are both
    kept, and a second run reads each back under its own key."""
    from mclip.data.language_subset import read_caption_subset
    from mclip.eval.cache import EmbeddingCache
    from mclip.eval.runner import TextEmbeddings
    from mclip.models import lora
    from mclip.models.dual import DualEncoder
    from mclip.train.language_adapters import train_language_adapter

    model, _ = DualEncoder.load(checkpoint)
    train_language_adapter(
        model, read_caption_subset(str(demo_data / "train"), "sw", 32), _settings()
    )
    lora.save_adapter(model, "sw", lora.adapters_dir(checkpoint) / "sw", {})
    adapted, texts = _load(checkpoint), ["Nairobi", "Mchoro wa mraba."]
    want_sw, want_en = _encode(adapted, texts, "sw"), _encode(adapted, texts, "en")
    assert not torch.equal(want_sw, want_en)
    for _ in range(2):  # the second pass reads both from the cache
        embeddings = TextEmbeddings(adapted, cache=EmbeddingCache(tmp_path / "cache", adapted))
        assert torch.equal(embeddings.encode(texts, "sw"), want_sw)
        assert torch.equal(embeddings.encode(texts, "en"), want_en)
        assert torch.equal(embeddings.encode(texts), want_en) and embeddings.adapted == {"sw"}
    assert embeddings.from_cache == 6 and embeddings.encoded == 0


@pytest.mark.parametrize(
    "language, data, message",
    [
        ("englsh", "train", "--language 'englsh' is not a language code"),
        ("und", "train", "names no particular language"),
        ("sw", "nowhere/{0..1}.tar", "'--data': 2 of 2 shards do not exist"),
        ("fi", "train", "no caption in 'fi' in 4 shard(s) (captions by language: "),
        ("sw", "missing.tsv", "parallel text file does not exist"),
    ],
)
def test_clear_errors(checkpoint, demo_data, tmp_path, capsys, language, data, message):
    from mclip.cli import main

    spec = str(demo_data / data) if data == "train" else str(tmp_path / data)
    assert (
        main(
            [
                "adapt",
                "--model",
                str(checkpoint),
                "--language",
                language,
                "--data",
                spec,
                "--steps",
                "1",
                "--device",
                "cpu",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (checkpoint / "adapters").exists()


def test_bad_settings_and_mismatched_adapters_are_clear_errors(checkpoint, demo_data):
    from mclip.config import ConfigError
    from mclip.models.lora import LoraSettings, adapters_dir
    from mclip.train.language_adapters import adapt_language

    with pytest.raises(ConfigError, match="--rank 0"):
        adapt_language(
            checkpoint, "sw", str(demo_data / "train"), _settings(lora=LoraSettings(rank=0))
        )
    with pytest.raises(ConfigError, match="give --targets with names of its Linear layers"):
        adapt_language(
            checkpoint,
            "sw",
            str(demo_data / "train"),
            _settings(lora=LoraSettings(targets=["no_such_layer"])),
            max_captions=20,
        )
    adapt_language(checkpoint, "sw", str(demo_data / "train"), _settings(), max_captions=20)
    info = adapters_dir(checkpoint) / "sw" / "mclip_adapter.json"
    info.write_text(json.dumps({**json.loads(info.read_text()), "base_weights_sha256": "0" * 64}))
    with pytest.raises(ConfigError, match="trained on other weights .* --no-adapters"):
        _load(checkpoint)
