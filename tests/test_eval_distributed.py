"""`torchrun --nproc-per-node 2 -m mclip.cli eval` (gloo, CPU) equals the single-process run."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import tiny_model_config
from mclip.cli import main
from mclip.models.dual import DualEncoder


@pytest.fixture
def setup(tmp_path):
    cfg = tiny_model_config("resnet10t")
    torch.manual_seed(0)
    DualEncoder(cfg.model).save(tmp_path / "model", cfg)
    rng = np.random.default_rng(0)
    rows = ["filepath,title"]
    for c in range(5):
        folder = tmp_path / "images" / f"n{c:04d}"
        folder.mkdir(parents=True)
        for i in range(5 + c):  # uneven: 35 images over 2 ranks
            Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)).save(
                folder / f"{i}.png"
            )
            rows += [
                f"images/n{c:04d}/{i}.png,shape {c} number {i}",
                f"images/n{c:04d}/{i}.png,another caption {c}",
            ]
    (tmp_path / "images" / "n0003" / "broken.png").write_bytes(b"not a png")
    (tmp_path / "captions.csv").write_text("\n".join(rows) + "\n")
    labels = {
        "EN": [[0, 1, 2, 3, 4], ["cat", "dog", "car", "tree", "cup"]],
        "SW": [[1, 3, 4], ["mbwa", "mti", "kikombe"]],
    }
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    suite = {
        "name": "ranks",
        "tasks": [
            {
                "name": "zs",
                "kind": "zeroshot_classification",
                "languages": "all",
                "images": "images",
                "class_texts": "labels.json",
                "resource_groups": True,
            },
            {"name": "ret", "kind": "retrieval", "languages": ["en"], "captions": "captions.csv"},
        ],
    }
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    return tmp_path


def _comparable(path):
    report = json.loads(path.read_text())
    return {
        name: {
            "languages": task["languages"],
            "skipped": task["skipped"],
            "data": task["data"],
            "mean": task["mean"],
        }
        for name, task in report["tasks"].items()
    }


@pytest.mark.slow
def test_two_gloo_ranks_equal_one_process(setup):
    args = [
        "eval",
        "--model",
        str(setup / "model"),
        "--suite",
        str(setup / "suite.yaml"),
        "--data-root",
        str(setup),
        "--batch-size",
        "4",
        "--bootstrap",
        "200",
        "--quiet",
        "--device",
        "cpu",
    ]
    assert main(args + ["--out", str(setup / "one")]) == 0
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    run = subprocess.run(
        [torchrun, "--standalone", "--nproc-per-node", "2", "-m", "mclip.cli"]
        + args
        + ["--out", str(setup / "two")],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    one, two = (
        _comparable(setup / "one" / "results.json"),
        _comparable(setup / "two" / "results.json"),
    )
    assert one["zs"]["skipped"] == {"unreadable_image": 1} == two["zs"]["skipped"]
    assert one["zs"]["languages"]["sw"]["n_images"] == 6 + 8 + 9  # classes 1, 3, 4; broken skipped
    assert two == one
    assert one["ret"]["languages"]["en"]["n_texts"] == 70
    assert one["zs"]["languages"]["en"]["ci"]["acc@1"][0] <= one["zs"]["languages"]["en"]["acc@1"]
