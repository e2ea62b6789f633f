"""scripts/bench_eval_vs_clip_benchmark.py runs clip_benchmark's CLI and mclip eval at smoke-test
sizes, finds equal metrics, and writes the rows it promises."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_eval_vs_clip_benchmark.py"


@pytest.mark.slow
def test_bench_eval_vs_clip_benchmark_quick(tmp_path):
    pytest.importorskip("clip_benchmark")
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--quick",
            "--work",
            str(tmp_path / "w"),
            "--throughput-texts",
            "200",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "| case | arm |" in proc.stdout and "texts/s over open_clip" in proc.stdout
    report = json.loads(out.read_text())
    for case in ("image", "text"):
        arms = report["cases"][case]
        assert set(arms) == {"clip_benchmark", "mclip", "mclip_bf16"}
        assert arms["mclip"]["max_metric_difference"] <= 1e-9  # fp32: the same numbers
        assert all(arm["seconds"] > 0 for arm in arms.values())
    speed = report["throughput"]
    assert speed["open_clip_texts_per_s"] > 0 and speed["mclip_texts_per_s"] > 0
    assert report["targets"]["fp32 metrics equal clip_benchmark's (<= 1e-9)"] is True
