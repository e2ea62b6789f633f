"""The distillation recipes of configs/ run end to end on tiny settings (a few steps)."""

from pathlib import Path

import torch

from mclip.config import load_config
from mclip.data.parallel import parallel_from_shards, write_parallel_tsv
from mclip.data.shards import expand_shards
from mclip.models.adapters import load_model
from mclip.train.trainer import train
from test_resume import DEMO

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY = [
    "train.steps=2",
    "train.warmup_steps=1",
    "train.batch_size=16",
    "train.save_every=2",
    "data.num_workers=0",
    "data.shuffle_buffer=16",
]


def test_demo_distill_teacher_learning_and_align_recipes_run(demo_data, tmp_path):
    teacher = tmp_path / "teacher"
    train(
        load_config(
            DEMO,
            TINY
            + [
                f"data.train_shards={demo_data}/train",
                f"train.out_dir={teacher}",
                "model.image.image_size=32",
                "data.augment=false",
                "model.text.max_length=192",
            ],
        ),
        quiet=True,
    )
    student = tmp_path / "student"
    train(
        load_config(
            CONFIGS / "demo_distill.yaml",
            TINY
            + [
                f"data.train_shards={demo_data}/train",
                f"train.out_dir={student}",
                "model.image.image_size=32",
                f"distill.teachers=[{{model: {teacher}}}]",
                f"model.inherit.from_model={teacher}",
            ],
        ),
        quiet=True,
    )
    assert load_model(str(student)).embed_dim == load_model(str(teacher)).embed_dim == 256
    distilled, source = load_model(str(student)).model, load_model(str(teacher)).model
    # The recipe's text tower is the teacher's, inherited and kept frozen; the image tower trains.
    for name, weight in distilled.text.state_dict().items():
        assert torch.equal(weight, source.text.state_dict()[name]), name
    assert sum(p.numel() for p in distilled.parameters()) * 4 <= sum(
        p.numel() for p in source.parameters()
    )

    pairs, _ = parallel_from_shards(expand_shards(str(demo_data / "train"))[:1])
    parallel = write_parallel_tsv(pairs, tmp_path / "parallel.tsv")
    taught = tmp_path / "taught"
    train(
        load_config(
            CONFIGS / "demo_teacher_learning.yaml",
            TINY
            + [
                f"teacher_learning.teacher={teacher}",
                f"teacher_learning.parallel={parallel}",
                f"model.inherit.from_model={teacher}",
                f"train.out_dir={taught}",
            ],
        ),
        quiet=True,
    )
    aligned = tmp_path / "aligned"
    train(
        load_config(
            CONFIGS / "demo_distill_align.yaml",
            TINY
            + [
                f"data.train_shards={demo_data}/train",
                f"model.inherit.from_model={taught}",
                f"train.out_dir={aligned}",
            ],
        ),
        quiet=True,
    )
    assert load_model(str(aligned)).encode_text(["ein Kreis"]).shape == (1, 256)
    # Stage 2 aligns the text tower only: the image tower (and its BatchNorm statistics) stays
    # the one stage 1 took from the teacher, bit for bit.
    aligned_model, taught_model = load_model(str(aligned)).model, load_model(str(taught)).model
    for name, weight in aligned_model.image.state_dict().items():
        assert torch.equal(weight, taught_model.image.state_dict()[name]), name
        assert torch.equal(weight, source.image.state_dict()[name]), name
    assert any(
        not torch.equal(weight, taught_model.text.state_dict()[name])
        for name, weight in aligned_model.text.state_dict().items()
    )
