"""scripts/bench_curation.py scores a noisy copy, filters it and trains on both at smoke sizes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mclip.data.demo import write_demo_dataset

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_curation.py"


@pytest.mark.slow
def test_bench_curation_reports_auc_and_both_trainings(tmp_path):
    pytest.importorskip("pyarrow")
    data = tmp_path / "demo"
    write_demo_dataset(data, n_train=96, n_eval_per_class=1, image_size=32, shard_size=48)
    out = tmp_path / "bench.json"
    command = [
        sys.executable,
        str(SCRIPT),
        "--data",
        str(data),
        "--runs",
        str(tmp_path / "runs"),
        "--seeds",
        "0,1",
        "--steps",
        "3",
        "--threads",
        "1",
        "--out",
        str(out),
        "--set",
        "train.batch_size=16",
        "train.warmup_steps=1",
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert 0 <= report["auc"]["all"] <= 1 and set(report["auc"]) >= {"all", "en", "sw"}
    assert [r["seed"] for r in report["results"]["filtered"]] == [0, 1]
    labels = json.loads((tmp_path / "runs" / "noisy" / "labels.json").read_text())
    assert len(labels) == 96 and 10 <= sum(not v for v in labels.values()) <= 50  # ~30% noise
    assert set(report["targets"]) == {"AUC>=0.95", "filtered_beats_noisy>spread"}
