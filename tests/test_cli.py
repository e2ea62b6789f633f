import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_cli as _mclip, tiny_overrides

ROOT = Path(__file__).resolve().parents[1]


def test_config_error_exits_2_with_message(tmp_path):
    result = _mclip("train", "--config", ROOT / "configs" / "demo.yaml", "train.stpes=3")
    assert result.returncode == 2
    assert "unknown config key 'train.stpes'. Did you mean 'train.steps'" in result.stderr
    assert "Traceback" not in result.stderr


def test_overrides_after_a_flag_are_applied(capsys):
    from mclip.cli import main

    # "k=v --overwrite k=v": argparse alone rejects positionals on both sides of a flag
    assert (
        main(
            [
                "train",
                "--config",
                str(ROOT / "configs" / "demo.yaml"),
                "train.steps=3",
                "--overwrite",
                "train.stpes=3",
            ]
        )
        == 2
    )
    assert "unknown config key 'train.stpes'" in capsys.readouterr().err
    assert main(["train", "--config", str(ROOT / "configs" / "demo.yaml"), "--no-such-flag"]) == 2
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_script_forwards_config_overrides(demo_data, tmp_path):
    """scripts/demo.sh EXTRA: the extras are training overrides (not pip extras of the setup)."""
    tiny = [
        o
        for o in tiny_overrides(demo_data, tmp_path / "run")
        if not o.startswith(("data.train_shards", "train.out_dir"))
    ]
    env = {**os.environ, "MCLIP_DEMO_DATA": str(demo_data), "MCLIP_DEMO_RUN": str(tmp_path / "run")}
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "demo.sh"), *tiny, "train.steps=2"],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "demo finished in" in result.stdout
    config = (tmp_path / "run" / "checkpoints" / "step_0000002" / "config.yaml").read_text()
    assert "image_size: 32" in config and "hidden_size: 64" in config


def test_missing_shards_exit_2_with_fix(tmp_path):
    # its own out_dir: the config's runs/demo may hold a real run in the checkout
    result = _mclip(
        "train",
        "--config",
        ROOT / "configs" / "demo.yaml",
        f"data.train_shards={tmp_path}/x-{{0..3}}.tar",
        f"train.out_dir={tmp_path}/run",
    )
    assert result.returncode == 2 and "mclip data demo" in result.stderr


def test_eval_of_a_non_model_directory_is_a_clear_error(tmp_path):
    result = _mclip("eval", "--model", tmp_path, "--suite", ROOT / "eval_suites" / "demo.yaml")
    assert result.returncode == 2 and "neither a model directory" in result.stderr


@pytest.mark.slow
def test_cli_end_to_end(tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    result = _mclip(
        "data",
        "demo",
        "--out",
        data,
        "--train",
        240,
        "--eval-per-class",
        2,
        "--image-size",
        32,
        "--shard-size",
        60,
    )
    assert result.returncode == 0, result.stderr
    assert "12 languages" in result.stdout
    result = _mclip("train", "--config", ROOT / "configs" / "demo.yaml", *tiny_overrides(data, run))
    assert result.returncode == 0, result.stderr
    assert "step 6: loss=" in result.stderr  # plain progress lines when not on a terminal
    result = _mclip(
        "eval",
        "--model",
        run,
        "--suite",
        ROOT / "eval_suites" / "demo.yaml",
        "--data-root",
        data,
        "--out",
        tmp_path / "eval",
    )
    assert result.returncode == 0, result.stderr
    assert "| sw |" in result.stdout and "| **mean** |" in result.stdout
    report = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert set(report["tasks"]["shapes"]["languages"]) == {
        "en",
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
    assert report["tasks"]["shapes"]["languages"]["hi"]["n_classes"] == 24
    assert report["versions"]["torch"] != "not installed"
    assert (tmp_path / "eval" / "results.png").stat().st_size > 10_000
    result = _mclip("report", tmp_path / "eval" / "results.json", "--out", tmp_path / "again")
    assert result.returncode == 0 and (tmp_path / "again" / "results.md").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("gather", ["exact", "group_local"])
def test_torchrun_two_cpu_ranks(demo_data, tmp_path, gather):
    run = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "mclip.cli",
            "train",
            "--config",
            str(ROOT / "configs" / "demo.yaml"),
            *tiny_overrides(demo_data, run),
            "train.micro_batches=2",
            "dist.group_size=1",
            f"dist.gather={gather}",
            "train.steps=12",
            "train.save_every=6",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("final checkpoint:") == 1  # rank 0 only
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    start = next(r for r in records if r.get("event") == "start")
    assert start["world_size"] == 2
    info = next(r for r in records if r.get("event") == "gather")
    # global batch 32 = 2 ranks x 16; group_local with groups of one rank sees only its own 16
    assert info["negatives_per_sample"] == (31 if gather == "exact" else 15)
    if gather == "group_local":
        assert "approximate" in info["note"]
    assert (run / "checkpoints" / "step_0000012" / "model.safetensors").is_file()
    # it trained: a loss every 2 steps, falling; and both ranks end with the same weights
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 6 and all(math.isfinite(v) for v in losses)
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2 - 0.05, losses
    end = next(r for r in records if r.get("event") == "end")
    assert len(end["parameter_digests"]) == 2 and end["ranks_identical"], end


def test_data_demo_hard_level(tmp_path):
    result = _mclip(
        "data",
        "demo",
        "--level",
        "hard",
        "--out",
        tmp_path,
        "--train",
        24,
        "--eval-per-class",
        1,
        "--shard-size",
        24,
        "--image-size",
        32,
    )
    assert result.returncode == 0, result.stderr
    assert "eval_suites/demo_hard.yaml" in result.stdout
    assert json.loads((tmp_path / "dataset.json").read_text())["level"] == "hard"
