import pytest
import torch
import torch.nn.functional as F

from mclip.losses.contrastive import InfoNCELoss, SigmoidLoss, build_loss
from mclip.losses.reference import infonce_reference, sigmoid_reference
from mclip.config import LossConfig


def _features(n, m, d=16, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=-1).requires_grad_()
    y = F.normalize(torch.randn(m, d, generator=g, dtype=dtype), dim=-1).requires_grad_()
    return x, y


def _grads(loss, *tensors):
    return torch.autograd.grad(loss, tensors)


def test_infonce_matches_cross_entropy_on_diagonal():
    x, y = _features(12, 12)
    scale = torch.tensor(2.5, dtype=torch.float64, requires_grad=True)
    ours = infonce_reference(x, y, scale)
    logits = scale.exp() * x @ y.T
    labels = torch.arange(12)
    plain = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    assert torch.allclose(ours, plain, atol=1e-12)
    for a, b in zip(_grads(ours, x, y, scale), _grads(plain, x, y, scale)):
        assert torch.allclose(a, b, atol=1e-12)


def test_infonce_several_captions_per_image():
    """Each positive pair contributes its row and column cross-entropy."""
    x, y = _features(3, 5, seed=1)
    owner = torch.tensor([0, 0, 1, 2, 2])
    scale = torch.tensor(1.0, dtype=torch.float64)
    logits = x @ y.T * scale.exp()
    expected = 0.0
    for j, i in enumerate(owner.tolist()):
        expected += (torch.logsumexp(logits[i], 0) - logits[i, j]) + (
            torch.logsumexp(logits[:, j], 0) - logits[i, j]
        )
    expected = expected / (2 * 5)
    assert torch.allclose(infonce_reference(x, y, scale, owner), expected, atol=1e-12)


def test_sigmoid_matches_definition_and_multi_positive():
    x, y = _features(4, 6, seed=2)
    owner = torch.tensor([0, 1, 1, 2, 3, 3])
    scale, bias = torch.tensor(1.2, dtype=torch.float64), torch.tensor(-3.0, dtype=torch.float64)
    logits = scale.exp() * x @ y.T + bias
    expected = 0.0
    for i in range(4):
        for j in range(6):
            z = 1.0 if owner[j] == i else -1.0
            expected -= F.logsigmoid(z * logits[i, j])
    assert torch.allclose(sigmoid_reference(x, y, scale, bias, owner), expected / 4, atol=1e-12)


def test_against_open_clip_losses():
    open_clip_loss = pytest.importorskip("open_clip.loss")
    x, y = _features(32, 32, d=64, seed=3, dtype=torch.float32)
    log_scale = torch.tensor(2.3, requires_grad=True)
    bias = torch.tensor(-5.0, requires_grad=True)

    ours = InfoNCELoss()(x, y, log_scale)
    theirs = open_clip_loss.ClipLoss()(x, y, log_scale.exp())
    assert torch.allclose(ours, theirs, rtol=1e-5)
    for a, b in zip(_grads(ours, x, y, log_scale), _grads(theirs, x, y, log_scale)):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)

    ours = SigmoidLoss()(x, y, log_scale, bias)
    theirs = open_clip_loss.SigLipLoss()(x, y, log_scale.exp(), bias)
    assert torch.allclose(ours, theirs, rtol=1e-5)
    for a, b in zip(_grads(ours, x, y, log_scale, bias), _grads(theirs, x, y, log_scale, bias)):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)


def test_build_loss_and_errors():
    assert isinstance(build_loss(LossConfig(kind="sigmoid")), SigmoidLoss)
    x, y = _features(3, 4)
    with pytest.raises(ValueError, match="text_to_image"):
        infonce_reference(x, y, torch.tensor(1.0))
    with pytest.raises(ValueError, match="outside"):
        infonce_reference(x, y, torch.tensor(1.0), torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="needs logit_bias"):
        SigmoidLoss()(x, x, torch.tensor(1.0))


def test_loss_modules_accept_one_element_scale_and_bias():
    x, y = _features(10, 10, seed=4)
    scale = torch.full((1,), 2.0, dtype=torch.float64, requires_grad=True)
    bias = torch.full((1,), -4.0, dtype=torch.float64, requires_grad=True)
    for module, reference, params in [
        (InfoNCELoss(chunk_size=3), lambda: infonce_reference(x, y, scale), (x, y, scale)),
        (
            SigmoidLoss(chunk_size=3),
            lambda: sigmoid_reference(x, y, scale, bias),
            (x, y, scale, bias),
        ),
    ]:
        ours, ref = module(x, y, scale, bias), reference()
        assert ours.shape == () and torch.allclose(ours, ref, atol=1e-12)
        for param, a, b in zip(params, _grads(ours, *params), _grads(ref, *params)):
            assert a.shape == param.shape and torch.allclose(a, b, atol=1e-12)
