"""Several CPU processes (gloo) against one process on the concatenated batch."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from mclip.config import LossConfig, config_from_dict
from mclip.losses.gather import make_gather_groups
from mclip.losses.objective import ContrastiveObjective
from mclip.models.dual import DualEncoder
from mclip.train.distributed import average_gradients
from mclip.train.trainer import step_gradients

CPU = torch.device("cpu")
LOCAL = 4  # pairs per rank
# (loss kind, gather mode, micro-batches, frozen text encoder)
CASES = [
    ("infonce", "exact", 1, False),
    ("sigmoid", "exact", 1, False),
    ("infonce", "exact", 2, False),
    ("sigmoid", "exact", 2, True),
    ("infonce", "group_local", 1, False),
    ("sigmoid", "group_local", 1, False),
]


def _model(freeze_text=False):
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
                    "freeze": ["encoder.*"] if freeze_text else [],
                },
            }
        }
    )
    torch.manual_seed(0)
    return DualEncoder(cfg.model)


def _global_batch(model, n):
    g = torch.Generator().manual_seed(5)
    images = torch.randn(n, 3, 32, 32, generator=g)
    texts = [f"pair {i}: " + "abc" * int(torch.randint(0, 6, (1,), generator=g)) for i in range(n)]
    return images, model.tokenize(texts)


def _gradients(model, objective, images, tokens, micro_batches):
    model.zero_grad(set_to_none=True)
    model.logit_bias.requires_grad_(objective.uses_bias)
    loss = step_gradients(model, objective, images, tokens, micro_batches, CPU)
    return loss, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _join(rank, world, port):
    """This process as rank ``rank`` of a gloo group on one machine."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)


def _share(images, tokens, rank):
    """Rank ``rank``'s LOCAL pairs of the global batch."""
    rows = slice(rank * LOCAL, (rank + 1) * LOCAL)
    return images[rows], {k: v[rows] for k, v in tokens.items()}


def _worker(rank, world, group_size, port, out):
    _join(rank, world, port)
    groups = make_gather_groups(group_size)
    images, tokens = _global_batch(_model(), world * LOCAL)
    rows = slice(rank * LOCAL, (rank + 1) * LOCAL)
    results = []
    for kind, mode, micro, frozen in CASES:
        model = _model(frozen)
        objective = ContrastiveObjective(LossConfig(kind=kind), groups, mode)
        loss, _ = _gradients(
            model, objective, images[rows], {k: v[rows] for k, v in tokens.items()}, micro
        )
        average_gradients(model, world)
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((loss.item(), grads, objective.negatives_per_sample(LOCAL)))
    for kind in ("infonce", "sigmoid"):  # the same through torch's own DDP averaging
        model = _model()
        model.logit_bias.requires_grad_(kind == "sigmoid")
        ddp = DistributedDataParallel(_Towers(model))
        objective = ContrastiveObjective(LossConfig(kind=kind), groups, "exact")
        outputs = ddp(images[rows], tokens["input_ids"][rows], tokens["attention_mask"][rows])
        loss, value = objective(*outputs)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((value.item(), grads, None))
    if rank == 0:
        torch.save(results, out)
    dist.barrier()
    dist.destroy_process_group()


