"""scripts/bench_eval.py runs end to end at smoke-test sizes and writes what it promises."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_eval.py"


@pytest.mark.slow
def test_bench_eval_quick_writes_json_with_identical_recalls(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--quick",
            "--threads",
            "1",
            "--cases",
            "retrieval_10k",
            "classification_babel",
            "encoding",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| case |" in proc.stdout
    report = json.loads(out.read_text())
    rows = report["results"]
    assert {(r["case"], r["impl"]) for r in rows} == {
        (case, impl)
        for case in ("retrieval_10k", "classification_babel")
        for impl in ("mclip", "full_matrix")
    }
    for row in rows:
        assert row["status"] == "ok", row
        assert row["seconds"] > 0 and row["peak_bytes"] > 0
    retrieval = {r["impl"]: r for r in rows if r["case"] == "retrieval_10k"}
    assert retrieval["mclip"]["identical"] is True
    assert set(retrieval["mclip"]["metrics"]) == {
        f"{way}_R@{k}" for k in (1, 5, 10) for way in ("text_to_image", "image_to_text")
    }
    classification = {r["impl"]: r for r in rows if r["case"] == "classification_babel"}
    languages = classification["mclip"]["metrics"]["per_language"]
    assert len(languages) == classification["mclip"]["n_languages"]
    assert set(languages[0]) == {"acc@1", "acc@5", "mean_per_class_recall"}
    # the encoding rows: each path's rate, measured on the 200 quick prompts and 20 JPEGs
    speed = report["encoding"]
    assert speed["texts"] == 200 and speed["threads"] == 1
    for key in ("open_clip_texts_per_s", "mclip_texts_per_s", "mclip_bf16_texts_per_s"):
        assert speed[key] > 0, key
    assert speed["images_per_s_workers_0"] > 0
    assert speed[f"images_per_s_workers_{speed['default_workers']}"] > 0
    assert "| texts/s | mclip fp32 (length-sorted, run at own length) |" in proc.stdout
    assert "| images/s | mclip, 0 decoding workers |" in proc.stdout
