"""The fault matrix: each fault gives a clear one-line message or a counted skip, never a
traceback, and never loses the last good checkpoint (docs/training.md: "Faults and what mclip
does")."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import THREADS_ENV, log_records, run_cli, tiny_overrides

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "demo.yaml"


def _cli(*args):
    return run_cli(*args, env={**os.environ, **THREADS_ENV})


def _one_line_error(result, *needles):
    """Exit status 2, no traceback, one line on stderr naming every needle."""
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


# ---- rows handled by the trainer: bad steps, logit scale, disk full, SIGTERM, shape change ----


def _train_overrides(demo_data, run, steps=6, save_every=2, extra=()):
    return tiny_overrides(demo_data, run) + [
        f"train.steps={steps}",
        f"train.save_every={save_every}",
        "train.log_every=1",
        "train.keep_checkpoints=10",
        *extra,
    ]


def _poison_steps(monkeypatch, bad):
    """Make the loss and gradients of the (0-based) steps in ``bad`` NaN, as a diverging run
    would."""
    import mclip.train.trainer as trainer

    real, calls = trainer.step_gradients, {"n": 0}

    def poisoned(model, *args, **kwargs):
        loss = real(model, *args, **kwargs)
        step, calls["n"] = calls["n"], calls["n"] + 1
        if step in bad:
            for p in model.parameters():
                if p.grad is not None:
                    p.grad.fill_(float("nan"))
            return loss * float("nan")
        return loss

    monkeypatch.setattr(trainer, "step_gradients", poisoned)


def test_nan_or_inf_loss_is_skipped_and_counted(demo_data, tmp_path, monkeypatch):
    from mclip.config import load_config
    from mclip.train.trainer import train

    run = tmp_path / "run"
    _poison_steps(monkeypatch, bad={2})  # the 3rd step
    final = train(load_config(DEMO, _train_overrides(demo_data, run, steps=4)), quiet=True)
    records = log_records(run)
    bad = [r for r in records if r.get("event") == "bad_step"]
    assert [r["step"] for r in bad] == [3] and math.isnan(bad[0]["loss"])
    end = next(r for r in records if r.get("event") == "end")
    assert end["bad_steps"] == 1 and final.name == "step_0000004"
    # the bad step was not applied: Adam's step counter counts only applied steps
    from mclip.train.checkpoint import load_trainer_state

    adam_steps = load_trainer_state(final)["optimizer"]["state"][0]["step"]
    assert float(adam_steps) == 3.0
    assert all(math.isfinite(r["loss"]) for r in records if "loss" in r and r["step"] != 3)


def test_too_many_bad_steps_in_a_row_stop_with_a_message(demo_data, tmp_path, monkeypatch):
    from mclip.config import load_config
    from mclip.train.checkpoint import latest_checkpoint, load_trainer_state
    from mclip.errors import TrainingError
    from mclip.train.trainer import train

    run = tmp_path / "run"
    _poison_steps(monkeypatch, bad={2, 3, 4})
    cfg = load_config(
        DEMO, _train_overrides(demo_data, run, steps=8, extra=["train.max_bad_steps=3"])
    )
    with pytest.raises(TrainingError) as caught:
        train(cfg, quiet=True)
    message = str(caught.value)
    assert "\n" not in message
    assert "stopped at step 5: 3 steps in a row had a NaN/inf" in message
    assert "step_0000004" in message and "--resume" in message
    # the last good checkpoint is intact and resumable
    last = latest_checkpoint(run)
    assert last.name == "step_0000004" and load_trainer_state(last)["step"] == 4


@pytest.mark.slow
def test_logit_scale_out_of_range_is_a_config_error(demo_data, tmp_path):
    result = _cli(
        "train",
        "--config",
        DEMO,
        *_train_overrides(demo_data, tmp_path / "run"),
        "model.init_logit_scale=12.0",
    )
    _one_line_error(result, "model.init_logit_scale", "12.0", "log(1/0.07)")
    result = _cli(
        "train",
        "--config",
        DEMO,
        *_train_overrides(demo_data, tmp_path / "run"),
        "model.max_logit_scale=-1",
    )
    _one_line_error(result, "model.max_logit_scale")


def test_disk_full_while_writing_a_checkpoint_keeps_the_previous_one(
    demo_data, tmp_path, monkeypatch
):
    import errno

    import mclip.train.checkpoint as checkpoint
    from mclip.config import load_config
    from mclip.models.dual import DualEncoder
    from mclip.errors import TrainingError
    from mclip.train.trainer import train

    run = tmp_path / "run"
    real_save = checkpoint.torch.save

    def full_disk(obj, path, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("step") == 4:
            Path(path).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    with pytest.raises(TrainingError) as caught:
        train(load_config(DEMO, _train_overrides(demo_data, run)), quiet=True)
    message = str(caught.value)
    assert "\n" not in message and "No space left on device" in message
    assert "step_0000002" in message and "--resume" in message
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names[-1] == "step_0000002"  # the half-written one is not under a checkpoint name
    DualEncoder.load(run / "checkpoints" / "step_0000002")
    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    final = train(load_config(DEMO, _train_overrides(demo_data, run)), resume=True, quiet=True)
    assert final.name == "step_0000006"
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".tmp")]


@pytest.mark.slow
@pytest.mark.parametrize("name,status", [("SIGTERM", 0), ("SIGINT", 130)])
def test_sigterm_writes_a_checkpoint_then_exits(demo_data, tmp_path, name, status):
    """SLURM preemption: SIGTERM to the whole process group (trainer and DataLoader workers);
    Ctrl-C: SIGINT to the terminal's process group, the same but exit status 130."""
    import signal
    import time

    run = tmp_path / "run"
    argv = [
        sys.executable,
        "-m",
        "mclip.cli",
        "train",
        "--config",
        str(DEMO),
        "--quiet",
        *_train_overrides(demo_data, run, steps=200, save_every=100, extra=["data.num_workers=2"]),
    ]
    process = subprocess.Popen(
        argv,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, **THREADS_ENV},
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1][-2000:]
        log = run / "log.jsonl"
        if log.is_file() and any("loss" in r and r["step"] >= 3 for r in log_records(run)):
            break
        time.sleep(0.02)
    os.killpg(process.pid, getattr(signal, name))
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == status, stderr[-3000:]
    assert "Traceback" not in stderr
    records = log_records(run)
    preempted = next(r for r in records if r.get("event") == "preempted")
    step = preempted["step"]
    assert 3 <= step < 100
    assert (run / "checkpoints" / f"step_{step:07d}" / "model.safetensors").is_file()
    end = next(r for r in records if r.get("event") == "end")
    assert end["stopped_by"] == name and end["step"] == step
    if name == "SIGINT":
        assert f"interrupted (SIGINT) after step {step}" in stderr and "--resume" in stderr


