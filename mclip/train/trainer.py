"""The training loop, top to bottom: build, maybe resume, stream batches, step, log, checkpoint."""

from __future__ import annotations

import copy
import functools
import math
import os
import time
from collections import Counter
from pathlib import Path
from typing import Callable, cast

import torch

from mclip.config import Config, ConfigError
from mclip.data.sources import build_sources
from mclip.losses.distill_objective import DistillationObjective
from mclip.losses.matryoshka import MatryoshkaObjective
from mclip.train.batchnorm import set_batchnorm_eval
from mclip.train.batches import data_layout, next_batch, training_batches
from mclip.train.checkpoint import checkpoint_dir, rng_state, save_checkpoint
from mclip.train.distributed import (
    any_rank,
    average_gradients,
    broadcast_parameters,
    drain_counts,
    merge_over_ranks,
    rank_digests,
    shutdown_distributed,
    sum_counts,
)
from mclip.errors import TrainingError, TrainingInterrupted
from mclip.train.faults import StopRequest, restore_or_explain
from mclip.train.logger import TrainLogger
from mclip.train.objectives import build_objective
from mclip.train.parallel_term import parallel_term
from mclip.train.periodic_eval import TrainingEvaluator
from mclip.train.schedule import warmup_cosine
from mclip.train.run_dir import Run, log_taken_over, open_run
from mclip.train.setup import (
    build_model,
    build_optimizer,
    compile_towers,
    log_damaged_checkpoints,
    resume_point,
)
from mclip.train.step import step_gradients, step_seed
from mclip.train.teachers import embed_batch, load_teachers
from mclip.train.threads import data_workers, training_threads


def train(cfg: Config, resume: bool = False, quiet: bool = False, overwrite: bool = False) -> Path:
    """Train a DualEncoder as ``cfg`` says; returns the final checkpoint directory.

    Runs as one process, or as one rank of a ``torchrun`` launch (then ``train.batch_size`` is
    the global batch, split evenly over ranks). With ``resume=True`` the newest checkpoint in
    ``cfg.train.out_dir`` restores the model, optimizer, scheduler, step and the data position of
    every reader (the model is rebuilt from the checkpoint, never downloaded), so the resumed run
    takes exactly the steps the uninterrupted run would have taken. If the data layout changed
    (other shards, ranks or workers), the stream restarts from a seed mixed with the step, and
    the log says so.
    A fresh run refuses an ``out_dir`` that holds checkpoints unless ``overwrite=True``; a run
    holding the folder's lock refuses another (:mod:`mclip.train.run_dir`). SIGTERM and SIGINT
    finish the step and write a checkpoint; after SIGINT :class:`TrainingInterrupted` is raised.
    """
    with open_run(cfg, resume, overwrite) as run:  # writable, locked, prepared: before any work
        if cfg.teacher_learning.teacher:  # text-only training on parallel text
            from mclip.train.teacher_learning import train_teacher_learning

            return train_teacher_learning(cfg, run, resume, quiet)
        return _train(cfg, run, resume, quiet)


