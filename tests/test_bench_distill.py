"""scripts/bench_distill.py runs teacher, embeddings, both students and evaluation at smoke
sizes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mclip.data.demo_hard import write_hard_demo_dataset

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_distill.py"


@pytest.mark.slow
def test_bench_distill_trains_evaluates_and_reports_targets(tmp_path):
    data = tmp_path / "hard"
    write_hard_demo_dataset(data, n_train=96, n_eval_per_class=1, n_retrieval=24, shard_size=48)
    out = tmp_path / "bench.json"
    command = [
        sys.executable,
        str(SCRIPT),
        "--data",
        str(data),
        "--runs",
        str(tmp_path / "runs"),
        "--teacher-steps",
        "3",
        "--student-steps",
        "3",
        "--seeds",
        "0,1",
        "--threads",
        "1",
        "--eval-limit",
        "24",
        "--offline",
        "--out",
        str(out),
        "--set",
        "train.batch_size=16",
        "train.log_every=1",
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "| teacher |" in proc.stdout and "| distilled student | " in proc.stdout
    report = json.loads(out.read_text())
    runs = tmp_path / "runs"
    assert (runs / "teacher_embeddings" / "done").exists()
    distilled_config = (runs / "distilled_seed0" / "log.jsonl").read_text().splitlines()[0]
    assert "teacher_embeddings" in distilled_config
    assert '"teachers": []' in (runs / "undistilled_seed0" / "log.jsonl").read_text()
    teacher = report["results"]["teacher"]
    assert teacher["parameters"] > 4 * report["results"]["distilled"][0]["parameters"]
    for kind in ("distilled", "undistilled"):
        assert [row["seed"] for row in report["results"][kind]] == [0, 1]
        for row in report["results"][kind]:
            assert 0 <= row["acc@1"] <= 100
            assert row["R@1"] == pytest.approx((row["t2i R@1"] + row["i2t R@1"]) / 2)
        summary = report["summary"][kind]["R@1"]
        assert summary["spread"] == pytest.approx(max(summary["values"]) - min(summary["values"]))
    assert report["targets"]["student_parameters<=teacher/4"] is True

    # A second call (seed 1, --inherit-only) reuses every finished run and evaluation and trains
    # only the third arm.
    stamp = (runs / "distilled_seed1" / "log.jsonl").stat().st_mtime_ns
    seed1 = [arg if arg != "0,1" else "1" for arg in command]
    proc = subprocess.run([*seed1, "--inherit-only"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("training ...") == 1  # inherited only, seed 1
    assert "| inherited only student | " in proc.stdout
    assert (runs / "distilled_seed1" / "log.jsonl").stat().st_mtime_ns == stamp
    again = json.loads(out.read_text())["results"]
    for kind in ("distilled", "undistilled"):
        assert again[kind] == [row for row in report["results"][kind] if row["seed"] == 1]
    inherited = (runs / "inherited_only_seed1" / "log.jsonl").read_text().splitlines()
    assert '"teachers": []' in inherited[0]
    assert any(json.loads(line).get("event") == "inherit" for line in inherited)
