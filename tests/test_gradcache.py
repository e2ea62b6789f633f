import pytest
import torch

from mclip.config import LossConfig, config_from_dict
from mclip.losses.objective import ContrastiveObjective
from mclip.models.dual import DualEncoder
from mclip.train.batchnorm import batchnorm_stats_frozen, set_batchnorm_eval
from mclip.train.trainer import step_gradients

CPU = torch.device("cpu")


def _model(image="vit_tiny_patch16_224", dropout=0.1, drop_path=0.1, seed=0):
    cfg = config_from_dict(
        {
            "model": {
                "embed_dim": 16,
                "image": {"name": image, "image_size": 32, "drop_path_rate": drop_path},
                "text": {
                    "hidden_size": 32,
                    "num_layers": 1,
                    "num_heads": 2,
                    "intermediate_size": 64,
                    "max_length": 40,
                    "dropout": dropout,
                },
            }
        }
    )
    torch.manual_seed(seed)
    return DualEncoder(cfg.model)


def _batch(model, n=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, 32, 32, generator=g)
    texts = [f"caption {i} " + "x" * int(torch.randint(0, 20, (1,), generator=g)) for i in range(n)]
    return images, model.tokenize(texts)


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same(a, b, tol=1e-5):
    """Every gradient tensor equal up to fp32 rounding: ||a - b|| <= tol (||b|| + 1e-3 g), g the
    largest gradient norm (attention key biases have a true gradient of 0: only noise)."""
    assert a.keys() == b.keys()
    scale = max(g.norm() for g in b.values())
    for name in a:
        error = (a[name] - b[name]).norm()
        assert error <= tol * (b[name].norm() + 1e-3 * scale), (name, error.item())


@pytest.mark.parametrize("kind", ["infonce", "sigmoid"])
def test_gradient_cache_equals_micro_batched_forward_with_dropout(kind):
    """With dropout and drop-path active, replayed RNG gives exactly the un-cached gradient."""
    model = _model()
    model.logit_bias.requires_grad_(kind == "sigmoid")
    objective = ContrastiveObjective(LossConfig(kind=kind))
    images, tokens = _batch(model)

    torch.manual_seed(123)
    step_gradients(model, objective, images, tokens, micro_batches=3, device=CPU)
    cached = _grads(model)

    model.zero_grad(set_to_none=True)
    torch.manual_seed(123)
    image_parts, text_parts = [], []
    for rows in torch.arange(12).tensor_split(3):
        image_parts.append(model.encode_image(images[rows]))
        text_parts.append(model.encode_text({k: v[rows] for k, v in tokens.items()}))
    loss, _ = objective(
        torch.cat(image_parts), torch.cat(text_parts), model.logit_scale, model.logit_bias
    )
    loss.backward()
    reference = _grads(model)
    assert "logit_scale" in cached and ("logit_bias" in cached) == (kind == "sigmoid")
    _assert_same(cached, reference)


def test_gradient_cache_equals_full_batch_without_dropout():
    model = _model(dropout=0.0, drop_path=0.0)
    objective = ContrastiveObjective(LossConfig(kind="infonce"))
    model.logit_bias.requires_grad_(False)
    images, tokens = _batch(model)
    step_gradients(model, objective, images, tokens, micro_batches=1, device=CPU)
    full = _grads(model)
    for k in (2, 5, 12):
        model.zero_grad(set_to_none=True)
        step_gradients(model, objective, images, tokens, micro_batches=k, device=CPU)
        _assert_same(_grads(model), full)


