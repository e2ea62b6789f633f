"""Config checks: every impossible value is rejected with a message naming the key and the fix,
before any work starts (:func:`validate`, called by :func:`mclip.config.config_from_dict`)."""

from __future__ import annotations

import math
from typing import Any

from mclip.config_distill_checks import validate_distill
from mclip.config_schema import Config, EvalConfig
from mclip.data.language_codes import validate_languages
from mclip.errors import ConfigError

CHOICES: dict[str, tuple[str, ...]] = {
    "model.text.pooling": ("mean", "cls", "eos"),
    "model.text.padding": ("longest", "max_length"),
    "model.projection": ("linear", "mlp", "none"),
    "model.image.interpolation": ("bilinear", "bicubic"),
    "data.language_policy": ("uniform", "weighted"),
    "loss.kind": ("infonce", "sigmoid"),
    "train.precision": ("auto", "fp32", "bf16"),
    "dist.gather": ("exact", "group_local"),
    "dist.backend": ("auto", "nccl", "gloo"),
    "teacher_learning.loss": ("mse", "infonce"),
}


def validate(cfg: Config) -> Config:
    """Reject impossible values with a message naming the key; return ``cfg``."""
    for key, allowed in CHOICES.items():
        value = _get(cfg, key)
        if value not in allowed:
            raise ConfigError(
                f"config key '{key}' is {value!r}; valid choices: {', '.join(allowed)}"
            )
    positive = [
        "model.embed_dim",
        "model.image.image_size",
        "model.text.max_length",
        "model.text.hidden_size",
        "model.text.num_layers",
        "model.text.num_heads",
        "model.text.intermediate_size",
        "train.steps",
        "train.batch_size",
        "train.lr",
        "train.save_every",
        "train.log_every",
        "train.keep_checkpoints",
        "loss.chunk_size",
        "train.micro_batches",
        "dist.timeout_minutes",
        "data.captions_per_image",
        "model.text.length_groups",
    ]
    for key in positive:
        if not _get(cfg, key) > 0:
            raise ConfigError(f"config key '{key}' must be > 0, got {_get(cfg, key)!r}")
    non_negative = [
        "train.weight_decay",
        "train.warmup_steps",
        "train.min_lr_ratio",
        "data.shuffle_buffer",
        "train.threads",
        "data.retries",
        "model.image.drop_path_rate",
        "model.text.dropout",
        "dist.group_size",
    ]
    for key in non_negative:
        if _get(cfg, key) < 0:
            raise ConfigError(f"config key '{key}' must be >= 0, got {_get(cfg, key)!r}")
    workers = cfg.data.num_workers
    if workers != "auto" and not (isinstance(workers, int) and workers >= 0):
        raise ConfigError(
            f"config key 'data.num_workers' must be 'auto' or an integer >= 0, got {workers!r}"
        )
    if cfg.train.warmup_steps >= cfg.train.steps:
        raise ConfigError(
            f"config key 'train.warmup_steps' ({cfg.train.warmup_steps}) must be "
            f"smaller than 'train.steps' ({cfg.train.steps})"
        )
    if cfg.train.micro_batches > cfg.train.batch_size:
        raise ConfigError(
            f"config key 'train.micro_batches' ({cfg.train.micro_batches}) cannot "
            f"exceed 'train.batch_size' ({cfg.train.batch_size})"
        )
    if cfg.train.min_lr_ratio > 1:
        raise ConfigError("config key 'train.min_lr_ratio' must be in [0, 1]")
    if cfg.train.grad_clip is not None and cfg.train.grad_clip <= 0:
        raise ConfigError("config key 'train.grad_clip' must be > 0, or null to disable clipping")
    if cfg.model.max_logit_scale is not None and cfg.model.max_logit_scale <= 0:
        raise ConfigError("config key 'model.max_logit_scale' must be > 0, or null for no clamp")
    if not (
        math.isfinite(cfg.model.init_logit_scale)
        and abs(cfg.model.init_logit_scale) <= math.log(1e4)
    ):
        raise ConfigError(
            f"config key 'model.init_logit_scale' is {cfg.model.init_logit_scale}: it is the log "
            f"of the initial inverse temperature and must lie in [-9.21, 9.21] (exp in [1e-4, "
            f"1e4]); CLIP uses 2.6592 = log(1/0.07), SigLIP log(10); training clamps exp() to "
            f"model.max_logit_scale"
        )
    if cfg.train.max_bad_steps < 1:
        raise ConfigError(
            f"config key 'train.max_bad_steps' must be >= 1, got {cfg.train.max_bad_steps}"
        )
    if not 0 <= cfg.model.text.dropout < 1 or not 0 <= cfg.model.image.drop_path_rate < 1:
        raise ConfigError(
            "config keys 'model.text.dropout' and 'model.image.drop_path_rate' must be in [0, 1)"
        )
    if cfg.model.text.length_groups > 1 and cfg.model.text.padding != "longest":
        raise ConfigError(
            f"config key 'model.text.length_groups' is "
            f"{cfg.model.text.length_groups}, "
            f"which needs model.text.padding: longest (padding to max_length keeps "
            f"every text at the same length); set one of them back"
        )
    if cfg.model.text.hidden_size % cfg.model.text.num_heads:
        raise ConfigError(
            f"config key 'model.text.hidden_size' ({cfg.model.text.hidden_size}) "
            f"must be divisible by 'model.text.num_heads' "
            f"({cfg.model.text.num_heads})"
        )
    if len(cfg.train.betas) != 2 or not all(0 <= b < 1 for b in cfg.train.betas):
        raise ConfigError(
            f"config key 'train.betas' must be two numbers in [0, 1), got {cfg.train.betas}"
        )
    for name in ("mean", "std"):
        if len(getattr(cfg.model.image, name)) != 3:
            raise ConfigError(f"config key 'model.image.{name}' must have 3 values (R, G, B)")
    if cfg.data.languages:
        cfg.data.languages = validate_languages(cfg.data.languages, "data.languages")
    if cfg.data.language_weights:
        codes = validate_languages(list(cfg.data.language_weights), "data.language_weights")
        cfg.data.language_weights = dict(zip(codes, cfg.data.language_weights.values()))
    if not (math.isfinite(cfg.data.language_temperature) and cfg.data.language_temperature > 0):
        raise ConfigError(
            f"config key 'data.language_temperature' must be a number > 0 (1: the "
            f"data's own language mix), got {cfg.data.language_temperature}"
        )
    if cfg.data.language_policy == "weighted":
        if not cfg.data.language_weights:
            raise ConfigError(
                "config key 'data.language_policy' is 'weighted' but "
                "'data.language_weights' is empty; give e.g. {en: 2.0, de: 1.0}"
            )
        bad = {
            k: v for k, v in cfg.data.language_weights.items() if not (v >= 0 and math.isfinite(v))
        }
        if bad or sum(cfg.data.language_weights.values()) <= 0:
            raise ConfigError(
                f"config key 'data.language_weights' needs finite weights >= 0 with "
                f"a positive sum, got {cfg.data.language_weights}"
            )
    device = cfg.train.device
    if not (
        device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())
    ):
        raise ConfigError(
            f"config key 'train.device' is {device!r}; valid choices: auto, cpu, cuda, cuda:N"
        )
    if not cfg.data.default_language.strip():
        raise ConfigError(
            "config key 'data.default_language' is empty; give the language of "
            "captions whose metadata names none, e.g. en"
        )
    if not cfg.data.train_shards.strip() and not cfg.data.sources:
        raise ConfigError(
            "config key 'data.train_shards' is empty; give a shard pattern such as "
            "'data/train/shard-{000000..000099}.tar'"
        )
    _validate_sources(cfg)
    _validate_matryoshka(cfg)
    _validate_scores(cfg)
    _validate_eval(cfg.eval)
    validate_distill(cfg)
    if cfg.model.image.projection not in ("", "linear", "mlp", "none"):
        raise ConfigError(
            f"config key 'model.image.projection' is {cfg.model.image.projection!r}; "
            f"valid choices: linear, mlp, none, or empty (model.projection)"
        )
    learning = cfg.teacher_learning
    if learning.teacher and not learning.parallel.strip():
        raise ConfigError(
            "config key 'teacher_learning.parallel' is empty; give a parallel TSV "
            "(mclip data parallel SHARDS --out pairs.tsv makes one from caption "
            "shards)"
        )
    if learning.teacher and cfg.distill.teachers:
        raise ConfigError(
            "teacher_learning and distill.teachers are both set; teacher_learning "
            "trains the text tower alone on parallel text: run them as two stages, "
            "or make teacher learning a term of the image-text step with "
            "distill.parallel_weight and distill.parallel"
        )
    inherit = cfg.model.inherit
    if inherit.every < 1:
        raise ConfigError(f"config key 'model.inherit.every' must be >= 1, got {inherit.every}")
    if set(inherit.towers) - {"image", "text"} or not inherit.towers:
        raise ConfigError(
            f"config key 'model.inherit.towers' is {inherit.towers}; give a "
            f"non-empty subset of [image, text]"
        )
    return cfg


