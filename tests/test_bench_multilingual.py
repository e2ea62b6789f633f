"""scripts/bench_multilingual.py runs teacher learning and a language adapter end to end at smoke
sizes, reports both targets, and reuses finished runs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_multilingual.py"


@pytest.mark.slow
def test_bench_multilingual_trains_adapts_evaluates_and_reports_targets(demo_data, tmp_path):
    out, runs = tmp_path / "bench.json", tmp_path / "runs"
    command = [
        sys.executable,
        str(SCRIPT),
        "--data",
        str(demo_data),
        "--runs",
        str(runs),
        "--threads",
        "1",
        "--max-captions",
        "40",
        "--adapt-steps",
        "3",
        "--out",
        str(out),
        "--set",
        "train.steps=3",
        "train.warmup_steps=1",
        "train.batch_size=16",
        "train.save_every=3",
        "data.shuffle_buffer=16",
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "| taught composite |" in proc.stdout and "| with the sw adapter |" in proc.stdout
    report = json.loads(out.read_text())
    learned, adapted = report["teacher_learning"], report["language_adapter"]
    assert set(learned["ratio_to_english"]) == {
        "de",
        "fr",
        "es",
        "it",
        "pt",
        "ru",
        "zh",
        "ja",
        "ar",
        "hi",
        "sw",
    }
    start = json.loads((runs / "teacher_en" / "log.jsonl").read_text().splitlines()[0])
    assert start["config"]["data"]["languages"] == ["en"]
    taught = json.loads((runs / "taught" / "log.jsonl").read_text().splitlines()[0])
    assert taught["mode"] == "teacher_learning"
    assert (runs / "parallel.tsv").read_text().startswith("source\ttranslation\tlanguage")
    assert list((runs / "without_sw" / "checkpoints").glob("*/adapters/sw/mclip_adapter.json"))
    base, with_adapter = adapted["scores"]["without sw"], adapted["scores"]["with the sw adapter"]
    for lang in base:  # the adapter touches sw only: every other language is bit-identical
        if lang != "sw":
            assert with_adapter[lang] == base[lang], lang
    assert adapted["acc@1_change"]["sw"] == pytest.approx(
        with_adapter["sw"]["acc@1"] - base["sw"]["acc@1"]
    )
    assert set(report["targets"]) == {
        "every_language>=80%_of_english",
        "sw_gain>=20",
        "others_move<=1",
    }
    assert report["targets"]["others_move<=1"] is True

    stamp = (runs / "taught" / "log.jsonl").stat().st_mtime_ns
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "training" not in proc.stderr and "evaluating" not in proc.stderr
    assert (runs / "taught" / "log.jsonl").stat().st_mtime_ns == stamp
    assert json.loads(out.read_text())["targets"] == report["targets"]
