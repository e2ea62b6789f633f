"""Teacher learning as a term of the image-text step (distill.parallel_weight): its gradient is
the weighted dense teacher-learning gradient of the step's pairs (through the student's learned
projection), under the gradient cache and on 2 gloo ranks; config errors name the key."""

import hashlib

import pytest
import torch
import torch.nn.functional as F

from mclip.config import ConfigError, config_from_dict, load_config
from mclip.losses.distill_objective import DistillHeads
from mclip.losses.gather import make_gather_groups
from mclip.losses.reference import infonce_reference
from mclip.train.distributed import average_gradients
from mclip.train.parallel_term import ParallelTextTerm
from mclip.train.teacher_learning import pair_order
from mclip.train.teachers import Teacher
from conftest import on_gloo_ranks
from test_distill_step import _model
from test_distributed import _close
from test_resume import DEMO

CPU = torch.device("cpu")
TEACHER_DIM, WEIGHT, BATCH, STEP = 24, 0.4, 8, 3
PAIRS = [
    (f"a red circle number {i}", f"ein roter Kreis Nummer {i}" + " x" * (i % 4), "de")
    for i in range(10)
]


class HashTeacher:
    """A frozen teacher text tower: a fixed unit vector per text."""

    def encode_text(self, texts):
        rows = [
            torch.randn(
                TEACHER_DIM,
                generator=torch.Generator().manual_seed(
                    int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
                ),
            )
            for text in texts
        ]
        return F.normalize(torch.stack(rows), dim=-1)


def _cfg(loss, micro=1):
    return config_from_dict(
        {
            "model": {"embed_dim": 16},
            "distill": {
                "teachers": [{"model": "teacher"}],
                "similarity_weight": 1.0,
                "parallel_weight": WEIGHT,
                "parallel": "pairs.tsv",
                "parallel_loss": loss,
                "parallel_include_source": False,
            },
            "train": {"batch_size": BATCH, "micro_batches": micro, "seed": 3},
            "loss": {"chunk_size": 3},
        }
    )


def _heads(cfg):
    torch.manual_seed(1)
    return DistillHeads(cfg.distill, 16, [TEACHER_DIM])


def _term_gradients(loss, micro, groups=None, rank=0, world=1):
    cfg = _cfg(loss, micro)
    model, heads = _model(), _heads(cfg)
    teacher = Teacher("hash", HashTeacher(), None, 10.0, 0.0, 1.0)
    term = ParallelTextTerm(cfg, PAIRS, teacher, 0, heads, groups, rank, world)
    value = term.add_gradients(model, STEP, CPU)
    trained = torch.nn.ModuleList([model, heads])
    if world > 1:
        average_gradients(trained, world)
    return value.item(), {
        n: p.grad.clone() for n, p in trained.named_parameters() if p.grad is not None
    }


def _reference(loss):
    cfg = _cfg(loss)
    model, heads = _model(), _heads(cfg)
    rows = pair_order(len(PAIRS), 3, STEP, BATCH)
    teacher = HashTeacher().encode_text([PAIRS[i][0] for i in rows])
    student = F.normalize(
        heads.text[0](model.encode_text(model.tokenize([PAIRS[i][1] for i in rows]))), dim=-1
    )
    value = (
        (student - teacher).pow(2).sum(1).mean()
        if loss == "mse"
        else infonce_reference(teacher, student, heads.parallel_logit_scale)
    )
    (WEIGHT * value).backward()
    trained = torch.nn.ModuleList([model, heads])
    return value.item(), {
        n: p.grad.clone() for n, p in trained.named_parameters() if p.grad is not None
    }


@pytest.mark.parametrize("loss", ["mse", "infonce"])
@pytest.mark.parametrize("micro", [1, 3])
def test_term_gradient_is_the_weighted_dense_teacher_learning_gradient(loss, micro):
    value, grads = _term_gradients(loss, micro)
    ref_value, ref_grads = _reference(loss)
    assert value == pytest.approx(ref_value, rel=1e-5)
    assert _close(grads, ref_grads)
    assert any(name.startswith("1.text.") for name in grads)  # the projection learns
    assert ("1.parallel_logit_scale" in grads) == (loss == "infonce")
    assert any(name.startswith("0.text.") for name in grads)
    assert not any(name.startswith("0.image.") for name in grads)  # no images in this term


def _rank_results(rank, world):
    return {
        (loss, micro): _term_gradients(loss, micro, make_gather_groups(world), rank, world)
        for loss in ("mse", "infonce")
        for micro in (1, 2)
    }


@pytest.mark.slow
def test_two_gloo_ranks_give_the_full_batch_term(tmp_path):
    results = on_gloo_ranks(_rank_results, tmp_path)
    for (loss, micro), (value, grads) in results.items():
        ref_value, ref_grads = _reference(loss)
        assert value == pytest.approx(ref_value, rel=1e-5), (loss, micro)
        assert _close(grads, ref_grads), (loss, micro)


def test_parallel_term_config_errors():
    with pytest.raises(ConfigError, match="'distill.parallel' is empty"):
        load_config(DEMO, ["distill.teachers=[{model: t}]", "distill.parallel_weight=1"])
    with pytest.raises(ConfigError, match="distill.parallel_loss.*valid choices: mse, infonce"):
        load_config(
            DEMO,
            [
                "distill.teachers=[{model: t}]",
                "distill.parallel_weight=1",
                "distill.parallel=p.tsv",
                "distill.parallel_loss=kl",
            ],
        )
    with pytest.raises(ConfigError, match="needs an online teacher"):
        load_config(
            DEMO,
            [
                "distill.teachers=[{embeddings: e}]",
                "distill.parallel_weight=1",
                "distill.parallel=p.tsv",
            ],
        )
    with pytest.raises(
        ConfigError, match="parallel_weight\\) is > 0 but 'distill.teachers' is empty"
    ):
        load_config(DEMO, ["distill.parallel_weight=1", "distill.parallel=p.tsv"])
