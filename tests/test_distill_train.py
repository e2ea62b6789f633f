"""Distillation in the trainer: online teachers, the logged terms, exact resume (student weights,
optimizer and projection heads), the teacher's view of each image, and config errors."""

import json
import shutil

import pytest
import torch

from mclip.config import ConfigError, load_config
from mclip.data.languages import LanguagePolicy
from mclip.data.pipeline import TrainStream
from mclip.models.dual import ImageTransform
from mclip.train.checkpoint import latest_checkpoint, list_checkpoints, load_trainer_state
from mclip.train.trainer import train
from test_resume import DEMO, _assert_same_final_state, _losses, _overrides


@pytest.fixture(scope="module")
def teacher_run(demo_data, tmp_path_factory):
    run = tmp_path_factory.mktemp("teacher") / "run"
    train(load_config(DEMO, _overrides(demo_data, run, 3, save_every=3)), quiet=True)
    return run


@pytest.fixture(scope="module")
def parallel_tsv(demo_data, tmp_path_factory):
    from mclip.data.parallel import parallel_from_shards, write_parallel_tsv
    from mclip.data.shards import expand_shards

    pairs, _ = parallel_from_shards(expand_shards(str(demo_data / "train"))[:1], "en", ["de", "sw"])
    return write_parallel_tsv(pairs, tmp_path_factory.mktemp("parallel") / "pairs.tsv")


def _student(demo_data, run, teacher_run, parallel_tsv, steps=5):
    return load_config(
        DEMO,
        _overrides(demo_data, run, steps)
        + [
            "model.embed_dim=32",  # the teacher's is 64: feature and cross terms learn projections
            f"distill.teachers=[{{model: {teacher_run}}}]",
            "distill.contrastive_weight=0.5",
            "distill.similarity_weight=0.5",
            "distill.feature_weight=0.2",
            "distill.cross_weight=0.2",
            "distill.parallel_weight=0.3",
            f"distill.parallel={parallel_tsv}",
            "distill.parallel_loss=infonce",
            "distill.parallel_batch_size=12",
        ],
    )


