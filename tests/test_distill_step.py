"""A distillation step is exact: tiled terms, gradient cache and 2 gloo ranks all give the loss and
gradients of the dense single-process full batch (student towers, projection heads and scales),
for one teacher and for an ensemble of two of different sizes, temperatures and weights.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from mclip.config import DistillConfig, LossConfig, config_from_dict
from mclip.losses.distill import feature_distance
from mclip.losses.distill_objective import DistillationObjective, DistillHeads
from mclip.losses.gather import make_gather_groups
from mclip.losses.reference import infonce_reference, sigmoid_kd_reference, similarity_kd_reference
from mclip.models.dual import DualEncoder
from mclip.train.distributed import average_gradients
from mclip.train.trainer import step_gradients
from conftest import on_gloo_ranks
from test_distributed import _close

CPU = torch.device("cpu")
LOCAL = 4  # images per rank
TEACHER_DIM, TEACHER_SCALE, TEACHER_BIAS = 24, 30.0, -6.0
ENSEMBLE = dict(
    dims=[TEACHER_DIM, 20],
    scales=[TEACHER_SCALE, 15.0],
    biases=[TEACHER_BIAS, -3.0],
    weights=[0.75, 0.25],
)

SETTINGS = {
    "softmax": dict(
        contrastive_weight=0.5,
        similarity_weight=0.5,
        feature_weight=0.3,
        cross_weight=0.2,
        feature_distance="mse",
    ),
    "sigmoid": dict(
        contrastive_weight=0.0,
        similarity_weight=1.0,
        similarity="sigmoid",
        feature_weight=0.5,
        feature_distance="cosine",
        feature_towers=["text"],
    ),
    "ensemble": dict(
        contrastive_weight=0.5,
        similarity_weight=0.5,
        feature_weight=0.3,
        cross_weight=0.2,
        feature_distance="smooth_l1",
    ),
}


def _teachers(setting):
    """(sizes, scales, biases, weights) of the setting's teachers."""
    if setting == "ensemble":
        return ENSEMBLE["dims"], ENSEMBLE["scales"], ENSEMBLE["biases"], ENSEMBLE["weights"]
    return [TEACHER_DIM], [TEACHER_SCALE], [TEACHER_BIAS], [1.0]


def _model():
    cfg = config_from_dict(
        {
            "model": {
                "embed_dim": 16,
                "image": {"name": "vit_tiny_patch16_224", "image_size": 32},
                "text": {
                    "hidden_size": 32,
                    "num_layers": 1,
                    "num_heads": 2,
                    "intermediate_size": 64,
                    "max_length": 40,
                    "dropout": 0.0,
                },
            }
        }
    )
    torch.manual_seed(0)
    return DualEncoder(cfg.model)


def _heads(cfg, setting):
    torch.manual_seed(1)
    return DistillHeads(cfg, 16, _teachers(setting)[0])


def _batch(n):
    g = torch.Generator().manual_seed(7)
    images = torch.randn(n, 3, 32, 32, generator=g)
    texts = [
        f"picture {i} " + "abc" * int(torch.randint(0, 5, (1,), generator=g)) for i in range(n)
    ]
    teachers = [
        tuple(F.normalize(torch.randn(n, dim, generator=g), dim=-1) for _ in range(2))
        for dim in ENSEMBLE["dims"]
    ]  # (image, text) per teacher
    return images, _model().tokenize(texts), teachers


def _grads(*modules):
    return {
        f"{i}.{n}": p.grad.clone()
        for i, m in enumerate(modules)
        for n, p in m.named_parameters()
        if p.grad is not None
    }


def _reference(setting, images, tokens, teachers):
    """The dense loss of the whole batch, written out term by term."""
    cfg = DistillConfig(**SETTINGS[setting])
    model, heads = _model(), _heads(cfg, setting)
    model.logit_bias.requires_grad_(True)
    x, y = model.encode_image(images), model.encode_text(tokens)
    (a, b), s, bias = teachers[0], model.logit_scale, model.logit_bias
    if setting == "ensemble":
        _, scales, _, weights = _teachers(setting)
        weights = [w / sum(weights) for w in weights]
        c, feature, cross = heads.cross_logit_scale, 0, 0
        for k, (a, b) in enumerate(teachers):
            px, py = F.normalize(heads.image[k](x), dim=-1), F.normalize(heads.text[k](y), dim=-1)
            feature = (
                feature
                + weights[k]
                * (
                    feature_distance(px, a, "smooth_l1").mean()
                    + feature_distance(py, b, "smooth_l1").mean()
                )
                / 2
            )
            cross = (
                cross + weights[k] * (infonce_reference(px, b, c) + infonce_reference(a, py, c)) / 2
            )
        loss = (
            0.5 * infonce_reference(x, y, s)
            + 0.5 * similarity_kd_reference(x, y, s, teachers, scales, weights)
            + 0.3 * feature
            + 0.2 * cross
        )
    elif setting == "softmax":
        px = F.normalize(heads.image[0](x), dim=-1)
        py = F.normalize(heads.text[0](y), dim=-1)
        c = heads.cross_logit_scale
        loss = (
            0.5 * infonce_reference(x, y, s)
            + 0.5 * similarity_kd_reference(x, y, s, [(a, b)], [TEACHER_SCALE])
            + 0.3
            * (feature_distance(px, a, "mse").mean() + feature_distance(py, b, "mse").mean())
            / 2
            + 0.2 * (infonce_reference(px, b, c) + infonce_reference(a, py, c)) / 2
        )
    else:
        py = F.normalize(heads.text[0](y), dim=-1)
        loss = (
            sigmoid_kd_reference(x, y, s, bias, [(a, b)], [TEACHER_SCALE], [TEACHER_BIAS])
            + 0.5 * feature_distance(py, b, "cosine").mean()
        )
    loss.backward()
    return loss.item(), _grads(model, heads)