class _Towers(torch.nn.Module):
    """Both towers and the logit parameters in one forward, as DistributedDataParallel needs."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images, input_ids, attention_mask):
        m = self.model
        return (
            m.encode_image(images),
            m.encode_text({"input_ids": input_ids, "attention_mask": attention_mask}),
            m.logit_scale * 1.0,
            m.logit_bias * 1.0,
        )


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _close(a, b, tol=2e-5):
    scale = max(g.norm() for g in b.values())
    return a.keys() == b.keys() and all(
        (a[n] - b[n]).norm() <= tol * (b[n].norm() + 1e-3 * scale) for n in a
    )


@pytest.mark.parametrize("world,group_size", [(2, 1), (2, 2), (4, 1), (4, 2), (4, 4)])
@pytest.mark.slow
def test_ranks_match_single_process(tmp_path, world, group_size):
    out = tmp_path / "rank0.pt"
    mp.start_processes(
        _worker,
        args=(world, group_size, _free_port(), str(out)),
        nprocs=world,
        start_method="spawn",
        join=True,
    )
    results = torch.load(out, weights_only=False)

    images, tokens = _global_batch(_model(), world * LOCAL)
    n_groups = world // group_size
    ddp_results = results[len(CASES) :]
    for kind, (loss, grads, _) in zip(("infonce", "sigmoid"), ddp_results):
        objective = ContrastiveObjective(LossConfig(kind=kind))
        full_loss, full_grads = _gradients(_model(), objective, images, tokens, 1)
        assert loss == pytest.approx(full_loss.item(), rel=1e-5)
        assert _close(grads, full_grads), ("DDP", kind)
    for (kind, mode, micro, frozen), (loss, grads, negatives) in zip(CASES, results):
        model = _model(frozen)
        objective = ContrastiveObjective(LossConfig(kind=kind))
        full_loss, full_grads = _gradients(model, objective, images, tokens, 1)
        if mode == "exact":
            assert negatives == world * LOCAL - 1
            assert loss == pytest.approx(full_loss.item(), rel=1e-5), (kind, micro)
            assert _close(grads, full_grads), (kind, micro)
            assert frozen == (not any(n.startswith("text.encoder.") for n in grads))
            continue
        # group_local: the mean of the losses of each group's own batch, and its gradient
        assert negatives == group_size * LOCAL - 1
        group_losses, group_grads = [], []
        for k in range(n_groups):
            rows = slice(k * group_size * LOCAL, (k + 1) * group_size * LOCAL)
            value, g = _gradients(
                model, objective, images[rows], {n: v[rows] for n, v in tokens.items()}, 1
            )
            group_losses.append(value.item())
            group_grads.append(g)
        mean_grads = {n: sum(g[n] for g in group_grads) / n_groups for n in group_grads[0]}
        assert loss == pytest.approx(sum(group_losses) / n_groups, rel=1e-5), kind
        assert _close(grads, mean_grads), kind
        if n_groups > 1:  # fewer negatives: not the full-batch loss
            assert abs(loss - full_loss.item()) > 1e-3


def _bn_model_with_unused_parameter():
    from conftest import tiny_model_config

    cfg = tiny_model_config("resnet10t")
    torch.manual_seed(0)
    model = DualEncoder(cfg.model)
    model.unused = torch.nn.Parameter(torch.ones(4))  # e.g. a pooler the loss never reaches
    model.logit_bias.requires_grad_(False)
    return model


def _one_optimizer_step(model, images, tokens, world):
    from mclip.train.setup import build_optimizer

    objective = ContrastiveObjective(
        LossConfig(kind="infonce"), make_gather_groups(1) if world > 1 else None
    )
    optimizer = build_optimizer(model, config_from_dict({"train": {"weight_decay": 0.1}}))
    model.train()
    step_gradients(model, objective, images, tokens, 2, CPU, world_size=world)
    if world > 1:
        average_gradients(model, world)
    unused_grad = model.unused.grad
    optimizer.step()
    return unused_grad


def _sync_worker(rank, world, port, out):
    from mclip.train.distributed import DistContext, rank_digests

    _join(rank, world, port)
    model = _bn_model_with_unused_parameter()
    grad = _one_optimizer_step(model, *_share(*_global_batch(model, world * LOCAL), rank), world)
    digests = rank_digests(model, DistContext(rank, world))
    if rank == 0:
        bn = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        torch.save(
            {
                "digests": digests,
                "unused": model.unused.detach().clone(),
                "unused_grad": grad,
                "first_bn": (
                    bn[0].running_mean.clone(),
                    bn[0].running_var.clone(),
                    int(bn[0].num_batches_tracked),
                ),
            },
            out,
        )
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow
def test_ranks_keep_identical_batchnorm_buffers_and_leave_unused_parameters_alone(tmp_path):
    out = tmp_path / "rank0.pt"
    mp.start_processes(
        _sync_worker, args=(2, _free_port(), str(out)), nprocs=2, start_method="spawn", join=True
    )
    got = torch.load(out, weights_only=False)
    assert got["digests"][0] == got["digests"][1]  # weights and BatchNorm buffers
    # one process on the whole batch: the unused parameter has no gradient and is not decayed
    single = _bn_model_with_unused_parameter()
    images, tokens = _global_batch(single, 2 * LOCAL)
    assert _one_optimizer_step(single, images, tokens, 1) is None
    assert got["unused_grad"] is None and torch.equal(got["unused"], single.unused)
    # the first BatchNorm layer sees the same inputs: its statistics are the global batch's
    first = next(m for m in single.modules() if isinstance(m, torch.nn.BatchNorm2d))
    mean, var, tracked = got["first_bn"]
    assert tracked == 1
    assert torch.allclose(mean, first.running_mean, atol=1e-6, rtol=1e-5)
    assert torch.allclose(var, first.running_var, atol=1e-6, rtol=1e-5)


def _channels_last_model():
    from conftest import tiny_model_config
    from mclip.train.batchnorm import set_batchnorm_eval

    torch.manual_seed(0)
    model = DualEncoder(tiny_model_config("resnet10t").model)
    model.image.to(memory_format=torch.channels_last)
    model.logit_bias.requires_grad_(False)
    model.train()
    set_batchnorm_eval(model)  # BatchNorm in eval mode: the 2-rank step is the full-batch step
    return model


def _fused_step(model, images, tokens, world):
    from mclip.train.setup import build_optimizer

    objective = ContrastiveObjective(
        LossConfig(kind="infonce"), make_gather_groups(1) if world > 1 else None
    )
    optimizer = build_optimizer(model, config_from_dict({"train": {"weight_decay": 0.1}}))
    assert optimizer.defaults["fused"]
    images = images.contiguous(memory_format=torch.channels_last)
    step_gradients(model, objective, images, tokens, 1, CPU, world_size=world)
    if world > 1:
        average_gradients(model, world)
    optimizer.step()
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _layout_worker(rank, world, port, out):
    _join(rank, world, port)
    model = _channels_last_model()
    weights = _fused_step(model, *_share(*_global_batch(model, world * LOCAL), rank), world)
    strides = {
        n: (p.grad.stride(), p.stride()) for n, p in model.named_parameters() if p.grad is not None
    }
    if rank == 0:
        torch.save({"weights": weights, "strides": strides}, out)
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow
def test_averaged_gradients_keep_the_channels_last_layout_of_their_weights(tmp_path):
    """The fused AdamW kernel walks weight, gradient and moments as flat memory: a contiguous
    averaged gradient next to a channels_last conv weight would update the wrong elements."""
    out = tmp_path / "rank0.pt"
    mp.start_processes(
        _layout_worker, args=(2, _free_port(), str(out)), nprocs=2, start_method="spawn", join=True
    )
    got = torch.load(out, weights_only=False)
    assert all(grad == weight for grad, weight in got["strides"].values())
    single = _channels_last_model()
    images, tokens = _global_batch(single, 2 * LOCAL)
    expected = _fused_step(single, images, tokens, 1)
    for name, value in expected.items():
        # Adam's first step is ~lr * sign(g): near-zero gradients amplify rounding to ~1e-5;
        # misplaced updates would be ~lr = 2e-3
        assert torch.allclose(got["weights"][name], value, atol=5e-5, rtol=0), name
