"""Matryoshka prefixes (``loss.matryoshka_dims``): the step's loss and gradients equal the dense
full batch's L(x, y) + sum_k w_k L(norm(x[:, :d_k]), norm(y[:, :d_k])) for InfoNCE, sigmoid,
several captions per image and a distillation objective (prefix terms: contrastive and
similarity KD), under the gradient cache and on 2 gloo ranks; config errors; a short training
run logs each prefix's term."""

import pytest
import torch
import torch.nn.functional as F

from conftest import log_records, on_gloo_ranks, tiny_overrides
from mclip.config import ConfigError, DistillConfig, LossConfig, config_from_dict, load_config
from mclip.losses.distill_objective import DistillationObjective, DistillHeads
from mclip.losses.gather import make_gather_groups
from mclip.losses.matryoshka import MatryoshkaObjective, prefix
from mclip.losses.objective import ContrastiveObjective
from mclip.losses.reference import infonce_reference, sigmoid_reference, similarity_kd_reference
from mclip.models.dual import DualEncoder
from mclip.train.distributed import average_gradients
from mclip.train.trainer import step_gradients, train
from test_distributed import _close

CPU = torch.device("cpu")
LOCAL = 4
DIMS, WEIGHTS = [4, 8], [0.5, 1.5]
TEACHER_SCALE = 20.0
SETTINGS = ["infonce", "sigmoid", "two_captions", "distill"]


def _model():
    cfg = config_from_dict(
        {
            "model": {
                "embed_dim": 16,
                "image": {"name": "resnet10t", "image_size": 32},
                "text": {
                    "hidden_size": 32,
                    "num_layers": 1,
                    "num_heads": 2,
                    "intermediate_size": 64,
                    "max_length": 40,
                    "dropout": 0.0,
                },
            },
            "train": {"freeze_batchnorm": True},
        }
    )
    torch.manual_seed(0)
    model = DualEncoder(cfg.model)
    model.image.eval()  # BatchNorm in eval mode: the gradient cache is exact
    return model


def _batch(n, captions):
    g = torch.Generator().manual_seed(3)
    images = torch.randn(n, 3, 32, 32, generator=g)
    texts = [
        f"caption {i} " + "xy" * int(torch.randint(0, 4, (1,), generator=g))
        for i in range(n * captions)
    ]
    teacher = [
        tuple(F.normalize(torch.randn(k, 12, generator=g), dim=-1) for k in (n, n * captions))
    ]
    text_to_image = torch.arange(n).repeat_interleave(captions) if captions > 1 else None
    return images, _model().tokenize(texts), text_to_image, teacher


def _objective(setting, groups=None):
    if setting == "distill":
        cfg = DistillConfig(
            contrastive_weight=0.5,
            similarity_weight=0.5,
            feature_weight=0.3,
            feature_distance="mse",
        )
        torch.manual_seed(1)
        heads = DistillHeads(cfg, 16, [12])
        inner = DistillationObjective(
            cfg, LossConfig(chunk_size=3), heads, [TEACHER_SCALE], [0.0], [1.0], groups
        )
        return MatryoshkaObjective(inner, DIMS, WEIGHTS), heads
    kind = "sigmoid" if setting == "sigmoid" else "infonce"
    return MatryoshkaObjective(
        ContrastiveObjective(LossConfig(kind=kind, chunk_size=3), groups), DIMS, WEIGHTS
    ), None


def _grads(*modules):
    return {
        f"{i}.{n}": p.grad.clone()
        for i, m in enumerate(modules)
        if m is not None
        for n, p in m.named_parameters()
        if p.grad is not None
    }


def _reference(setting, images, tokens, text_to_image, teacher):
    model = _model()
    objective, heads = _objective(setting)
    model.logit_bias.requires_grad_(True)
    x, y, s, b = (
        model.encode_image(images),
        model.encode_text(tokens),
        model.logit_scale,
        model.logit_bias,
    )

    def contrastive(u, v):
        if setting == "sigmoid":
            return sigmoid_reference(u, v, s, b, text_to_image)
        return infonce_reference(u, v, s, text_to_image)

    if setting == "distill":
        a, t = teacher[0]
        projected = F.normalize(heads.image[0](x), dim=-1), F.normalize(heads.text[0](y), dim=-1)
        feature = (
            (projected[0] - a).pow(2).sum(-1).mean() + (projected[1] - t).pow(2).sum(-1).mean()
        ) / 2

        def term(u, v):
            return 0.5 * contrastive(u, v) + 0.5 * similarity_kd_reference(
                u, v, s, teacher, [TEACHER_SCALE]
            )

        loss = term(x, y) + 0.3 * feature
    else:
        term = contrastive
        loss = term(x, y)
    for dim, weight in zip(DIMS, WEIGHTS):
        loss = loss + weight * term(prefix(x, dim), prefix(y, dim))
    loss.backward()
    return loss.item(), _grads(model, heads)