@pytest.mark.slow
def test_resume_with_a_changed_model_shape_is_one_line(demo_data, tmp_path):
    from mclip.config import load_config
    from mclip.train.trainer import train

    run = tmp_path / "run"
    train(load_config(DEMO, _train_overrides(demo_data, run, steps=2)), quiet=True)
    result = _cli(
        "train",
        "--config",
        DEMO,
        "--resume",
        *_train_overrides(demo_data, run, steps=4),
        "model.embed_dim=32",
    )
    _one_line_error(
        result, "--resume", "another shape", "model.embed_dim: 64 in the checkpoint, 32 now"
    )
    assert (run / "checkpoints" / "step_0000002" / "model.safetensors").is_file()


def test_a_shard_deleted_mid_run_is_counted_and_the_stream_goes_on(demo_data, tmp_path):
    from collections import Counter

    from mclip.data.languages import LanguagePolicy
    from mclip.data.pipeline import TrainStream
    from mclip.models.dual import ImageTransform

    shards = []
    for path in sorted((demo_data / "train").glob("*.tar")):
        shards.append(str(tmp_path / path.name))
        Path(shards[-1]).write_bytes(path.read_bytes())
    stream = TrainStream(
        shards,
        ImageTransform(16, [0.5] * 3, [0.5] * 3),
        LanguagePolicy(),
        batch_size=32,
        shuffle_size=8,
    )
    batches, skipped = iter(stream), Counter()
    skipped.update(next(batches)["skipped"])
    os.remove(shards[-1])  # 120 of 480 samples gone while the stream runs
    for _ in range(30):  # two more passes over the shards
        skipped.update(next(batches)["skipped"])
    assert skipped["unreadable_shard_or_member"] >= 1, skipped