def _step(setting, images, tokens, teachers, micro_batches, groups=None, world=1):
    cfg = DistillConfig(**SETTINGS[setting])
    model, heads = _model(), _heads(cfg, setting)
    _, scales, biases, weights = _teachers(setting)
    objective = DistillationObjective(
        cfg, LossConfig(kind="infonce", chunk_size=3), heads, scales, biases, weights, groups
    )
    model.logit_bias.requires_grad_(True)
    bound = lambda *args: objective(*args, teachers=teachers[: len(scales)])  # noqa: E731
    loss = step_gradients(model, bound, images, tokens, micro_batches, CPU, world_size=world)
    trained = torch.nn.ModuleList([model, heads])
    if world > 1:
        average_gradients(trained, world)
    return loss.item(), _grads(model, heads), objective.last_terms


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("micro_batches", [1, 3])
def test_distillation_step_equals_the_dense_full_batch(setting, micro_batches):
    images, tokens, teachers = _batch(2 * LOCAL)
    loss, grads, terms = _step(setting, images, tokens, teachers, micro_batches)
    ref_loss, ref_grads = _reference(setting, images, tokens, teachers)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    assert _close(grads, ref_grads)
    assert any(k.startswith("1.") for k in grads)  # the projection heads are trained too
    weights = SETTINGS[setting]
    assert loss == pytest.approx(
        sum(weights[f"{name.split('_')[0]}_weight"] * value for name, value in terms.items()),
        rel=1e-6,
    )
    assert set(terms) == (
        {"contrastive", "similarity_kd", "feature_kd", "cross_contrastive"}
        if setting != "sigmoid"
        else {"similarity_kd", "feature_kd"}
    )


def _rank_results(rank, world):
    images, tokens, teachers = _batch(world * LOCAL)
    rows = slice(rank * LOCAL, (rank + 1) * LOCAL)
    return {
        (setting, micro): _step(
            setting,
            images[rows],
            {k: v[rows] for k, v in tokens.items()},
            [(a[rows], b[rows]) for a, b in teachers],
            micro,
            make_gather_groups(world),
            world,
        )[:2]
        for setting in SETTINGS
        for micro in (1, 2)
    }


@pytest.mark.slow
def test_two_gloo_ranks_distill_exactly_like_the_full_batch(tmp_path):
    results = on_gloo_ranks(_rank_results, tmp_path)
    images, tokens, teachers = _batch(2 * LOCAL)
    for setting in SETTINGS:
        ref_loss, ref_grads = _reference(setting, images, tokens, teachers)
        for micro in (1, 2):
            loss, grads = results[setting, micro]
            assert loss == pytest.approx(ref_loss, rel=1e-5), (setting, micro)
            assert _close(grads, ref_grads), (setting, micro)


def test_student_equal_to_its_teacher_has_zero_kd_terms():
    images, tokens, _ = _batch(2 * LOCAL)
    model = _model()
    with torch.no_grad():
        teacher = [(model.encode_image(images), model.encode_text(tokens))]
    cfg = DistillConfig(
        contrastive_weight=0.0, similarity_weight=1.0, feature_weight=1.0, feature_distance="mse"
    )
    heads = DistillHeads(cfg, 16, [16])  # same size: identity, nothing to learn
    assert not list(heads.parameters())
    objective = DistillationObjective(
        cfg, LossConfig(), heads, [math.exp(model.logit_scale.item())], [0.0], [1.0]
    )
    loss, value = objective(
        model.encode_image(images),
        model.encode_text(tokens),
        model.logit_scale,
        model.logit_bias,
        None,
        teacher,
    )
    assert abs(value.item()) < 1e-6 and objective.last_terms["similarity_kd"] < 1e-6


def test_the_cross_modal_scale_is_clamped_like_the_students():
    heads = DistillHeads(
        DistillConfig(cross_weight=0.2, cross_init_logit_scale=math.log(1000.0)), 16, [TEACHER_DIM]
    )
    heads.clamp_logit_scale(None)
    assert heads.cross_logit_scale.exp().item() == pytest.approx(1000.0)
    heads.clamp_logit_scale(100.0)
    assert heads.cross_logit_scale.exp().item() == pytest.approx(100.0)