def _validate_sources(cfg: Config) -> None:
    """Name every source (source0, ...) and check shards, weights, names and languages."""
    names = set()
    for i, source in enumerate(cfg.data.sources):
        key = f"data.sources[{i}]"
        source.name = source.name.strip() or f"source{i}"
        if source.name in names:
            raise ConfigError(
                f"config key '{key}.name': '{source.name}' names two sources; give "
                f"each source its own name"
            )
        names.add(source.name)
        if not source.shards.strip():
            raise ConfigError(
                f"config key '{key}.shards' is empty; give the source's shard "
                f"pattern, e.g. 'cc3m/{{00000..00331}}.tar'"
            )
        if not (math.isfinite(source.weight) and source.weight > 0):
            raise ConfigError(
                f"config key '{key}.weight' must be a number > 0 (its relative share "
                f"of the samples), got {source.weight}"
            )
        if source.languages:
            source.languages = validate_languages(source.languages, f"{key}.languages")


def _validate_eval(ev: EvalConfig) -> None:
    """The ``eval`` section's own checks; whether ``eval.metric`` names a metric of the suite is
    checked when the suite is loaded (:class:`mclip.train.periodic_eval.TrainingEvaluator`)."""
    for key in ("every", "bootstrap"):
        if getattr(ev, key) < 0:
            raise ConfigError(f"config key 'eval.{key}' must be >= 0, got {getattr(ev, key)!r}")
    if ev.batch_size <= 0:
        raise ConfigError(f"config key 'eval.batch_size' must be > 0, got {ev.batch_size!r}")
    if ev.limit is not None and ev.limit <= 0:
        raise ConfigError(
            f"config key 'eval.limit' must be > 0 (images per set), or null for all "
            f"images, got {ev.limit!r}"
        )
    if ev.every > 0 and not ev.suite.strip():
        raise ConfigError(
            f"config key 'eval.every' is {ev.every} but 'eval.suite' is empty; give "
            f"a suite, e.g. eval.suite=eval_suites/demo.yaml, or eval.every=0"
        )
    if ev.metric:
        task, _, metric = ev.metric.rpartition("/")
        if not task or not metric:
            raise ConfigError(
                f"config key 'eval.metric' is {ev.metric!r}; give TASK/METRIC (a "
                f"task of the suite and a metric of the results JSON, e.g. "
                f"shapes/acc@1) or mean/METRIC"
            )
    if any(not code.strip() for code in ev.languages):
        raise ConfigError(f"config key 'eval.languages' has an empty code: {ev.languages}")


