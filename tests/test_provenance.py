"""Provenance of the texts per language: reader defaults, suite tags, the report's grouping and
``mclip report --provenance``."""

import csv
import json
from pathlib import Path

import pytest

import mclip.eval.datasets as datasets
from conftest import random_image_folder
from mclip.cli import main
from mclip.config import ConfigError
from mclip.eval.datasets import open_class_texts, open_retrieval
from mclip.eval.provenance import READER_PROVENANCE, provenance_of
from mclip.eval.runner import run_tasks
from mclip.eval.suite import load_suite, make_task


def test_every_reader_named_in_the_defaults_exists():
    from mclip.eval.datasets.bitext import FloresBitext, TatoebaBitext  # noqa: F401

    known = set(dir(datasets)) | {"FloresBitext", "TatoebaBitext"}
    assert set(READER_PROVENANCE) <= known


def _task(**extra):
    return make_task(
        {"name": "t", "kind": "retrieval", "languages": "all", "captions": "x", **extra},
        Path("."),
        "test",
    )


def test_reader_defaults_and_suite_tags(tmp_path):
    labels = {"EN": [[0, 1], ["cat", "dog"]], "DE": [[0, 1], ["Katze", "Hund"]]}
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    babel = open_class_texts(tmp_path / "labels.json")
    assert provenance_of(_task(), babel, "en") == "human"
    assert provenance_of(_task(), babel, "de") == "lexicon"
    xtd = tmp_path / "xtd"
    xtd.mkdir()
    (xtd / "test_image_names.txt").write_text("a.jpg\n")
    (xtd / "test_1kcaptions_de.txt").write_text("eine Katze\n")
    assert provenance_of(_task(), open_retrieval(xtd, tmp_path), "de") == "human"
    assert provenance_of(_task(), object(), "de") == "unknown"  # a format that says nothing
    assert (
        provenance_of(_task(provenance="machine_translated"), babel, "en") == "machine_translated"
    )
    mapping = _task(provenance={"de": "machine_translated", "default": "human"})
    assert provenance_of(mapping, babel, "de") == "machine_translated"
    assert provenance_of(mapping, babel, "fr") == "human"
    only_de = _task(provenance={"de": "human"})
    assert provenance_of(only_de, babel, "fr") == "lexicon"  # untagged: the reader's default
    with pytest.raises(ConfigError, match="provenance must be one of human, machine_translated"):
        _task(provenance="mt")
    with pytest.raises(ConfigError, match="provenance must be one of"):
        _task(provenance={"de": "google"})
    with pytest.raises(ConfigError, match="unknown key"):
        make_task(
            {"name": "i", "kind": "image_to_image", "images": "x", "provenance": "human"},
            Path("."),
            "test",
        )


def _babel_task(tmp_path: Path) -> Path:
    random_image_folder(tmp_path / "images")
    labels = {
        "EN": [[0, 1, 2], ["cat", "dog", "car"]],
        "DE": [[0, 1, 2], ["Katze", "Hund", "Auto"]],
        "FR": [[0, 1, 2], ["chat", "chien", "voiture"]],
    }
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"""name: mixed
tasks:
  - name: babel
    kind: zeroshot_classification
    images: {tmp_path / "images"}
    class_texts: {tmp_path / "labels.json"}
    languages: all
    provenance: {{fr: machine_translated}}
""")
    return suite