def test_logit_scale_gets_its_gradient_once_unlike_open_clip_accumulation():
    """open_clip --accum-freq K re-evaluates the loss per micro-batch: the towers' gradients add
    up to the full batch's, but the logit scale receives K times its gradient."""
    k = 3
    model = _model(dropout=0.0, drop_path=0.0)
    model.logit_bias.requires_grad_(False)
    objective = ContrastiveObjective(LossConfig(kind="infonce"))
    images, tokens = _batch(model)
    step_gradients(model, objective, images, tokens, micro_batches=k, device=CPU)
    ours = _grads(model)

    model.zero_grad(set_to_none=True)  # open_clip's accumulation, written out
    pieces = torch.arange(12).tensor_split(k)
    with torch.no_grad():
        cached_images = [model.encode_image(images[r]) for r in pieces]
        cached_texts = [model.encode_text({n: v[r] for n, v in tokens.items()}) for r in pieces]
    for j, rows in enumerate(pieces):
        image_parts, text_parts = list(cached_images), list(cached_texts)
        image_parts[j] = model.encode_image(images[rows])
        text_parts[j] = model.encode_text({n: v[rows] for n, v in tokens.items()})
        loss, _ = objective(
            torch.cat(image_parts), torch.cat(text_parts), model.logit_scale, model.logit_bias
        )
        loss.backward()
    theirs = _grads(model)
    assert torch.allclose(theirs["logit_scale"], k * ours["logit_scale"], rtol=1e-4)
    assert torch.allclose(
        theirs["image.proj.weight"], ours["image.proj.weight"], rtol=1e-4, atol=1e-7
    )


def test_batchnorm_tower_is_exact_with_frozen_batchnorm():
    model = _model(image="resnet10t", dropout=0.0, drop_path=0.0)
    model.logit_bias.requires_grad_(False)
    objective = ContrastiveObjective(LossConfig(kind="infonce"))
    images, tokens = _batch(model)
    model.train()
    assert set_batchnorm_eval(model) > 0
    step_gradients(model, objective, images, tokens, micro_batches=1, device=CPU)
    full = _grads(model)
    model.zero_grad(set_to_none=True)
    step_gradients(model, objective, images, tokens, micro_batches=4, device=CPU)
    _assert_same(_grads(model), full)


def test_no_grad_pass_leaves_batchnorm_statistics_alone():
    model = _model(image="resnet10t")
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = (bn.running_mean.clone(), bn.num_batches_tracked.clone())
    with torch.no_grad(), batchnorm_stats_frozen(model):
        model.encode_image(torch.randn(4, 3, 32, 32))
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(
        bn.num_batches_tracked, before[1]
    )
    assert bn.momentum == 0.1


def test_fully_frozen_text_tower_with_gradient_cache():
    model = _model(dropout=0.0, drop_path=0.0)
    for param in model.text.parameters():
        param.requires_grad_(False)
    model.logit_bias.requires_grad_(False)
    objective = ContrastiveObjective(LossConfig(kind="infonce"))
    images, tokens = _batch(model)
    step_gradients(model, objective, images, tokens, micro_batches=1, device=CPU)
    full = _grads(model)
    model.zero_grad(set_to_none=True)
    step_gradients(model, objective, images, tokens, micro_batches=3, device=CPU)
    assert not any(name.startswith("text.") for name in full)
    _assert_same(_grads(model), full)


def _batchnorms(model):
    return [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]


@pytest.mark.parametrize("micro_batches", [1, 4])
def test_batchnorm_statistics_move_once_per_step_from_the_whole_batch(micro_batches):
    import copy

    model = _model(image="resnet10t", dropout=0.0, drop_path=0.0)
    model.logit_bias.requires_grad_(False)
    objective = ContrastiveObjective(LossConfig(kind="infonce"))
    images, tokens = _batch(model)
    model.train()
    full = copy.deepcopy(model)
    full.encode_image(images)  # one plain training forward over the whole batch
    step_gradients(model, objective, images, tokens, micro_batches=micro_batches, device=CPU)
    ours, theirs = _batchnorms(model), _batchnorms(full)
    assert all(int(bn.num_batches_tracked) == 1 for bn in ours)
    # the first layer sees the same inputs either way; later ones do only without micro-batches
    compared = ours if micro_batches == 1 else ours[:1]
    for mine, ref in zip(compared, theirs):
        assert torch.allclose(mine.running_mean, ref.running_mean, atol=1e-6, rtol=1e-5)
        assert torch.allclose(mine.running_var, ref.running_var, atol=1e-6, rtol=1e-5)
