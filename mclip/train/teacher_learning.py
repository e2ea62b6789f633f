"""Teacher learning: a multilingual text tower learns a teacher's text space from parallel text.

Multilingual-CLIP (Carlsson et al. 2022, LREC, "Cross-lingual and Multilingual CLIP") and
AltCLIP (Chen et al. 2022, arXiv:2211.06679) make an English CLIP multilingual without images:
the student text tower encodes a translation, the frozen teacher encodes its English source,
and the student is pulled onto the teacher's embedding (MSE), or contrasted against the other
sources of the batch (InfoNCE). The trained text tower is paired with the teacher's image tower
(frozen; :mod:`mclip.models.composite`: an mclip, open_clip or transformers teacher), so the
result is a complete dual encoder in the teacher's embedding space — saved, evaluated and served
like any mclip model.

The loop reads like the image-text trainer's (:mod:`mclip.train.trainer`) and shares its parts:
the gradient cache (the teacher's embeddings stand in for the image side and carry no
gradient), exact rank shares with gathered negatives, atomic checkpoints, exact resume (the
pair order is a pure function of the seed and the step), evaluation during training.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path
from typing import Callable, Protocol

import torch

from mclip.config import Config, ConfigError, LossConfig
from mclip.data.parallel import read_parallel_tsv
from mclip.losses.gather import GatherGroups
from mclip.losses.objective import ContrastiveObjective
from mclip.models.adapters import load_model
from mclip.models.composite import composite_config, load_image_tower
from mclip.train.checkpoint import checkpoint_dir, rng_state, save_checkpoint
from mclip.train.distributed import (
    any_rank,
    average_gradients,
    broadcast_parameters,
    rank_digests,
    shutdown_distributed,
)
from mclip.errors import TrainingInterrupted
from mclip.train.faults import StopRequest, restore_or_explain
from mclip.train.gradcache import gradient_cache_backward
from mclip.train.logger import TrainLogger
from mclip.train.periodic_eval import TrainingEvaluator
from mclip.train.run_dir import Run, log_taken_over
from mclip.train.schedule import warmup_cosine
from mclip.train.threads import training_threads


class TextEncoder(Protocol):
    """What teacher learning trains: a text tower (a DualEncoder, or one seen through a
    projection) mapping a token dict to embeddings [n, d]."""

    def encode_text(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor: ...


class TeacherLearningObjective:
    """``objective(teacher_emb [n, d], student_emb [n, d], logit_scale)`` -> (loss to
    back-propagate, global value): pair i is (teacher source i, student translation i).

    ``mse``: mean over pairs of the squared distance of the normalised embeddings. ``infonce``:
    symmetric InfoNCE between the two sides (the tiled engine; across ranks, the negatives come
    from every rank). Across ranks each rank returns its share times the world size, as
    :class:`~mclip.losses.objective.ContrastiveObjective` does.
    """

    def __init__(self, kind: str, chunk: int = 1024, groups: GatherGroups | None = None):
        self.kind, self.groups = kind, groups
        self.contrastive = ContrastiveObjective(
            LossConfig(kind="infonce", chunk_size=chunk), groups
        )

    def __call__(
        self, teacher_emb: torch.Tensor, student_emb: torch.Tensor, logit_scale: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kind == "infonce":
            return self.contrastive(teacher_emb, student_emb, logit_scale, None, None)
        world = 1 if self.groups is None else self.groups.world_size
        share = (student_emb - teacher_emb.detach()).pow(2).sum() / (student_emb.shape[0] * world)
        value = share.detach().clone()
        if self.groups is not None:
            torch.distributed.all_reduce(value)
        return share * world, value


def teacher_learning_gradients(
    model: TextEncoder,
    objective: Callable[
        [torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]
    ],
    logit_scale: torch.Tensor,
    teacher_emb: torch.Tensor,
    tokens: dict[str, torch.Tensor],
    micro_batches: int,
    device: torch.device,
) -> torch.Tensor:
    """Accumulate this rank's gradient of one step into ``.grad``; return the global loss.

    ``teacher_emb`` [n, d] the teacher's source embeddings, ``tokens`` the student's
    tokenised translations [n, L]. With ``micro_batches`` > 1 the student runs through the
    gradient cache; the loss (and the scale's gradient) is evaluated once.
    """
    value: list[torch.Tensor] = []

    def encode(piece: dict) -> tuple[torch.Tensor, torch.Tensor]:
        student = model.encode_text(
            {"input_ids": piece["input_ids"], "attention_mask": piece["attention_mask"]}
        )
        return piece["teacher"], student.float()

    def loss_fn(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
        to_backward, logged = objective(teacher, student, logit_scale)
        value.append(logged)
        return to_backward

    batch = {"teacher": teacher_emb, **tokens}
    if micro_batches == 1:
        loss_fn(*encode(batch)).backward()
    else:
        gradient_cache_backward(encode, batch, loss_fn, micro_batches, device)
    return value[0]


def source_pairs(pairs: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """(source, source, 'source') pairs that keep the source language as frequent as an average
    target language: the source of every L-th pair, L the number of target languages."""
    languages = max(len({language for _, _, language in pairs}), 1)
    return [(source, source, "source") for source, _, _ in pairs[::languages]]


def pair_order(n_pairs: int, seed: int, step: int, batch: int) -> list[int]:
    """The pair indices of global step ``step``: passes over a seeded permutation per pass.

    A pure function of (seed, step), so a resumed run takes exactly the same pairs.
    """
    out, start = list[int](), step * batch
    while len(out) < batch:
        epoch, offset = divmod(start + len(out), n_pairs)
        order = list(range(n_pairs))
        random.Random(f"{seed}/parallel/{epoch}").shuffle(order)
        out.extend(order[offset : offset + batch - len(out)])
    return out


def train_teacher_learning(
    cfg: Config, run: Run, resume: bool = False, quiet: bool = False
) -> Path:
    """Teach the student's text tower the teacher's text space (module docstring) in the run
    directory :func:`mclip.train.run_dir.open_run` claimed; returns the final checkpoint
    directory. The run directory's layout, logs and ``--resume`` are those of
    :func:`mclip.train.trainer.train` (which calls this); ``train.batch_size`` counts pairs."""
    from mclip.train.setup import (
        build_model,
        build_optimizer,
        log_damaged_checkpoints,
        resume_point,
    )

    learning, out_dir, device, ctx = cfg.teacher_learning, run.out_dir, run.device, run.ctx
    if cfg.train.threads or device.type == "cpu":
        torch.set_num_threads(training_threads(cfg.train.threads, torch.get_num_threads()))
    torch.manual_seed(cfg.train.seed)
    pairs, skipped = read_parallel_tsv(learning.parallel)
    if learning.include_source:
        pairs = pairs + source_pairs(pairs)
    teacher = load_model(learning.teacher, pretrained=learning.pretrained, device=device).eval()
    teacher.requires_grad_(False)
    if learning.image_tower_from_teacher:
        cfg, image_weights = composite_config(cfg, teacher)
    elif int(teacher.embed_dim) != cfg.model.embed_dim:
        raise ConfigError(
            f"teacher_learning: model.embed_dim is {cfg.model.embed_dim} but the "
            f"teacher '{learning.teacher}' embeds in {teacher.embed_dim} dimensions; "
            f"the student's text embedding is compared with the teacher's directly, "
            f"so set model.embed_dim={teacher.embed_dim}"
        )

    resumed_from, damaged = resume_point(out_dir, resume)
    model, inherited = build_model(cfg, resumed_from)
    if resumed_from is None and learning.image_tower_from_teacher:
        load_image_tower(model, image_weights)
    model = model.to(device)
    model.logit_scale.requires_grad_(False)
    model.logit_bias.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):
        scale = torch.nn.Parameter(
            torch.tensor(math.log(1 / 0.07), device=device),
            requires_grad=learning.loss == "infonce",
        )
    trained = torch.nn.ModuleList([model])
    trained.register_parameter("pair_logit_scale", scale)
    optimizer = build_optimizer(trained, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: warmup_cosine(s, cfg.train.steps, cfg.train.warmup_steps, cfg.train.min_lr_ratio),
    )
    start_step = 0
    if resumed_from is not None:
        state = restore_or_explain(resumed_from, model, optimizer, scheduler, device, cfg)
        start_step = state["step"]
        with torch.no_grad():
            scale.copy_(state["pair_logit_scale"])
    if ctx.world_size > 1:
        broadcast_parameters(trained)
    objective = TeacherLearningObjective(learning.loss, cfg.loss.chunk_size, ctx.groups)
    evaluator = TrainingEvaluator(cfg, ctx, resume=resume)
    logger = TrainLogger(
        out_dir,
        cfg.train.steps,
        start_step,
        quiet=quiet,
        enabled=ctx.is_main,
        append=resumed_from is not None,
    )
    logger.event(
        "resume" if resumed_from else "start",
        step=start_step,
        device=str(device),
        mode="teacher_learning",
        teacher=learning.teacher,
        pairs=len(pairs),
        skipped=skipped,
        world_size=ctx.world_size,
        config=cfg.to_dict(),
        trainable=sum(p.numel() for p in trained.parameters() if p.requires_grad),
    )
    log_damaged_checkpoints(logger, damaged, resumed_from)
    log_taken_over(logger, run)
    if inherited is not None:
        logger.event("inherit", source=cfg.model.inherit.from_model, towers=inherited)

    local = cfg.train.batch_size // ctx.world_size
    final_dir, last_log, done = resumed_from, time.perf_counter(), start_step
    model.train()
    stopped_by = None
    with StopRequest() as stop:  # SIGTERM / SIGINT: finish the step, write a checkpoint
        for step in range(start_step, cfg.train.steps):
            rows = pair_order(len(pairs), cfg.train.seed, step, cfg.train.batch_size)
            rows = rows[ctx.rank * local : (ctx.rank + 1) * local]
            with torch.no_grad():
                teacher_emb = teacher.encode_text([pairs[i][0] for i in rows]).float().to(device)
            tokens = {
                k: v.to(device) for k, v in model.tokenize([pairs[i][1] for i in rows]).items()
            }
            optimizer.zero_grad(set_to_none=True)
            loss = teacher_learning_gradients(
                model, objective, scale, teacher_emb, tokens, cfg.train.micro_batches, device
            )
            if ctx.world_size > 1:
                average_gradients(trained, ctx.world_size)
            grad_norm = torch.nn.utils.clip_grad_norm_(
                trained.parameters(), cfg.train.grad_clip or math.inf
            )
            if not bool(torch.isfinite(loss) & torch.isfinite(grad_norm)):
                raise ConfigError(
                    f"teacher learning step {step + 1} gave a NaN/inf loss; lower "
                    f"train.lr (now {cfg.train.lr})"
                )
            optimizer.step()
            scheduler.step()
            done = step + 1
            logger.advance()
            if done % cfg.train.log_every == 0 or done == cfg.train.steps:
                now = time.perf_counter()
                logger.step(
                    done,
                    {
                        "loss": loss.item(),
                        "lr": scheduler.get_last_lr()[0],
                        "pairs_per_s": cfg.train.log_every
                        * cfg.train.batch_size
                        / max(now - last_log, 1e-9),
                    },
                )
                last_log = now
            preempted = any_rank(stop.requested, ctx, device)
            if done % cfg.train.save_every == 0 or done == cfg.train.steps or preempted:
                if ctx.is_main:
                    final_dir = save_checkpoint(
                        out_dir,
                        done,
                        model,
                        cfg,
                        {
                            "step": done,
                            "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(),
                            "rng": rng_state(),
                            "pair_logit_scale": scale.detach().cpu(),
                        },
                        keep=cfg.train.keep_checkpoints,
                    )
                    logger.event("checkpoint", step=done, path=str(final_dir))
                else:
                    final_dir = checkpoint_dir(out_dir) / f"step_{done:07d}"
                if ctx.world_size > 1:
                    torch.distributed.barrier()
            if evaluator.due(done):
                numbers = evaluator.evaluate(model, done)
                value = numbers[evaluator.metric]
                new_best = evaluator.keep_best(model, cfg, done, value, numbers)
                logger.evaluation(
                    done,
                    numbers,
                    metric=evaluator.metric,
                    value=value,
                    best=new_best,
                    best_step=evaluator.best_step,
                )
            if preempted:
                stopped_by = stop.signal_name or "a signal to another rank"
                logger.event(
                    "preempted",
                    step=done,
                    checkpoint=str(final_dir),
                    note=f"{stopped_by}: checkpoint written; continue with --resume",
                )
                break
    digests = rank_digests(model, ctx)
    logger.event(
        "end",
        step=done,
        checkpoint=str(final_dir),
        ranks_identical=len(set(digests)) == 1,
        best_step=evaluator.best_step,
        best_value=evaluator.best_value,
        stopped_by=stopped_by,
    )
    logger.close()
    shutdown_distributed(ctx)
    if stopped_by == "SIGINT":
        raise TrainingInterrupted(final_dir, done)
    assert final_dir is not None  # the last step saves one; a resumed run starts from one
    return final_dir