def _step(setting, images, tokens, text_to_image, teacher, micro, groups=None, world=1):
    model = _model()
    objective, heads = _objective(setting, groups)
    model.logit_bias.requires_grad_(True)
    bound = objective
    if setting == "distill":
        bound = lambda *args: objective(*args, teachers=teacher)  # noqa: E731
    loss = step_gradients(
        model, bound, images, tokens, micro, CPU, world_size=world, text_to_image=text_to_image
    )
    if world > 1:
        average_gradients(torch.nn.ModuleList([m for m in (model, heads) if m is not None]), world)
    return loss.item(), _grads(model, heads), objective.last_terms


def _captions(setting):
    return 2 if setting == "two_captions" else 1


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("micro", [1, 2])
def test_matryoshka_step_equals_the_dense_full_batch(setting, micro):
    images, tokens, text_to_image, teacher = _batch(2 * LOCAL, _captions(setting))
    loss, grads, terms = _step(setting, images, tokens, text_to_image, teacher, micro)
    ref_loss, ref_grads = _reference(setting, images, tokens, text_to_image, teacher)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    # float32 sums in another order: with one torch thread a random text tower's LayerNorm and
    # token-type gradients differ by up to 2.3e-5 of their norm (a prefix weight off by 0.01: 1e-2)
    assert _close(grads, ref_grads, tol=5e-5)
    assert {"matryoshka_4", "matryoshka_8"} <= set(terms)
    if setting == "distill":  # feature KD stays on the full embedding
        assert {"contrastive", "similarity_kd", "feature_kd"} <= set(terms)


def _rank_results(rank, world):
    out = {}
    for setting in SETTINGS:
        captions = _captions(setting)
        images, tokens, text_to_image, teacher = _batch(world * LOCAL, captions)
        rows, text_rows = (
            slice(rank * LOCAL, (rank + 1) * LOCAL),
            slice(rank * LOCAL * captions, (rank + 1) * LOCAL * captions),
        )
        local_map = None if text_to_image is None else text_to_image[text_rows] - rank * LOCAL
        out[setting] = _step(
            setting,
            images[rows],
            {k: v[text_rows] for k, v in tokens.items()},
            local_map,
            [(a[rows], t[text_rows]) for a, t in teacher],
            2,
            make_gather_groups(world),
            world,
        )[:2]
    return out


@pytest.mark.slow
def test_two_gloo_ranks_train_the_prefixes_exactly(tmp_path):
    results = on_gloo_ranks(_rank_results, tmp_path)
    for setting in SETTINGS:
        images, tokens, text_to_image, teacher = _batch(2 * LOCAL, _captions(setting))
        ref_loss, ref_grads = _reference(setting, images, tokens, text_to_image, teacher)
        loss, grads = results[setting]
        assert loss == pytest.approx(ref_loss, rel=1e-5), setting
        assert _close(grads, ref_grads, tol=5e-5), setting


@pytest.mark.parametrize(
    "loss,needle",
    [
        ({"matryoshka_dims": [8, 4]}, "increasing"),
        ({"matryoshka_dims": [16]}, "below model.embed_dim"),
        ({"matryoshka_dims": [4, 8], "matryoshka_weights": [1.0]}, "one finite weight"),
        ({"matryoshka_weights": [1.0]}, "matryoshka_dims' is empty"),
    ],
)
def test_matryoshka_config_errors_name_the_key(loss, needle):
    with pytest.raises(ConfigError, match=needle):
        config_from_dict({"model": {"embed_dim": 16}, "loss": loss})


def test_a_training_run_logs_each_prefix_term(demo_data, tmp_path):
    from pathlib import Path

    run = tmp_path / "run"
    cfg = load_config(
        Path(__file__).resolve().parents[1] / "configs" / "demo.yaml",
        tiny_overrides(demo_data, run)
        + ["train.steps=2", "train.log_every=1", "loss.matryoshka_dims=[8,32]"],
    )
    train(cfg, quiet=True)
    steps = [r for r in log_records(run) if "loss" in r]
    assert all(set(r["terms"]) == {"matryoshka_8", "matryoshka_32"} for r in steps)
    assert steps[0]["loss"] > steps[0]["terms"]["matryoshka_8"]
