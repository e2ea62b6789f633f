"""Checks of the ``distill`` config section (teachers, weights, the parallel-text term), run by
:func:`mclip.config_checks.validate`: each impossible value is refused naming its key."""

from __future__ import annotations

import math

from mclip.config_distill import DistillConfig
from mclip.config_schema import Config
from mclip.errors import ConfigError


def validate_distill(cfg: Config) -> None:
    """Weights >= 0, known loss kinds and towers, and teachers exactly when a KD term is on."""
    d = cfg.distill
    if d.similarity not in ("softmax", "sigmoid"):
        raise ConfigError(
            f"config key 'distill.similarity' is {d.similarity!r}; valid choices: softmax, sigmoid"
        )
    if d.feature_distance not in ("mse", "cosine", "smooth_l1"):
        raise ConfigError(
            f"config key 'distill.feature_distance' is {d.feature_distance!r}; valid "
            f"choices: mse, cosine, smooth_l1"
        )
    bad_towers = sorted(set(d.feature_towers) - {"image", "text"})
    if bad_towers or not d.feature_towers:
        raise ConfigError(
            f"config key 'distill.feature_towers' is {d.feature_towers}; give a "
            f"non-empty subset of [image, text]"
        )
    weights = {
        k: getattr(d, k)
        for k in (
            "contrastive_weight",
            "similarity_weight",
            "feature_weight",
            "cross_weight",
            "parallel_weight",
        )
    }
    for key, value in weights.items():
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"config key 'distill.{key}' must be a number >= 0, got {value}")
    kd_on = any(v > 0 for k, v in weights.items() if k != "contrastive_weight")
    if kd_on and not d.teachers:
        raise ConfigError(
            "a distillation weight (distill.similarity_weight / feature_weight / "
            "cross_weight / parallel_weight) is > 0 but 'distill.teachers' is empty; "
            "add a teacher, "
            "e.g. distill.teachers=[{model: runs/teacher}]"
        )
    if d.teachers and not kd_on:
        raise ConfigError(
            "'distill.teachers' is given but every distillation weight is 0; set "
            "e.g. distill.similarity_weight=1.0, or drop the teachers"
        )
    if not kd_on and weights["contrastive_weight"] <= 0:
        raise ConfigError(
            "config key 'distill.contrastive_weight' is 0 and no distillation term "
            "is on: the step would have no loss"
        )
    validate_parallel_term(d)
    for i, teacher in enumerate(d.teachers):
        key = f"distill.teachers[{i}]"
        if not teacher.model.strip() and not teacher.embeddings.strip():
            raise ConfigError(
                f"config key '{key}.model' is empty; give an mclip run directory, "
                f"'open_clip:NAME' or 'hf:NAME_OR_DIR', or '{key}.embeddings' (a "
                f"directory written by mclip distill embed)"
            )
        if not (math.isfinite(teacher.weight) and teacher.weight > 0):
            raise ConfigError(f"config key '{key}.weight' must be > 0, got {teacher.weight}")
        if teacher.logit_scale is not None and not (
            math.isfinite(teacher.logit_scale) and teacher.logit_scale > 0
        ):
            raise ConfigError(
                f"config key '{key}.logit_scale' is the temperature inverse t (not "
                f"its log) and must be > 0, got {teacher.logit_scale}"
            )


def validate_parallel_term(d: DistillConfig) -> None:
    """distill.parallel_weight needs a parallel TSV, a known loss and an online teacher."""
    if d.parallel_weight <= 0:
        return
    if not d.parallel.strip():
        raise ConfigError(
            "config key 'distill.parallel' is empty but distill.parallel_weight is "
            "> 0; give a parallel TSV (mclip data parallel SHARDS --out pairs.tsv)"
        )
    if d.parallel_loss not in ("mse", "infonce"):
        raise ConfigError(
            f"config key 'distill.parallel_loss' is {d.parallel_loss!r}; valid "
            f"choices: mse, infonce"
        )
    if d.parallel_batch_size < 0:
        raise ConfigError(
            f"config key 'distill.parallel_batch_size' must be >= 0 (0: "
            f"train.batch_size), got {d.parallel_batch_size}"
        )
    if d.teachers and not any(t.model.strip() for t in d.teachers):
        raise ConfigError(
            "distill.parallel_weight > 0 needs an online teacher to encode the "
            "sources: give one of distill.teachers a 'model' (stored embeddings "
            "hold the captions of the shards only)"
        )
