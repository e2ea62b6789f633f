"""scripts/bench_export.py trains, exports, evaluates and measures at smoke sizes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mclip.data.demo import write_demo_dataset

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_export.py"


@pytest.mark.slow
def test_bench_export_reports_throughput_sizes_and_targets(tmp_path):
    pytest.importorskip("onnxruntime")
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
        "--seconds",
        "0.2",
        "--image-batch",
        "8",
        "--text-batch",
        "8",
        "--no-vit",
        "--out",
        str(out),
        "--set",
        "train.batch_size=16",
        "train.warmup_steps=1",
        "model.embed_dim=32",
        "model.text.max_length=64",
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "| demo (resnet10t 32 px + byte 2-layer) | ONNX int8 |" in proc.stdout
    report = json.loads(out.read_text())
    assert [r["runtime"] for r in report["throughput"]] == [
        "PyTorch eager",
        "ONNX fp32",
        "ONNX int8",
    ]
    assert all(r["images_per_s"] > 0 and r["texts_per_s"] > 0 for r in report["throughput"])
    assert report["throughput"][2]["quantized"]["image"].startswith("static int8")
    assert sorted(map(int, report["summary"]["matryoshka"])) == [4, 8, 16, 32]
    assert [r["seed"] for r in report["accuracy"]["plain"]] == [0, 1]
    assert set(report["targets"]) == {
        "onnx_fp32>=1.0x_eager",
        "int8>=1.5x_fp32_demo",
        "int8_acc@1_loss<=1pt",
        "matryoshka_E/8>=95%_full",
        "matryoshka_E/8_beats_plain_E/8_by>spread",
    }
    records = [
        json.loads(line)
        for line in (tmp_path / "runs" / "matryoshka_seed0" / "log.jsonl").read_text().splitlines()
    ]
    assert "matryoshka_4" in next(r for r in records if "step" in r and "loss" in r)["terms"]
