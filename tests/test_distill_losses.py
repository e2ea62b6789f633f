import math

import pytest
import torch
import torch.nn.functional as F

from mclip.losses.distill import feature_distance, sigmoid_kd_sum, similarity_kd
from mclip.losses.reference import sigmoid_kd_reference, similarity_kd_reference


def _unit(n, d, g, dtype=torch.float64):
    return F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1).to(dtype)


def _case(n, m, dtype, seed=0, teachers=1):
    g = torch.Generator().manual_seed(seed)
    x, y = _unit(n, 16, g, dtype).requires_grad_(), _unit(m, 16, g, dtype).requires_grad_()
    scale = torch.tensor(math.log(20.0), dtype=dtype, requires_grad=True)
    bias = torch.tensor(-3.0, dtype=dtype, requires_grad=True)
    pairs = [
        (_unit(n, 8 * (k + 1), g, dtype), _unit(m, 8 * (k + 1), g, dtype)) for k in range(teachers)
    ]
    return x, y, scale, bias, pairs


def _rel(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
@pytest.mark.parametrize("n,m,teachers", [(23, 23, 1), (20, 41, 1), (17, 17, 3)])
@pytest.mark.parametrize("chunk", [5, 1024])
def test_similarity_kd_matches_dense_reference(dtype, tol, n, m, teachers, chunk):
    x, y, s, b, pairs = _case(n, m, dtype, teachers=teachers)
    scales, biases, weights = (
        [30.0, 10.0, 50.0][:teachers],
        [-5.0, 0.0, -1.0][:teachers],
        [1.0, 2.0, 0.5][:teachers],
    )
    for ours, ref, params in [
        (
            similarity_kd(x, y, s, pairs, scales, weights, chunk),
            similarity_kd_reference(x, y, s, pairs, scales, weights),
            (x, y, s),
        ),
        (
            sigmoid_kd_sum(x, y, s, b, pairs, scales, biases, weights, chunk) / n,
            sigmoid_kd_reference(x, y, s, b, pairs, scales, biases, weights),
            (x, y, s, b),
        ),
    ]:
        assert ours.item() > 0
        assert _rel(ours.double(), ref.double()) <= tol
        for a, r in zip(torch.autograd.grad(ours, params), torch.autograd.grad(ref, params)):
            assert _rel(a.double(), r.double()) <= tol


def test_kd_is_zero_with_zero_gradient_when_the_student_is_the_teacher():
    g = torch.Generator().manual_seed(3)
    a, b = _unit(12, 16, g), _unit(12, 16, g)
    x, y = a.clone().requires_grad_(), b.clone().requires_grad_()
    s = torch.tensor(math.log(25.0), dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-4.0, dtype=torch.float64, requires_grad=True)
    for loss, params in [
        (similarity_kd(x, y, s, [(a, b)], [25.0], chunk=5), (x, y, s)),
        (sigmoid_kd_sum(x, y, s, bias, [(a, b)], [25.0], [-4.0], chunk=5), (x, y, s, bias)),
    ]:
        assert abs(loss.item()) < 1e-12
        assert all(grad.abs().max() < 1e-12 for grad in torch.autograd.grad(loss, params))
    # a different temperature is a different distribution: the loss sees it
    assert similarity_kd(x, y, s, [(a, b)], [5.0], chunk=5).item() > 1e-3


def test_teachers_receive_no_gradient_and_ensemble_weights_are_checked():
    x, y, s, _, pairs = _case(8, 8, torch.float64)
    a, b = (t.clone().requires_grad_() for t in pairs[0])
    similarity_kd(x, y, s, [(a, b)], [10.0]).backward()
    assert a.grad is None and b.grad is None and x.grad is not None
    with pytest.raises(ValueError, match="one positive weight per teacher"):
        similarity_kd(x, y, s, pairs, [10.0], weights=[1.0, 1.0])


@pytest.mark.parametrize("kind", ["mse", "cosine", "smooth_l1"])
def test_feature_distance_is_zero_on_equal_features_and_matches_its_definition(kind):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    assert feature_distance(a, a.clone(), kind).abs().max() < 1e-6
    expected = {
        "mse": ((a - b) ** 2).sum(1),
        "cosine": 1 - (F.normalize(a, dim=1) * F.normalize(b, dim=1)).sum(1),
        "smooth_l1": torch.where((a - b).abs() < 1, 0.5 * (a - b) ** 2, (a - b).abs() - 0.5).sum(1),
    }
    torch.testing.assert_close(feature_distance(a, b, kind), expected[kind])
    with pytest.raises(ValueError, match="valid choices"):
        feature_distance(a, b, "l3")
