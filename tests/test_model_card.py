"""Every export carries a model card written from what the run recorded: the Hugging Face YAML
header, parameters per tower, the captions trained on per language (summed from log.jsonl, a
step logged twice counted once), steps and loss from config.yaml, the evaluation table of a
results.json, and no invented facts where the log is missing."""

import json
from pathlib import Path

import yaml

from conftest import log_records, tiny_overrides
from mclip.cli import main
from mclip.config import load_config
from mclip.export.model_card import parameter_counts, training_facts
from mclip.models.dual import DualEncoder
from mclip.train.trainer import train

ROOT = Path(__file__).resolve().parents[1]


def test_the_model_card_states_what_the_run_recorded(demo_data, tmp_path, capsys):
    run = tmp_path / "run"
    cfg = load_config(
        ROOT / "configs" / "demo.yaml",
        tiny_overrides(demo_data, run)
        + ["train.steps=4", "train.log_every=1", "train.save_every=2", "data.languages=[en,de,sw]"],
    )
    final = train(cfg, quiet=True)
    with (run / "log.jsonl").open("a") as log:  # a step logged again after a resume counts once
        log.write(
            json.dumps(next(r for r in log_records(run) if r.get("step") == 2 and "loss" in r))
            + "\n"
        )
    assert (
        main(
            [
                "eval",
                "--model",
                str(run),
                "--suite",
                str(ROOT / "eval_suites" / "demo.yaml"),
                "--data-root",
                str(demo_data),
                "--languages",
                "en,de",
                "--bootstrap",
                "50",
                "--quiet",
                "--out",
                str(tmp_path / "eval"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "export",
                str(run),
                "--format",
                "open_clip",
                "--out",
                str(tmp_path / "oc"),
                "--results",
                str(tmp_path / "eval" / "results.json"),
                "--license",
                "apache-2.0",
            ]
        )
        == 0
    )
    card = (tmp_path / "oc" / "README.md").read_text()
    header = yaml.safe_load(card.split("---\n")[1])
    assert header["language"] == ["de", "en", "sw"] and header["license"] == "apache-2.0"
    assert header["library_name"] == "open_clip" and "clip" in header["tags"]
    model, _ = DualEncoder.load(final)
    counts = parameter_counts(model)
    assert f"| {counts['image']:,} |" in card and f"| {counts['total']:,} |" in card
    facts = training_facts(final)
    assert facts["steps"] == 4 and facts["images"] == 4 * 32
    assert sum(facts["captions_by_language"].values()) == 4 * 32
    for lang, n in facts["captions_by_language"].items():
        assert f"| {lang} | {n:,} |" in card
    assert "steps: 4, global batch 32 images" in card and "loss: infonce" in card
    assert "| **mean** |" in card and "±" in card  # the evaluation table, with intervals
    assert "not evaluated: sw" in card and "local-dir:" in card


def test_without_a_log_or_results_the_card_says_so(tmp_path):
    from conftest import tiny_model_config

    cfg = tiny_model_config()
    DualEncoder(cfg.model).save(tmp_path / "model", cfg)
    assert (
        main(
            [
                "export",
                str(tmp_path / "model"),
                "--format",
                "open_clip",
                "--out",
                str(tmp_path / "oc"),
            ]
        )
        == 0
    )
    card = (tmp_path / "oc" / "README.md").read_text()
    assert "no training log" in card and "No evaluation was given" in card
    assert training_facts(tmp_path / "model") is None


def test_an_int8_card_states_the_measured_cosines(tmp_path):
    import re

    import pytest

    pytest.importorskip("onnxruntime")
    from conftest import tiny_model_config

    cfg = tiny_model_config()
    DualEncoder(cfg.model).save(tmp_path / "model", cfg)
    assert (
        main(
            [
                "export",
                str(tmp_path / "model"),
                "--format",
                "onnx",
                "--quantize",
                "int8",
                "--out",
                str(tmp_path / "int8"),
            ]
        )
        == 0
    )
    card = (tmp_path / "int8" / "README.md").read_text()
    record = json.loads((tmp_path / "int8" / "mclip_export.json").read_text())["check"]
    found = re.search(
        r"smallest cosine to fp32 in the export check: images ([0-9.]+)"
        r"( on [^,]*)?, texts "
        r"([0-9.]+)",
        card,
    )  # was "nan": the card read a key no export wrote
    assert found, card
    assert float(found[1]) == pytest.approx(record["image_cosine"], abs=1e-4)
    assert float(found[3]) == pytest.approx(record["text_cosine"], abs=1e-4)
    assert found[2] is None  # no calibration: judged on the probes, nothing held out
