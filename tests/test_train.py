import math
from pathlib import Path

import pytest
import torch

from mclip.config import ConfigError, load_config
from mclip.models.dual import DualEncoder
from mclip.train.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_trainer_state,
    restore_checkpoint,
    save_checkpoint,
)
from mclip.train.distributed import DistContext, rank_digests
from mclip.train.schedule import warmup_cosine
from mclip.train.setup import build_optimizer
from mclip.train.trainer import train

from conftest import log_records, tiny_overrides

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


@pytest.mark.parametrize("kind", ["infonce", "sigmoid"])
@pytest.mark.slow
def test_short_training_lowers_the_loss(demo_data, tmp_path, kind):
    run = tmp_path / kind
    cfg = load_config(
        DEMO,
        tiny_overrides(demo_data, run)
        + [
            f"loss.kind={kind}",
            "train.steps=80",
            "train.batch_size=64",
            "train.warmup_steps=4",
            "train.lr=0.002",
            "train.log_every=4",
            "train.save_every=40",
        ],
    )
    final = train(cfg, quiet=True)
    losses = [r["loss"] for r in log_records(run) if "loss" in r]
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
    overrides = tiny_overrides(demo_data, run) + [
        "train.steps=6",
        "train.save_every=3",
        "train.keep_checkpoints=5",
    ]
    cfg = load_config(DEMO, overrides)
    train(cfg, quiet=True)
    assert [p.name for p in list_checkpoints(run)] == ["step_0000003", "step_0000006"]

    # simulate a crash after step 3: drop the last checkpoint, resume, and compare the state
    # reached at step 6 in the resumed run with the first run's
    first_final = load_trainer_state(run / "checkpoints" / "step_0000006")
    import shutil

    shutil.rmtree(run / "checkpoints" / "step_0000006")
    train(cfg, resume=True, quiet=True)
    events = [r for r in log_records(run) if r.get("event") == "resume"]
    assert events and events[-1]["step"] == 3
    # the resumed model is the step-3 checkpoint's, at the step-3 learning rate
    saved, _ = DualEncoder.load(run / "checkpoints" / "step_0000003")
    assert events[-1]["model_digest"] == rank_digests(saved, DistContext())[0]
    state3 = load_trainer_state(run / "checkpoints" / "step_0000003")
    assert events[-1]["lr"] == pytest.approx(state3["scheduler"]["_last_lr"][0])
    resumed = load_trainer_state(latest_checkpoint(run))
    assert resumed["step"] == 6
    assert resumed["scheduler"]["last_epoch"] == first_final["scheduler"]["last_epoch"] == 6
    assert resumed["optimizer"]["state"][0]["step"] == first_final["optimizer"]["state"][0]["step"]


def test_restore_checkpoint_loads_weights_optimizer_lr_and_rng(tiny_config, tmp_path):
    cfg = tiny_config
    final = train(cfg, quiet=True)  # 6 steps, checkpoints at 3 and 6
    state = load_trainer_state(final)
    cfg_model = DualEncoder(cfg.model)
    cfg_model.logit_bias.requires_grad_(False)  # InfoNCE: as the trainer does
    optimizer = build_optimizer(cfg_model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: warmup_cosine(s, cfg.train.steps, cfg.train.warmup_steps, cfg.train.min_lr_ratio),
    )
    torch.manual_seed(999)
    restore_checkpoint(final, cfg_model, optimizer, scheduler, torch.device("cpu"))
    assert torch.equal(torch.get_rng_state(), state["rng"]["torch"])
    saved, _ = DualEncoder.load(final)
    for (name, mine), theirs in zip(cfg_model.state_dict().items(), saved.state_dict().values()):
        assert torch.equal(mine, theirs), name
    for key, value in state["optimizer"]["state"].items():
        for field in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(optimizer.state_dict()["state"][key][field], value[field])
    assert scheduler.get_last_lr() == state["scheduler"]["_last_lr"]
    assert optimizer.param_groups[0]["lr"] == pytest.approx(state["scheduler"]["_last_lr"][0])