def _train(cfg: Config, run: Run, resume: bool, quiet: bool) -> Path:
    """The image-text training loop of :func:`train` in a claimed run directory."""
    out_dir, device, ctx = run.out_dir, run.device, run.ctx
    evaluator = TrainingEvaluator(cfg, ctx, resume=resume)  # checks eval.* before any work
    if cfg.train.threads or device.type == "cpu":  # CPU: capped by the usable CPUs
        torch.set_num_threads(training_threads(cfg.train.threads, torch.get_num_threads()))
    if cfg.data.num_workers == "auto":  # resolved once: config.yaml records the number used
        cfg = copy.deepcopy(cfg)
        cfg.data.num_workers = data_workers(
            device.type, torch.get_num_threads(), int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        )
    torch.manual_seed(cfg.train.seed)

    sources, source_records = build_sources(cfg.data, ctx.world_size)
    local_batch = cfg.train.batch_size // ctx.world_size
    if cfg.train.micro_batches > local_batch:
        raise ConfigError(
            f"config key 'train.micro_batches' ({cfg.train.micro_batches}) exceeds the "
            f"per-rank batch ({local_batch}); lower it, or raise train.batch_size"
        )

    resumed_from, damaged = resume_point(out_dir, resume)
    model, inherited = build_model(cfg, resumed_from)
    model = model.to(device)
    if cfg.train.channels_last:
        model.image.to(memory_format=torch.channels_last)
    if cfg.train.compile:
        compile_towers(model)
    teachers = load_teachers(cfg.distill, device) if cfg.distill.teachers else []
    for teacher in teachers:
        if teacher.store is not None:
            teacher.store.check_shards([shard for source in sources for shard in source.shards])
    heads, objective = build_objective(cfg, teachers, ctx.groups, device)
    parallel, parallel_info = parallel_term(
        cfg, teachers, heads, ctx.groups, ctx.rank, ctx.world_size
    )
    model.logit_bias.requires_grad_(objective.uses_bias)
    # what the optimizer steps
    trained = model if heads is None else torch.nn.ModuleList([model, heads])
    optimizer = build_optimizer(trained, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: warmup_cosine(s, cfg.train.steps, cfg.train.warmup_steps, cfg.train.min_lr_ratio),
    )

    start_step, skipped_total, positions = 0, Counter[str](), {}
    layout, data_seed = data_layout(cfg, sources, ctx.world_size), cfg.train.seed
    bad_steps = {"total": 0, "in_row": 0}
    if resumed_from is not None:
        state = restore_or_explain(resumed_from, model, optimizer, scheduler, device, cfg)
        if heads is not None:
            heads.load_state_dict(state["distill_heads"])
        start_step, skipped_total = state["step"], Counter(state.get("skipped", {}))
        bad_steps.update(state.get("bad_steps", {}))
        saved = state.get("data", {})
        if saved.get("layout") == layout:  # this rank's readers: rank * workers + worker
            readers = max(cfg.data.num_workers, 1)
            positions = {r: p for r, p in saved["positions"].items() if r // readers == ctx.rank}
        else:
            data_seed = cfg.train.seed + start_step
    if ctx.world_size > 1:
        broadcast_parameters(model)

    logger = TrainLogger(
        out_dir,
        cfg.train.steps,
        start_step,
        quiet=quiet,
        enabled=ctx.is_main,
        append=resumed_from is not None,
    )
    restored = (
        {"lr": scheduler.get_last_lr()[0], "model_digest": rank_digests(model, ctx)[0]}
        if resumed_from
        else {}
    )
    logger.event(
        "resume" if resumed_from else "start",
        step=start_step,
        device=str(device),
        checkpoint=str(resumed_from) if resumed_from else None,
        world_size=ctx.world_size,
        parameters=sum(p.numel() for p in model.parameters()),
        **restored,
        threads=torch.get_num_threads(),
        data_workers=cfg.data.num_workers,
        config=cfg.to_dict(),
    )
    log_damaged_checkpoints(logger, damaged, resumed_from)
    log_taken_over(logger, run)
    if data_seed != cfg.train.seed:
        logger.event(
            "data_order_restarted",
            step=start_step,
            reason="the data layout (sources, ranks x workers, seed, batch size, shuffle "
            "buffer, language sampling, captions per image or augmentation) "
            "differs from the checkpoint's, so its reader positions do not apply; "
            "the stream restarts from a seed mixed with the step (not exact)",
            saved=state.get("data", {}).get("layout"),
            now=layout,
        )
    if inherited is not None:
        logger.event(
            "inherit",
            source=cfg.model.inherit.from_model,
            every=cfg.model.inherit.every,
            towers=inherited,
        )
    if parallel_info:
        logger.event("parallel_text", **parallel_info)
    if cfg.data.sources:
        logger.event("sources", **source_records)
    else:
        logger.event("languages", **source_records["train"]["sampling"])
    if ctx.world_size > 1:
        assert ctx.groups is not None  # init_distributed makes them whenever world_size > 1
        exact = cfg.dist.gather == "exact"
        logger.event(
            "gather",
            mode=cfg.dist.gather,
            group_size=ctx.groups.group_size,
            negatives_per_sample=objective.negatives_per_sample(local_batch),
            note="full-batch loss and gradient"
            if exact
            else f"approximate: negatives from the {ctx.groups.group_size} ranks of a group "
            f"only, not the global batch of {cfg.train.batch_size}",
        )

    batches = training_batches(
        cfg, sources, model, teachers, ctx, seed=data_seed, positions=positions, done=start_step
    )

    def trainer_state(step: int, all_positions: dict) -> dict:
        return {
            "step": step,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng_state(),
            "skipped": dict(skipped_total),
            "bad_steps": dict(bad_steps),
            "data": {"layout": layout, "positions": all_positions},
            **({"distill_heads": heads.state_dict()} if heads is not None else {}),
        }

    def save(step: int) -> Path:  # collective: a failed write stops every rank alike
        collect_skips()
        all_positions = merge_over_ranks(positions, ctx)
        path, error = checkpoint_dir(out_dir) / f"step_{step:07d}", None
        if ctx.is_main:
            try:
                save_checkpoint(
                    out_dir,
                    step,
                    model,
                    cfg,
                    trainer_state(step, all_positions),
                    keep=cfg.train.keep_checkpoints,
                )
                logger.event("checkpoint", step=step, path=str(path))
            except OSError as exc:  # disk full, quota, permissions: the previous one stays
                error = exc
        if any_rank(error is not None, ctx, device):
            raise TrainingError(
                f"could not write the checkpoint of step {step} to '{path}'"
                f"{f': {error}' if error else ' (on rank 0)'}; the last good checkpoint "
                f"{f'is {final_dir}' if final_dir else 'does not exist yet'}. Free space (or "
                f"fix train.out_dir) and run again with --resume"
            ) from None
        return path

    def collect_skips() -> None:  # collective: every rank calls it at the same steps
        skipped_total.update(sum_counts(skipped_local, ctx))
        skipped_local.clear()

    memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    model.train()
    if cfg.train.freeze_batchnorm:
        set_batchnorm_eval(model)
    last_log, samples_since = time.perf_counter(), 0
    skipped_local: Counter = Counter()
    final_dir, stopped_by = resumed_from, None
    languages_seen, sources_seen = Counter[str](), Counter[str]()
    with StopRequest() as stop:  # SIGTERM / SIGINT: finish the step, write a checkpoint, exit
        for step in range(start_step, cfg.train.steps):
            batch = next_batch(batches)
            skipped_local.update(batch["skipped"])
            languages_seen.update(batch["languages"])
            sources_seen.update(batch["sources"])
            positions[batch["reader"]] = batch["position"]
            torch.manual_seed(step_seed(cfg.train.seed, ctx.rank, step))
            images = batch["images"].to(device, non_blocking=True, memory_format=memory_format)
            tokens = {k: v.to(device) for k, v in model.tokenize(batch["texts"]).items()}

            step_objective: Callable[..., tuple[torch.Tensor, torch.Tensor]] = objective
            if teachers:
                step_objective = functools.partial(
                    step_objective,
                    teachers=embed_batch(
                        teachers, batch, device, cfg.eval.batch_size, cfg.train.precision
                    ),
                )
            optimizer.zero_grad(set_to_none=True)
            loss = step_gradients(
                model,
                step_objective,
                images,
                tokens,
                cfg.train.micro_batches,
                device,
                cfg.train.precision,
                ctx.world_size,
                batch["text_to_image"].to(device),
            )
            if parallel is not None:  # teacher learning on parallel text, added before averaging
                loss = loss + cfg.distill.parallel_weight * parallel.add_gradients(
                    model, step, device
                )
            if ctx.world_size > 1:
                average_gradients(trained, ctx.world_size)
            grad_norm = torch.nn.utils.clip_grad_norm_(
                trained.parameters(), cfg.train.grad_clip or math.inf
            )
            done = step + 1
            if bool(torch.isfinite(loss) & torch.isfinite(grad_norm)):  # one device sync
                optimizer.step()
                bad_steps["in_row"] = 0
            else:  # loss and gradient norm are global, so every rank skips the same steps
                bad_steps["total"] += 1
                bad_steps["in_row"] += 1
                logger.event(
                    "bad_step",
                    step=done,
                    loss=loss.item(),
                    grad_norm=grad_norm.item(),
                    in_a_row=bad_steps["in_row"],
                    note="not applied: weights unchanged",
                )
                if bad_steps["in_row"] >= cfg.train.max_bad_steps:
                    raise TrainingError(
                        f"stopped at step {done}: {bad_steps['in_row']} steps in a row had a "
                        f"NaN/inf loss or gradient (train.max_bad_steps="
                        f"{cfg.train.max_bad_steps}); the last "
                        f"good checkpoint is {final_dir or 'none (none written yet)'}. Lower "
                        f"train.lr, check the data, or use train.precision=fp32, then --resume"
                    )
            scheduler.step()
            model.clamp_logit_scale()
            if heads is not None:
                heads.clamp_logit_scale(cfg.model.max_logit_scale)

            samples_since += len(batch["keys"]) * ctx.world_size  # images, not captions
            logger.advance()
            if done % cfg.train.log_every == 0 or done == cfg.train.steps:
                collect_skips()
                now = time.perf_counter()
                metrics = {
                    "loss": loss.item(),
                    "lr": scheduler.get_last_lr()[0],
                    "logit_scale": model.logit_scale.exp().item(),
                    "samples_per_s": samples_since / max(now - last_log, 1e-9),
                    "skipped": dict(skipped_total),
                    "bad_steps": bad_steps["total"],
                    "languages": drain_counts(languages_seen, ctx),
                    "sources": drain_counts(sources_seen, ctx),
                }
                if objective.uses_bias:
                    metrics["logit_bias"] = model.logit_bias.item()
                if teachers or cfg.loss.matryoshka_dims:
                    metrics["terms"] = {
                        **cast("DistillationObjective | MatryoshkaObjective", objective).last_terms,
                        **(parallel.terms if parallel else {}),
                    }
                if cfg.train.grad_clip:
                    metrics["grad_norm"] = grad_norm.item()
                logger.step(done, metrics)
                last_log, samples_since = now, 0
            preempted = any_rank(stop.requested, ctx, device)
            if done % cfg.train.save_every == 0 or done == cfg.train.steps or preempted:
                final_dir = save(done)
            if evaluator.due(done):  # collective: every rank evaluates its share
                started = time.perf_counter()
                numbers = evaluator.evaluate(model, done)
                value = numbers[evaluator.metric]
                new_best = evaluator.keep_best(model, cfg, done, value, numbers)
                seconds = time.perf_counter() - started
                logger.evaluation(
                    done,
                    numbers,
                    metric=evaluator.metric,
                    value=value,
                    best=new_best,
                    best_step=evaluator.best_step,
                    seconds=round(seconds, 3),
                )
                last_log += seconds  # evaluation time does not count against samples/s
            if preempted:
                stopped_by = stop.signal_name or "a signal to another rank"
                logger.event(
                    "preempted",
                    step=done,
                    checkpoint=str(final_dir),
                    note=f"{stopped_by}: checkpoint written; continue with --resume",
                )
                break
    digests = rank_digests(model, ctx)  # collective: every rank must end with the same model
    logger.event(
        "end",
        step=done if stopped_by else cfg.train.steps,
        stopped_by=stopped_by,
        skipped=dict(skipped_total),
        bad_steps=bad_steps["total"],
        best_step=evaluator.best_step,
        best_value=evaluator.best_value,
        checkpoint=str(final_dir),
        ranks_identical=len(set(digests)) == 1,
        parameter_digests=digests,
    )
    logger.close()
    shutdown_distributed(ctx)
    if stopped_by == "SIGINT":
        raise TrainingInterrupted(final_dir, done)
    assert final_dir is not None  # the last step saves one; a resumed run starts from one
    return final_dir