def test_results_report_and_filter(adapter, tmp_path, monkeypatch, capsys):
    suite = load_suite(_babel_task(tmp_path))
    results = run_tasks(adapter, suite.tasks, bootstrap=0)
    tags = {lang: m["provenance"] for lang, m in results["babel"]["languages"].items()}
    assert tags == {"en": "human", "de": "lexicon", "fr": "machine_translated"}

    monkeypatch.setattr("mclip.models.adapters.load_model", lambda *a, **k: adapter)
    out = tmp_path / "out"
    assert (
        main(
            [
                "eval",
                "--model",
                "x",
                "--suite",
                str(tmp_path / "suite.yaml"),
                "--out",
                str(out),
                "--quiet",
                "--bootstrap",
                "0",
            ]
        )
        == 0
    )
    report = json.loads((out / "results.json").read_text())
    by_tag = report["tasks"]["babel"]["provenance_means"]
    assert set(by_tag) == {"human", "machine_translated", "lexicon"}
    assert by_tag["lexicon"]["languages"] == 1
    assert by_tag["lexicon"]["acc@1"] == report["tasks"]["babel"]["languages"]["de"]["acc@1"]
    table = (out / "results.md").read_text()
    assert "| babel | lexicon | 1 |" in table and "| babel | machine_translated | 1 |" in table
    with open(out / "results.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["task"] != "cost"]
    assert {(r["language"], r["provenance"]) for r in rows} == set(tags.items())

    capsys.readouterr()
    assert main(["report", str(out / "results.json"), "--provenance", "human,lexicon"]) == 0
    filtered_dir = out / "provenance_human+lexicon"
    filtered = json.loads((filtered_dir / "results.json").read_text())
    assert set(filtered["tasks"]["babel"]["languages"]) == {"en", "de"}
    languages = report["tasks"]["babel"]["languages"]
    assert filtered["tasks"]["babel"]["mean"]["acc@1"] == pytest.approx(
        (languages["en"]["acc@1"] + languages["de"]["acc@1"]) / 2
    )
    assert "Only languages whose texts are human, lexicon" in capsys.readouterr().out
    # the full report is untouched
    assert set(json.loads((out / "results.json").read_text())["tasks"]["babel"]["languages"]) == {
        "en",
        "de",
        "fr",
    }
    assert main(["report", str(out / "results.json"), "--provenance", "google"]) == 2
    assert "use one or more of human" in capsys.readouterr().err
    assert main(["report", str(out / "results.json"), "--provenance", "unknown"]) == 2
    assert "has no language whose texts are unknown" in capsys.readouterr().err


def test_inline_task_flag(adapter, tmp_path, monkeypatch, capsys):
    suite = _babel_task(tmp_path)
    monkeypatch.setattr("mclip.models.adapters.load_model", lambda *a, **k: adapter)
    assert (
        main(
            [
                "eval",
                "--model",
                "x",
                "--task",
                "zeroshot_classification",
                "--images",
                str(tmp_path / "images"),
                "--class-texts",
                str(tmp_path / "labels.json"),
                "--provenance",
                "machine_translated",
                "--out",
                str(tmp_path / "o"),
                "--quiet",
                "--bootstrap",
                "0",
            ]
        )
        == 0
    )
    languages = json.loads((tmp_path / "o" / "results.json").read_text())["tasks"][
        "zeroshot_classification"
    ]["languages"]
    assert {m["provenance"] for m in languages.values()} == {"machine_translated"}
    capsys.readouterr()
    assert (
        main(
            [
                "eval",
                "--model",
                "x",
                "--suite",
                str(suite),
                "--provenance",
                "human",
                "--out",
                str(tmp_path / "o2"),
                "--quiet",
            ]
        )
        == 2
    )
    assert "--provenance tags an inline --task" in capsys.readouterr().err


def test_a_filter_keeps_tasks_without_texts_but_needs_a_text_language(tmp_path, capsys):
    from mclip.eval.report import build_report, write_report

    results = {
        "i2i": {"kind": "image_to_image", "languages": {"images": {"image_to_image_R@1": 0.5}}},
        "cls": {
            "kind": "zeroshot_classification",
            "languages": {
                "en": {"acc@1": 0.9, "provenance": "human"},
                "de": {"acc@1": 0.5, "provenance": "lexicon"},
            },
        },
    }
    write_report(build_report("m", "s", results), tmp_path, formats=("json",))
    assert (
        main(
            [
                "report",
                str(tmp_path / "results.json"),
                "--provenance",
                "lexicon",
                "--format",
                "markdown",
            ]
        )
        == 0
    )
    kept = json.loads((tmp_path / "provenance_lexicon" / "results.json").read_text())["tasks"]
    assert set(kept) == {"i2i", "cls"} and set(kept["cls"]["languages"]) == {"de"}
    assert kept["cls"]["mean"]["acc@1"] == 0.5
    assert (
        main(["report", str(tmp_path / "results.json"), "--provenance", "machine_translated"]) == 2
    )
    assert "no language whose texts are machine_translated" in capsys.readouterr().err