def test_a_fresh_run_refuses_a_used_out_dir_and_overwrite_replaces_it(tiny_config):
    run = Path(tiny_config.train.out_dir)
    train(tiny_config, quiet=True)
    before = (run / "log.jsonl").read_text()
    with pytest.raises(ConfigError, match="already holds checkpoints.*--resume.*--overwrite"):
        train(tiny_config, quiet=True)
    assert (run / "log.jsonl").read_text() == before  # nothing touched
    with pytest.raises(ConfigError, match="only one"):
        train(tiny_config, resume=True, overwrite=True, quiet=True)
    (run / "checkpoints" / "step_0000400").mkdir()  # an earlier, longer run's leftovers
    train(tiny_config, quiet=True, overwrite=True)
    assert [p.name for p in list_checkpoints(run)] == ["step_0000003", "step_0000006"]
    assert sum(r.get("event") == "start" for r in log_records(run)) == 1


def test_pruning_never_removes_the_checkpoint_just_written(tiny_config, tmp_path):
    model = DualEncoder(tiny_config.model)
    out = tmp_path / "out"
    for step in (400, 600):
        save_checkpoint(out, step, model, tiny_config, {"step": step})
    written = save_checkpoint(out, 200, model, tiny_config, {"step": 200}, keep=2)
    assert written.is_dir()
    assert [p.name for p in list_checkpoints(out)] == ["step_0000200", "step_0000600"]


def test_resume_needs_no_hub_and_no_original_weights(demo_data, tmp_path):
    """Towers built from local pretrained files resume from the checkpoint alone."""
    import timm
    from safetensors.torch import save_file
    from transformers import BertConfig, BertModel, ByT5Tokenizer

    text_dir, image_file = tmp_path / "text", tmp_path / "resnet10t.safetensors"
    tokenizer = ByT5Tokenizer()
    BertModel(
        BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
        ),
        add_pooling_layer=False,
    ).save_pretrained(text_dir)
    tokenizer.save_pretrained(text_dir)
    save_file(timm.create_model("resnet10t", num_classes=0).state_dict(), str(image_file))
    run = tmp_path / "run"
    cfg = load_config(
        DEMO,
        tiny_overrides(demo_data, run)
        + [
            f"model.text.name={text_dir}",
            f"model.image.pretrained={image_file}",
            "train.steps=4",
            "train.save_every=2",
        ],
    )
    train(cfg, quiet=True)
    import shutil

    shutil.rmtree(text_dir)
    image_file.unlink()
    shutil.rmtree(run / "checkpoints" / "step_0000004")
    final = train(cfg, resume=True, quiet=True)
    assert final.name == "step_0000004"


def test_training_clamps_the_logit_scale_but_loading_never_does(tiny_config, tmp_path):
    cfg = tiny_config
    cfg.model.init_logit_scale = 4.7185  # exp = 112, a pretrained SigLIP's scale
    model = DualEncoder(cfg.model)
    model.save(tmp_path / "siglip_like", cfg)
    loaded, _ = DualEncoder.load(tmp_path / "siglip_like")
    assert loaded.logit_scale.exp().item() == pytest.approx(112.0, rel=1e-4)
    final = train(cfg, quiet=True)
    trained, _ = DualEncoder.load(final)
    assert trained.logit_scale.exp().item() <= 100.0 + 1e-4
    cfg.model.max_logit_scale = None
    cfg.train.out_dir = str(tmp_path / "no_clamp")
    trained, _ = DualEncoder.load(train(cfg, quiet=True))
    assert trained.logit_scale.exp().item() > 100.0


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
    cfg = load_config(
        DEMO,
        tiny_overrides(demo_data, run)
        + [
            f"data.train_shards={bad_dir}",
            "train.steps=20",
            "train.save_every=20",
            "train.log_every=20",
        ],
    )
    train(cfg, quiet=True)
    end = [r for r in log_records(run) if r.get("event") == "end"][-1]
    assert end["skipped"]["corrupt_image"] >= 10 and end["skipped"]["empty_caption"] >= 1
