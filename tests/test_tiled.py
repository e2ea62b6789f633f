import math

import pytest
import torch
import torch.nn.functional as F

from mclip.losses.reference import infonce_reference, sigmoid_reference
from mclip.losses.tiled import tiled_infonce, tiled_sigmoid


def _inputs(n, m, d, dtype, scale, seed=0, multi=False):
    g = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1).to(dtype)
    y = F.normalize(torch.randn(m, d, generator=g, dtype=torch.float64), dim=-1).to(dtype)
    owner = torch.randint(0, n, (m,), generator=g) if multi else None
    log_scale = torch.tensor(math.log(scale), dtype=dtype)
    bias = torch.tensor(-2.0, dtype=dtype)
    return [t.requires_grad_() for t in (x, y, log_scale, bias)] + [owner]


def _rel(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


CASES = [(37, 37, False), (50, 64, True), (16, 16, False)]


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("scale", [1.0, 100.0])
@pytest.mark.parametrize("n,m,multi", CASES)
@pytest.mark.parametrize("chunk", [7, 1024])
def test_tiled_matches_reference(dtype, tol, scale, n, m, multi, chunk):
    if not multi and n != m:
        pytest.skip("diagonal needs n == m")
    x, y, s, b, owner = _inputs(n, m, 24, dtype, scale, multi=multi)
    for tiled, reference, params in [
        (
            lambda: tiled_infonce(x, y, s, owner, chunk),
            lambda: infonce_reference(x, y, s, owner),
            (x, y, s),
        ),
        (
            lambda: tiled_sigmoid(x, y, s, b, owner, chunk),
            lambda: sigmoid_reference(x, y, s, b, owner),
            (x, y, s, b),
        ),
    ]:
        ours, ref = tiled(), reference()
        assert _rel(ours.double(), ref.double()) <= tol
        for a, r in zip(torch.autograd.grad(ours, params), torch.autograd.grad(ref, params)):
            assert _rel(a.double(), r.double()) <= tol


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_tiles_far_apart_take_the_two_pass_form_and_stay_exact(dtype, tol, monkeypatch):
    """At logit scale 1000 the tiles' logits span thousands: columns lie far below a tile's
    largest row and log-sum-exps far apart, so the one-exp forms would underflow; those tiles
    must take the two-pass form (counted here) and still match the reference."""
    import mclip.losses.tiled as tiled

    x, y, s, _, owner = _inputs(40, 48, 8, dtype, 1000.0, seed=3, multi=True)
    ref = infonce_reference(x, y, s, owner)
    ref_grads = torch.autograd.grad(ref, (x, y, s))

    def error():
        ours = tiled_infonce(x, y, s, owner, chunk=8)
        grads = torch.autograd.grad(ours, (x, y, s))
        return max(
            [_rel(ours.double(), ref.double())]
            + [_rel(a.double(), r.double()) for a, r in zip(grads, ref_grads)]
        )

    assert error() <= tol
    if dtype == torch.float32:  # without the check, the one-exp forms are wrong here
        monkeypatch.setattr(tiled, "SHIFT_LIMIT", 1e9)
        assert not error() <= 1e-3


def test_non_contiguous_embeddings():
    x, y, s, _, _ = _inputs(24, 24, 8, torch.float64, 20.0, seed=5)
    xt = x.detach().T.contiguous().T.requires_grad_()  # the same values, column-major
    assert not xt.is_contiguous()
    ours = tiled_infonce(xt, y, s, chunk=5)
    ref = infonce_reference(x, y, s)
    for a, r in zip(torch.autograd.grad(ours, (xt, y, s)), torch.autograd.grad(ref, (x, y, s))):
        assert _rel(a, r) <= 1e-10


def test_stable_at_scale_100_with_identical_embeddings():
    x = F.normalize(torch.ones(64, 32), dim=-1).requires_grad_()
    y = F.normalize(torch.ones(64, 32), dim=-1).requires_grad_()
    s = torch.tensor(math.log(100.0), requires_grad=True)
    b = torch.tensor(-10.0, requires_grad=True)
    loss = tiled_infonce(x, y, s, chunk=5)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(math.log(64), rel=1e-5)
    loss.backward()
    assert all(torch.isfinite(t.grad).all() for t in (x, y, s))
    loss = tiled_sigmoid(x, y, s, b, chunk=5)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(b.grad)


def test_bf16_embeddings_with_fp32_logits():
    x, y, s, b, _ = _inputs(40, 40, 32, torch.float64, 20.0)
    xb, yb = x.detach().bfloat16().requires_grad_(), y.detach().bfloat16().requires_grad_()
    s32 = s.detach().float().requires_grad_()
    loss = tiled_infonce(xb, yb, s32, chunk=16)
    assert loss.dtype == torch.float32
    reference = infonce_reference(xb.detach().double(), yb.detach().double(), s.detach())
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)
    loss.backward()
    assert xb.grad.dtype == torch.bfloat16 and torch.isfinite(xb.grad.float()).all()


def test_memory_does_not_hold_the_full_matrix():
    """The autograd graph keeps only O(B*d) tensors: nothing of size B x B is saved."""
    n = 512
    x, y, s, b, _ = _inputs(n, n, 8, torch.float32, 10.0)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(
        lambda t: saved.append(t.numel()) or t, lambda t: t
    ):
        tiled_infonce(x, y, s, chunk=64)
        tiled_sigmoid(x, y, s, b, chunk=64)
    assert saved and max(saved) < n * n / 8


@pytest.mark.parametrize("scale_shape,bias_shape", [((1,), (1,)), ((1,), ()), ((), (1,))])
@pytest.mark.parametrize("n,m,multi", [(20, 20, False), (12, 30, True)])
def test_one_element_logit_scale_and_bias(scale_shape, bias_shape, n, m, multi):
    """A [1]-shaped scale or bias (as nn.Parameter(torch.ones(1)) gives) works like a scalar."""
    x, y, s, b, owner = _inputs(n, m, 16, torch.float64, 10.0, multi=multi)
    s = s.detach().reshape(scale_shape).requires_grad_()
    b = b.detach().reshape(bias_shape).requires_grad_()
    for ours, ref, params in [
        (tiled_infonce(x, y, s, owner, chunk=7), infonce_reference(x, y, s, owner), (x, y, s)),
        (
            tiled_sigmoid(x, y, s, b, owner, chunk=7),
            sigmoid_reference(x, y, s, b, owner),
            (x, y, s, b),
        ),
    ]:
        assert ours.shape == ref.shape == ()
        assert _rel(ours, ref) <= 1e-10
        for param, a, r in zip(
            params, torch.autograd.grad(ours, params), torch.autograd.grad(ref, params)
        ):
            assert a.shape == param.shape
            assert _rel(a, r) <= 1e-10


def test_logit_scale_with_several_numbers_is_a_clear_error():
    x, y, s, b, _ = _inputs(8, 8, 16, torch.float64, 10.0)
    with pytest.raises(ValueError, match="logit_scale"):
        tiled_infonce(x, y, torch.zeros(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="logit_bias"):
        tiled_sigmoid(x, y, s, torch.zeros(2, dtype=torch.float64))
