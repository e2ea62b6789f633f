"""Config sections of learning from teachers: distillation (``distill``) and teacher learning
(``teacher_learning``); part of :class:`mclip.config.Config`, checked in
:mod:`mclip.config_checks`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union


@dataclass
class TeacherConfig:
    """One frozen teacher (an entry of ``distill.teachers``): any model ``mclip eval`` accepts."""

    model: str = ""
    """An mclip run or checkpoint directory, 'open_clip:NAME', 'hf:NAME_OR_DIR' (see
    docs/distillation.md); may be empty when ``embeddings`` is given."""
    pretrained: Union[str, None] = None
    """open_clip pretrained tag or weights file (as ``mclip eval --pretrained``)."""
    weight: float = 1.0
    """Ensemble weight (normalised over the teachers); teachers are averaged after the softmax."""
    logit_scale: Union[float, None] = None
    """The teacher's temperature inverse t (not its log) for similarity KD; null: its own."""
    logit_bias: Union[float, None] = None
    """The sigmoid teacher's bias; null: its own (0 for a model without one)."""
    embeddings: str = ""
    """A directory written by ``mclip distill embed``: training reads the teacher's embeddings
    from it instead of running the teacher (``model`` is then only a label)."""


@dataclass
class DistillConfig:
    """Distillation from frozen teachers (:mod:`mclip.losses.distill`); off without teachers.

    The step's loss is contrastive_weight x contrastive + the weighted terms below (MobileCLIP's
    mix with lambda: contrastive_weight = 1 - lambda, similarity_weight = lambda)."""

    teachers: list[TeacherConfig] = field(default_factory=list)
    contrastive_weight: float = 1.0
    similarity_weight: float = 0.0
    """Similarity KD: KL from the teacher's image-text softmax to the student's, both directions."""
    similarity: str = "softmax"
    """'softmax' (CLIP teachers) or 'sigmoid' (per-pair Bernoulli KL, SigLIP teachers)."""
    feature_weight: float = 0.0
    """Feature KD: distance between the student's (projected) and the teacher's embeddings."""
    feature_distance: str = "cosine"
    """'mse', 'cosine' or 'smooth_l1' (:func:`mclip.losses.distill.feature_distance`)."""
    feature_towers: list[str] = field(default_factory=lambda: ["image", "text"])
    cross_weight: float = 0.0
    """Cross-modal InfoNCE: student image vs teacher text and teacher image vs student text."""
    cross_init_logit_scale: float = 2.6592
    """log of the initial temperature inverse of the cross-modal loss (learned)."""
    parallel_weight: float = 0.0
    """Teacher learning as a term of the step (:mod:`mclip.train.parallel_term`): the student's
    text of a translation vs the first online teacher's text of its source, on ``parallel``."""
    parallel: str = ""
    """A parallel TSV (source<TAB>translation<TAB>language; ``mclip data parallel`` makes one)."""
    parallel_loss: str = "mse"
    """'mse' or 'infonce' (learned scale), as ``teacher_learning.loss``."""
    parallel_batch_size: int = 0
    """Pairs per step (0: train.batch_size)."""
    parallel_include_source: bool = True
    """Also teach sources to themselves, as ``teacher_learning.include_source``."""


@dataclass
class TeacherLearningConfig:
    """Teach the student's text tower a teacher's text space on parallel text, no images
    (:mod:`mclip.train.teacher_learning`); on when ``teacher`` is given."""

    teacher: str = ""
    """The teacher whose text space is taught: an mclip run directory, 'open_clip:...', 'hf:...'."""
    pretrained: Union[str, None] = None
    """open_clip pretrained tag or weights file of the teacher."""
    parallel: str = ""
    """A parallel TSV (source<TAB>translation<TAB>language; ``mclip data parallel`` makes one)."""
    loss: str = "mse"
    """'mse': squared distance between the student's translation embedding and the teacher's
    source embedding (Multilingual-CLIP); 'infonce': contrastive between them, with a learned
    scale (the other pairs of the batch are the negatives)."""
    include_source: bool = True
    """Also teach source sentences to themselves, as often as an average target language is
    taught, so the source language is kept."""
    image_tower_from_teacher: bool = True
    """The trained model pairs the teacher's image tower (frozen, with its logit scale) with the
    student's text tower: it evaluates and serves like any mclip model (any teacher: mclip,
    open_clip or transformers)."""
