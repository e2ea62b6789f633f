import json
import math
from pathlib import Path

import pytest

from mclip.config import ConfigError, load_config
from mclip.train.checkpoint import latest_checkpoint, list_checkpoints, load_trainer_state
from mclip.train.trainer import train

from conftest import tiny_overrides

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("kind", ["infonce", "sigmoid"])
def test_short_training_lowers_the_loss(demo_data, tmp_path, kind):
    run = tmp_path / kind
    cfg = load_config(DEMO, tiny_overrides(demo_data, run) + [
        f"loss.kind={kind}", "train.steps=80", "train.batch_size=64", "train.warmup_steps=4",
        "train.lr=0.002", "train.log_every=4", "train.save_every=40"])
    final = train(cfg, quiet=True)
    losses = [r["loss"] for r in _records(run) if "loss" in r]
    assert len(losses) == 20
    late = sum(losses[-3:]) / 3
    if kind == "infonce":  # clearly below chance level ln(B), where an untrained model sits
        assert late < math.log(64) - 0.25, losses
    assert late < sum(losses[:2]) / 2 - 0.3, losses
    assert final == run / "checkpoints" / "step_0000080"
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".tmp")]
    state = load_trainer_state(final)
    assert state["step"] == 80


def test_resume_restores_model_optimizer_scheduler_and_step(demo_data, tmp_path):
    run = tmp_path / "run"
    overrides = tiny_overrides(demo_data, run) + ["train.steps=6", "train.save_every=3",
                                                  "train.keep_checkpoints=5"]
    cfg = load_config(DEMO, overrides)
    train(cfg, quiet=True)
    assert [p.name for p in list_checkpoints(run)] == ["step_0000003", "step_0000006"]

    # simulate a crash after step 3: drop the last checkpoint, resume, and compare the state
    # reached at step 6 in the resumed run with the first run's
    first_final = load_trainer_state(run / "checkpoints" / "step_0000006")
    import shutil
    shutil.rmtree(run / "checkpoints" / "step_0000006")
    train(cfg, resume=True, quiet=True)
    events = [r for r in _records(run) if r.get("event") == "resume"]
    assert events and events[-1]["step"] == 3
    resumed = load_trainer_state(latest_checkpoint(run))
    assert resumed["step"] == 6
    assert resumed["scheduler"]["last_epoch"] == first_final["scheduler"]["last_epoch"] == 6
    assert resumed["optimizer"]["state"][0]["step"] == first_final["optimizer"]["state"][0]["step"]


def test_resume_without_checkpoint_is_a_clear_error(tiny_config):
    with pytest.raises(ConfigError, match="no checkpoint"):
        train(tiny_config, resume=True, quiet=True)


def test_skips_are_logged(tmp_path, demo_data):
    """A run over a shard with bad samples trains on the good ones and logs what it skipped."""
    import io
    import webdataset as wds
    from PIL import Image
    from mclip.data.shards import expand_shards

    bad_dir = tmp_path / "data"
    bad_dir.mkdir()
    for i, shard in enumerate(expand_shards(str(demo_data / "train"))):
        (bad_dir / f"good-{i}.tar").write_bytes(Path(shard).read_bytes())
    with wds.TarWriter(str(bad_dir / "bad.tar")) as sink:
        for k in range(10):
            sink.write({"__key__": f"bad{k}", "jpg": b"\xff\xd8 broken", "txt": b"a red circle"})
        buffer = io.BytesIO()
        Image.new("RGB", (32, 32)).save(buffer, format="JPEG")
        sink.write({"__key__": "empty", "jpg": buffer.getvalue(), "txt": b""})
    run = tmp_path / "run"
    cfg = load_config(DEMO, tiny_overrides(demo_data, run) + [
        f"data.train_shards={bad_dir}", "train.steps=20", "train.save_every=20",
        "train.log_every=20"])
    train(cfg, quiet=True)
    end = [r for r in _records(run) if r.get("event") == "end"][-1]
    assert end["skipped"]["corrupt_image"] >= 10 and end["skipped"]["empty_caption"] >= 1