def _get(cfg: Config, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def _validate_matryoshka(cfg: Config) -> None:
    """Prefixes strictly increasing below model.embed_dim, one finite weight >= 0 each."""
    dims, weights, full = cfg.loss.matryoshka_dims, cfg.loss.matryoshka_weights, cfg.model.embed_dim
    if not dims:
        if weights:
            raise ConfigError(
                "config key 'loss.matryoshka_weights' is set but "
                "'loss.matryoshka_dims' is empty; give the prefixes, e.g. [32, 64]"
            )
        return
    if any(not 1 <= d < full for d in dims) or any(a >= b for a, b in zip(dims, dims[1:])):
        raise ConfigError(
            f"config key 'loss.matryoshka_dims' is {dims}: give increasing sizes "
            f"from 1 to below model.embed_dim ({full}), e.g. [{max(full // 8, 1)}, "
            f"{max(full // 4, 1)}] (the full embedding is always trained)"
        )
    if weights and (
        len(weights) != len(dims) or not all(math.isfinite(w) and w >= 0 for w in weights)
    ):
        raise ConfigError(
            f"config key 'loss.matryoshka_weights' is {weights}: give one finite "
            f"weight >= 0 per prefix in loss.matryoshka_dims ({len(dims)})"
        )


def _validate_scores(cfg: Config) -> None:
    """data.scores goes with a threshold, and a threshold with data.scores."""
    data = cfg.data
    limits = data.min_score is not None or bool(data.min_score_by_language)
    if limits and not data.scores.strip():
        raise ConfigError(
            "config key 'data.min_score' (or data.min_score_by_language) needs "
            "data.scores: the directory 'mclip data score SHARDS --out DIR' wrote"
        )
    if data.scores.strip() and not limits:
        raise ConfigError(
            "config key 'data.scores' is set but no threshold: give data.min_score "
            "or data.min_score_by_language"
        )
    if data.min_score_by_language:
        codes = validate_languages(list(data.min_score_by_language), "data.min_score_by_language")
        data.min_score_by_language = dict(zip(codes, data.min_score_by_language.values()))
