"""A damaged newest checkpoint (truncated, or other bytes of the same size): ``--resume`` falls
back to the previous intact one (logged as ``checkpoint_damaged``) and continues exactly, ``mclip
eval --model RUN`` uses the newest intact one and says so, a damaged checkpoint named directly
is one line. Checkpoints written before manifests are checked by their files' structure."""

import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import THREADS_ENV, log_records, run_cli, tiny_overrides
from mclip.config import load_config
from mclip.models.manifest import MANIFEST_FILE, damage
from mclip.train.checkpoint import list_checkpoints
from mclip.train.trainer import train
from test_resume import _assert_same_final_state

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "demo.yaml"
SUITE = ROOT / "eval_suites" / "demo.yaml"


def _cli(*args):
    return run_cli(*args, env={**os.environ, **THREADS_ENV})


def _overrides(demo_data, run, steps):
    return tiny_overrides(demo_data, run) + [
        f"train.steps={steps}",
        "train.save_every=2",
        "train.log_every=1",
        "train.keep_checkpoints=10",
    ]


@pytest.fixture(scope="module")
def full_run(demo_data, tmp_path_factory):
    """An uninterrupted 6-step run with checkpoints at steps 2, 4 and 6."""
    run = tmp_path_factory.mktemp("damage") / "full"
    train(load_config(DEMO, _overrides(demo_data, run, 6)), quiet=True)
    return run


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) * 3 // 4] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_checkpoint_has_a_manifest_of_its_files(full_run):
    checkpoint = list_checkpoints(full_run)[-1]
    files = json.loads((checkpoint / MANIFEST_FILE).read_text())["files"]
    assert {"config.yaml", "model.safetensors", "trainer.pt"} <= set(files)
    assert files["trainer.pt"]["bytes"] == (checkpoint / "trainer.pt").stat().st_size
    assert damage(checkpoint) is None


@pytest.mark.parametrize(
    "file,harm",
    [
        ("model.safetensors", _truncate),
        ("trainer.pt", _truncate),
        ("model.safetensors", _flip_a_byte),
    ],
)
@pytest.mark.slow
def test_resume_passes_over_a_damaged_newest_checkpoint_and_is_exact(
    demo_data, full_run, tmp_path, file, harm
):
    run = tmp_path / "run"
    shutil.copytree(full_run, run)
    shutil.rmtree(run / "checkpoints" / "step_0000006")
    harm(run / "checkpoints" / "step_0000004" / file)
    result = _cli("train", "--config", DEMO, "--resume", *_overrides(demo_data, run, 6))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "checkpoint_damaged" in result.stderr and file in result.stderr
    records = log_records(run)
    damaged = [r for r in records if r.get("event") == "checkpoint_damaged"]
    assert len(damaged) == 1 and damaged[0]["checkpoint"].endswith("step_0000004")
    assert file in damaged[0]["problem"]
    resumed = [r for r in records if r.get("event") == "resume"][-1]
    assert resumed["step"] == 2 and resumed["checkpoint"].endswith("step_0000002")
    # steps 3..6 again from step 2: the same weights and Adam state as the uninterrupted run
    _assert_same_final_state(
        full_run / "checkpoints" / "step_0000006", run / "checkpoints" / "step_0000006"
    )


@pytest.mark.slow
def test_eval_of_a_run_uses_its_newest_intact_checkpoint_and_says_so(demo_data, full_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(full_run, run)
    _truncate(run / "checkpoints" / "step_0000006" / "model.safetensors")
    result = _cli(
        "eval",
        "--model",
        run,
        "--suite",
        SUITE,
        "--data-root",
        demo_data,
        "--limit",
        "8",
        "--bootstrap",
        "0",
        "--out",
        tmp_path / "eval",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "passed over damaged checkpoint" in result.stderr and "step_0000006" in result.stderr
    assert "step_0000004" in result.stderr and "model.safetensors" in result.stderr
    assert (tmp_path / "eval" / "results.json").is_file()


def test_a_damaged_checkpoint_named_directly_is_one_line(demo_data, full_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(full_run, run)
    checkpoint = run / "checkpoints" / "step_0000006"
    _truncate(checkpoint / "model.safetensors")
    result = _cli(
        "eval",
        "--model",
        checkpoint,
        "--suite",
        SUITE,
        "--data-root",
        demo_data,
        "--limit",
        "8",
        "--out",
        tmp_path / "eval",
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mclip: error:")
    assert str(checkpoint) in lines[0] and "model.safetensors" in lines[0]


def test_a_run_with_no_intact_checkpoint_left_is_one_line(demo_data, full_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(full_run, run)
    for checkpoint in list_checkpoints(run):
        _truncate(checkpoint / "trainer.pt")
    result = _cli("train", "--config", DEMO, "--resume", *_overrides(demo_data, run, 8))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "no intact checkpoint" in lines[0] and "trainer.pt" in lines[0]


@pytest.mark.parametrize("file", ["model.safetensors", "trainer.pt"])
def test_checkpoints_without_a_manifest_are_checked_by_structure(full_run, tmp_path, file):
    checkpoint = tmp_path / "old"
    shutil.copytree(list_checkpoints(full_run)[-1], checkpoint)
    (checkpoint / MANIFEST_FILE).unlink()  # as written before manifests
    assert damage(checkpoint) is None
    _truncate(checkpoint / file)
    assert file in damage(checkpoint)
