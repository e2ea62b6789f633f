"""Exact resume: a run killed at any step and resumed takes the uninterrupted run's steps.

"Exact" is checked on the per-step losses (every step logged), the final weights and the final
optimizer state, on CPU in fp32, with 0 and 2 DataLoader workers, with a real SIGKILL, with a
checkpoint write killed midway, and with 2 gloo ranks.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mclip.config import load_config
from mclip.train.checkpoint import latest_checkpoint, list_checkpoints, load_trainer_state
from mclip.train.trainer import train

from conftest import THREADS_ENV, tiny_overrides

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "demo.yaml"


def _overrides(demo_data, run, steps, workers=0, save_every=1):
    return tiny_overrides(demo_data, run) + [
        f"train.steps={steps}",
        f"train.save_every={save_every}",
        "train.log_every=1",
        "train.keep_checkpoints=100",
        f"data.num_workers={workers}",
        "data.shuffle_buffer=40",
        "data.augment=true",
        "model.text.dropout=0.1",
    ]


def _losses(run: Path) -> dict[int, float]:
    """Per-step losses; a step logged twice (before a crash and after the resume) keeps the
    later value, and both must agree anyway."""
    out = {}
    for line in (run / "log.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "loss" in record:
            out[record["step"]] = record["loss"]
    return out


def _assert_same_final_state(a: Path, b: Path):
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa), "weights differ"
    sa, sb = load_trainer_state(a)["optimizer"], load_trainer_state(b)["optimizer"]
    assert sa["state"].keys() == sb["state"].keys()
    for index, state in sa["state"].items():
        for name, value in state.items():
            assert torch.equal(value, sb["state"][index][name]), (index, name)


def _mclip(*args, env_extra=None, **kwargs):
    env = {**os.environ, **THREADS_ENV, **(env_extra or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "mclip.cli", *map(str, args)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.slow
def test_resume_from_any_step_reproduces_the_uninterrupted_run(demo_data, tmp_path, workers):
    steps = 7
    full = tmp_path / "full"
    train(load_config(DEMO, _overrides(demo_data, full, steps, workers)), quiet=True)
    expected = _losses(full)
    assert sorted(expected) == list(range(1, steps + 1))
    for crash_after in (2, 5):  # 5 is past the end of the first pass of a 2-worker reader
        run = tmp_path / f"crashed_{crash_after}"
        shutil.copytree(full, run)
        for ckpt in list_checkpoints(run):
            if int(ckpt.name.split("_")[1]) > crash_after:
                shutil.rmtree(ckpt)
        lines = (run / "log.jsonl").read_text().splitlines()
        (run / "log.jsonl").write_text(
            "".join(line + "\n" for line in lines if json.loads(line).get("step", 0) <= crash_after)
        )
        train(
            load_config(DEMO, _overrides(demo_data, run, steps, workers)), resume=True, quiet=True
        )
        resumed = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        assert not [r for r in resumed if r.get("event") == "data_order_restarted"]
        got = _losses(run)
        assert got == expected, (crash_after, got, expected)
        _assert_same_final_state(latest_checkpoint(full), latest_checkpoint(run))


def test_a_changed_data_layout_is_said_and_not_replayed(demo_data, tmp_path):
    run = tmp_path / "run"
    train(load_config(DEMO, _overrides(demo_data, run, 2)), quiet=True)
    cfg = load_config(DEMO, _overrides(demo_data, run, 4, workers=2))
    train(cfg, resume=True, quiet=True)
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    event = next(r for r in records if r.get("event") == "data_order_restarted")
    assert event["saved"]["readers"] == 1 and event["now"]["readers"] == 2
    assert sorted(_losses(run)) == [1, 2, 3, 4]


def _wait_for_step(process, run: Path, step: int, timeout=120):
    """Poll the log until ``step`` is logged; the process must still be running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1][-3000:]
        if (run / "log.jsonl").is_file() and max(_losses(run), default=0) >= step:
            return
        time.sleep(0.005)
    raise AssertionError(f"step {step} was not logged within {timeout} s")


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_gives_the_same_losses_weights_and_optimizer(
    demo_data, tmp_path
):
    steps = 40
    full, killed = tmp_path / "full", tmp_path / "killed"
    args = ("train", "--config", DEMO, "--quiet")
    done = _mclip(*args, *_overrides(demo_data, full, steps, workers=2, save_every=3))
    assert done.wait(timeout=600) == 0, done.communicate()[1][-3000:]

    victim = _mclip(*args, *_overrides(demo_data, killed, steps, workers=2, save_every=3))
    _wait_for_step(victim, killed, 8)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    last = latest_checkpoint(killed)
    assert last is not None and int(last.name.split("_")[1]) < steps, "killed too late"

    resumed = _mclip(
        *args, "--resume", *_overrides(demo_data, killed, steps, workers=2, save_every=3)
    )
    assert resumed.wait(timeout=600) == 0, resumed.communicate()[1][-3000:]
    assert _losses(killed) == _losses(full)
    _assert_same_final_state(latest_checkpoint(full), latest_checkpoint(killed))