def test_distillation_run_logs_its_terms_and_resumes_exactly(
    demo_data, tmp_path, teacher_run, parallel_tsv
):
    """Every term at once (contrastive, similarity KD, feature KD, cross-modal, and teacher
    learning on parallel text), then a crash and --resume: the same losses, weights, optimizer
    state and heads (projections, learned scales) as the uninterrupted run."""
    full = tmp_path / "full"
    train(_student(demo_data, full, teacher_run, parallel_tsv), quiet=True)
    records = [json.loads(line) for line in (full / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if "terms" in r]
    assert set(steps[-1]["terms"]) == {
        "contrastive",
        "similarity_kd",
        "feature_kd",
        "cross_contrastive",
        "teacher_learning",
    }
    assert all(v > 0 for v in steps[-1]["terms"].values())
    weights = {
        "contrastive": 0.5,
        "similarity_kd": 0.5,
        "feature_kd": 0.2,
        "cross_contrastive": 0.2,
        "teacher_learning": 0.3,
    }
    assert steps[-1]["loss"] == pytest.approx(
        sum(weights[k] * v for k, v in steps[-1]["terms"].items()), rel=1e-5
    )
    event = next(r for r in records if r.get("event") == "parallel_text")
    assert event["pairs"] > 0 and event["teacher"] == str(teacher_run)
    expected = _losses(full)

    run = tmp_path / "crashed"
    shutil.copytree(full, run)
    for ckpt in list_checkpoints(run):
        if int(ckpt.name.split("_")[1]) > 2:
            shutil.rmtree(ckpt)
    train(_student(demo_data, run, teacher_run, parallel_tsv), resume=True, quiet=True)
    assert _losses(run) == expected
    _assert_same_final_state(latest_checkpoint(full), latest_checkpoint(run))
    heads_full = load_trainer_state(latest_checkpoint(full))["distill_heads"]
    heads_run = load_trainer_state(latest_checkpoint(run))["distill_heads"]
    assert heads_full.keys() == heads_run.keys() and "image.0.weight" in heads_full
    assert "parallel_logit_scale" in heads_full
    assert all(torch.equal(heads_full[k], heads_run[k]) for k in heads_full)
    first = load_trainer_state(list_checkpoints(full)[0])["distill_heads"]
    assert not torch.equal(first["image.0.weight"], heads_full["image.0.weight"])  # trained


def test_the_teacher_sees_the_students_image_with_the_same_flip(tmp_path):
    import io

    from PIL import Image

    from test_data import _write

    def left_red(i):  # not mirror-symmetric: a flip shows
        image = Image.new("RGB", (40, 40), (0, 0, 200))
        image.paste((200, 10 * i, 0), (0, 0, 20, 40))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()

    samples = [{"__key__": str(i), "png": left_red(i), "txt": b"a caption"} for i in range(8)]
    _write(tmp_path / "a.tar", samples)
    student = ImageTransform(32, [0.5] * 3, [0.5] * 3)
    teacher = ImageTransform(32, [0.5] * 3, [0.5] * 3)
    stream = TrainStream(
        [str(tmp_path / "a.tar")],
        student,
        LanguagePolicy(),
        8,
        shuffle_size=1,
        augment=True,
        teacher_transforms=[teacher, ImageTransform(48, [0.0] * 3, [1.0] * 3)],
    )
    batch = next(iter(stream))
    assert torch.equal(batch["teacher_images"][0], batch["images"])  # flips replayed
    assert batch["teacher_images"][1].shape == (8, 3, 48, 48)
    plain = next(
        iter(
            TrainStream(
                [str(tmp_path / "a.tar")],
                student,
                LanguagePolicy(),
                8,
                shuffle_size=1,
                augment=False,
            )
        )
    )
    assert not torch.equal(plain["images"], batch["images"])  # some image was flipped


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["distill.similarity_weight=1.0"], "'distill.teachers' is empty"),
        (["distill.teachers=[{model: runs/x}]"], "every distillation weight is 0"),
        (
            ["distill.teachers=[{model: runs/x, logit_scale: -1}]", "distill.feature_weight=1"],
            "temperature inverse t (not its log)",
        ),
        (["distill.similarity=kl"], "valid choices: softmax, sigmoid"),
        (["distill.feature_towers=[audio]"], "subset of [image, text]"),
    ],
)
def test_distill_config_errors_name_the_key(overrides, message):
    with pytest.raises(
        ConfigError,
        match=message.replace("[", r"\[")
        .replace("]", r"\]")
        .replace("(", r"\(")
        .replace(")", r"\)"),
    ):
        load_config(DEMO, overrides)


def test_online_teacher_runs_under_the_students_autocast():
    """train.precision bf16 (GPU's default) runs the online teacher in bf16 too, not fp32."""
    from mclip.train.teachers import Teacher, embed_batch

    class Recorder:
        seen = []

        def encode_image(self, pixels):
            self.seen.append(torch.is_autocast_enabled("cpu"))
            return torch.nn.functional.linear(pixels.flatten(1), torch.ones(4, 12))

        def encode_text(self, texts):
            self.seen.append(torch.is_autocast_enabled("cpu"))
            return torch.ones(len(texts), 4)

    teacher = Teacher("recorder", Recorder(), None, 10.0, 0.0, 1.0)
    batch = {"teacher_images": [torch.randn(3, 3, 2, 2)], "texts": ["a", "b", "c"]}
    for precision, autocast in (("bf16", True), ("fp32", False), ("auto", False)):
        Recorder.seen.clear()
        ((images, texts),) = embed_batch([teacher], batch, torch.device("cpu"), 2, precision)
        assert Recorder.seen == [autocast] * 4, precision  # 2 image + 2 text chunks
        assert images.dtype == texts.dtype == torch.float32 and images.shape == (3, 4)