# ---- rows handled by the data stream and the config, through the CLI as a user meets them ----


def _bad_data_shards(directory: Path) -> str:
    """One shard with a good sample next to each kind of bad one, and a truncated shard."""
    import io
    import json

    import webdataset as wds
    from PIL import Image

    def jpeg(colour):
        buffer = io.BytesIO()
        Image.new("RGB", (32, 32), colour).save(buffer, format="JPEG")
        return buffer.getvalue()

    def good(key):
        return {
            "__key__": key,
            "jpg": jpeg((key_colour(key), 20, 20)),
            "json": json.dumps(
                {"captions": {"en": [f"caption {key}"], "de": [f"Text {key}"]}}
            ).encode(),
        }

    def key_colour(key):
        return (int(key[-2:]) * 37) % 256

    samples = [
        {"__key__": "corrupt", "jpg": b"\xff\xd8 not a jpeg", "txt": b"a red circle"},
        {"__key__": "empty", "jpg": jpeg((1, 2, 3)), "txt": b"   "},
        {
            "__key__": "french",
            "jpg": jpeg((4, 5, 6)),
            "json": json.dumps({"captions": {"fr": ["un cercle"]}}).encode(),
        },
    ]
    samples += [good(f"g{i:02d}") for i in range(24)]
    for name in ("a", "b"):
        with wds.TarWriter(str(directory / f"{name}.tar")) as sink:
            for sample in samples:
                sink.write({**sample, "__key__": f"{name}{sample['__key__']}"})
    whole = (directory / "b.tar").read_bytes()
    (directory / "b.tar").write_bytes(whole[: len(whole) * 2 // 3])  # truncated mid-member
    return f"{directory}/a.tar,{directory}/b.tar"


@pytest.mark.slow
def test_bad_data_rows_are_counted_skips_in_a_run_that_finishes(demo_data, tmp_path):
    """corrupt JPEG, empty caption, caption only in an unselected language, truncated tar."""
    (tmp_path / "shards").mkdir()
    shards = _bad_data_shards(tmp_path / "shards")
    run = tmp_path / "run"
    result = _cli(
        "train",
        "--config",
        DEMO,
        *_train_overrides(demo_data, run, steps=7),
        f"data.train_shards={shards}",
        "data.languages=[en,de]",
        "train.batch_size=8",
        "data.shuffle_buffer=0",
    )  # 56 samples: both shards read to the end
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    skipped = [r for r in log_records(run) if r.get("event") == "end"][0]["skipped"]
    for reason in (
        "corrupt_image",
        "empty_caption",
        "no_caption_in_selected_languages",
        "unreadable_shard_or_member",
    ):
        assert skipped.get(reason, 0) >= 1, (reason, skipped)


@pytest.mark.parametrize(
    "override,needles",
    [
        ("train.stpes=3", ["unknown config key 'train.stpes'", "train.steps"]),
        ("train.steps=three", ["'train.steps'", "three"]),
        ("data.languages=[englsh]", ["englsh", "'en'"]),
        ("model.init_logit_scale=50", ["model.init_logit_scale", "9.21"]),
    ],
)
@pytest.mark.slow
def test_config_rows_are_one_line_before_any_work(demo_data, tmp_path, override, needles):
    """unknown config key, wrong type, unknown language code, logit scale out of range."""
    result = _cli(
        "train", "--config", DEMO, *_train_overrides(demo_data, tmp_path / "run"), override
    )
    _one_line_error(result, *needles)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_missing_checkpoint_directory_is_one_line(demo_data, tmp_path):
    result = _cli(
        "train", "--config", DEMO, *_train_overrides(demo_data, tmp_path / "none"), "--resume"
    )
    _one_line_error(result, "--resume", "no checkpoint")
    result = _cli(
        "eval",
        "--model",
        tmp_path / "absent",
        "--suite",
        ROOT / "eval_suites" / "demo.yaml",
        "--data-root",
        demo_data,
    )
    _one_line_error(result, str(tmp_path / "absent"))