KILL_MID_CHECKPOINT = textwrap.dedent("""
    import os, signal, sys
    import torch
    import mclip.train.checkpoint as checkpoint
    from mclip.cli import main

    plain_save = torch.save

    def save_then_die(obj, path, *args, **kwargs):
        # the weights of step 4 are written; its trainer state is half-written, then SIGKILL
        if isinstance(obj, dict) and obj.get("step") == 4:
            with open(path, "wb") as handle:
                handle.write(b"half a pickle")
                handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return plain_save(obj, path, *args, **kwargs)

    checkpoint.torch.save = save_then_die
    sys.exit(main(sys.argv[1:]))
""")


@pytest.mark.slow
def test_a_checkpoint_write_killed_midway_leaves_the_previous_one_loadable(demo_data, tmp_path):
    steps = 6
    full, killed = tmp_path / "full", tmp_path / "killed"
    train(load_config(DEMO, _overrides(demo_data, full, steps, save_every=2)), quiet=True)
    script = tmp_path / "kill_mid_checkpoint.py"
    script.write_text(KILL_MID_CHECKPOINT)
    env = {**os.environ, **THREADS_ENV}
    argv = [
        "train",
        "--config",
        str(DEMO),
        "--quiet",
        *_overrides(demo_data, killed, steps, save_every=2),
    ]
    victim = subprocess.run(
        [sys.executable, str(script), *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert victim.returncode == -signal.SIGKILL, victim.stderr[-3000:]
    leftovers = [p.name for p in (killed / "checkpoints").iterdir()]
    assert ".tmp-step_0000004" in leftovers  # the half checkpoint is there, under its temp name
    assert latest_checkpoint(killed).name == "step_0000002"
    load_trainer_state(latest_checkpoint(killed))  # the previous one loads

    resumed = subprocess.run(
        [sys.executable, "-m", "mclip.cli", *argv, "--resume"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _losses(killed) == pytest.approx(_losses(full), rel=0, abs=0)
    assert not [p for p in (killed / "checkpoints").iterdir() if p.name.startswith(".tmp")]
    _assert_same_final_state(latest_checkpoint(full), latest_checkpoint(killed))


@pytest.mark.slow
def test_two_gloo_ranks_resume_exactly(demo_data, tmp_path):
    steps = 6
    full, crashed = tmp_path / "full", tmp_path / "crashed"

    def torchrun(run, *extra):
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
                str(DEMO),
                "--quiet",
                *_overrides(demo_data, run, steps),
                *extra,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        assert result.returncode == 0, result.stderr[-3000:]

    torchrun(full)
    shutil.copytree(full, crashed)
    for ckpt in list_checkpoints(crashed):
        if int(ckpt.name.split("_")[1]) > 3:
            shutil.rmtree(ckpt)
    torchrun(crashed, "--resume")
    assert _losses(crashed) == _losses(full)
    _assert_same_final_state(latest_checkpoint(full), latest_checkpoint(crashed))


def test_restored_adam_moments_take_their_weights_memory_layout():
    """A checkpoint written with train.channels_last off, resumed with it on: the fused AdamW
    kernel reads weight, gradient and moments as flat memory, so the moments must follow."""
    import io

    from mclip.train.checkpoint import match_parameter_layout

    torch.manual_seed(0)
    weight = torch.randn(8, 4, 3, 3)
    grads = [torch.randn(8, 4, 3, 3) for _ in range(2)]

    def adam(param):
        return torch.optim.AdamW([param], lr=1e-2, fused=True)

    plain = torch.nn.Parameter(weight.clone())
    optimizer = adam(plain)
    plain.grad = grads[0].clone()
    optimizer.step()
    saved = io.BytesIO()
    torch.save(optimizer.state_dict(), saved)

    resumed = torch.nn.Parameter(
        plain.detach().clone().contiguous(memory_format=torch.channels_last)
    )
    restored = adam(resumed)
    saved.seek(0)
    restored.load_state_dict(torch.load(saved, weights_only=False))
    match_parameter_layout(restored)
    state = restored.state[resumed]
    assert state["exp_avg"].stride() == resumed.stride() == state["exp_avg_sq"].stride()
    for param, opt in ((plain, optimizer), (resumed, restored)):
        param.grad = torch.empty_like(param).copy_(grads[1])
        opt.step()
    assert torch.allclose(resumed, plain, atol=1e-6)
