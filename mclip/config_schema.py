"""The configuration's dataclasses: one per section of a config YAML (``model``, ``loss``,
``train``, ``dist``, ``eval``; ``data`` in :mod:`mclip.config_data`, ``distill`` and
``teacher_learning`` in :mod:`mclip.config_distill`). Loading, overrides and checks:
:mod:`mclip.config` and :mod:`mclip.config_checks`, which both build on this module.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Union

from mclip.config_data import DataConfig
from mclip.config_distill import DistillConfig, TeacherLearningConfig


@dataclass
class ImageTowerConfig:
    """The image tower: a timm backbone and its input size / normalisation."""

    name: str = "resnet10t"
    """Any timm model name; or 'open_clip:ARCH' / 'hf:NAME_OR_DIR' for the image tower of such a
    dual encoder (:mod:`mclip.models.foreign_towers`; use with model.projection: none)."""
    pretrained: Union[bool, str] = False
    """timm: true (the hub's weights), false (random init) or a local weights file; open_clip: a
    pretrained tag or file; hf: true loads the model's own weights."""
    image_size: int = 64
    drop_path_rate: float = 0.0
    freeze: list[str] = field(default_factory=list)
    """fnmatch patterns of parameter names to freeze, e.g. ['stem.*', 'layer1.*'] or ['*']."""
    grad_checkpointing: bool = False
    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    projection: str = ""
    """This tower's projection, overriding model.projection: 'none' keeps a foreign tower's own
    embedding (its size must be model.embed_dim); empty: model.projection."""
    interpolation: str = "bilinear"
    """Resampling of the resize: 'bilinear' (antialiased) or 'bicubic' (open_clip / CLIP)."""
    model_args: dict[str, Union[bool, int, float, str]] = field(default_factory=dict)
    """Extra arguments of timm.create_model, e.g. {depth: 6, embed_dim: 192, num_heads: 3} for a
    smaller ViT (a student inheriting a teacher's layers)."""


@dataclass
class TextTowerConfig:
    """The text tower: a transformers encoder (or the built-in byte-level one) and its pooling."""

    name: str = "byte"
    """'byte': a small BERT-style encoder built from this config with the byte-level ByT5
    tokenizer (no download). Anything else: a transformers hub name or a local directory."""
    pretrained: bool = True
    """For hub names / directories: load the weights (True) or only the architecture (False)."""
    pooling: str = "mean"
    max_length: int = 64
    padding: str = "longest"
    """'longest': pad each batch to its longest text (fast: a transformer's cost grows with the
    length); 'max_length': always pad to max_length (fixed shapes, e.g. for torch.compile)."""
    length_groups: int = 1
    """Encode a batch's texts in this many groups of similar length, each padded only to its
    own longest text (same embeddings, less padded compute; pays off on CPU when caption
    lengths vary). Needs padding 'longest'."""
    hidden_size: int = 256
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 512
    dropout: float = 0.1
    freeze: list[str] = field(default_factory=list)
    grad_checkpointing: bool = False


@dataclass
class InheritConfig:
    """Start the student's towers from a teacher's weights (TinyCLIP weight inheritance,
    :mod:`mclip.models.inherit`); used by a fresh run only, never by --resume."""

    from_model: str = ""
    """An mclip run or checkpoint directory whose towers are of the student's families (timm
    ViT / transformers encoder); empty: no inheritance."""
    every: int = 2
    """Student layer i takes the teacher's layer i * every."""
    towers: list[str] = field(default_factory=lambda: ["image", "text"])


@dataclass
class ModelConfig:
    """The dual encoder: both towers, the shared embedding size, logit scale and bias."""

    image: ImageTowerConfig = field(default_factory=ImageTowerConfig)
    text: TextTowerConfig = field(default_factory=TextTowerConfig)
    embed_dim: int = 256
    projection: str = "linear"
    init_logit_scale: float = 2.6592
    """log of the initial temperature inverse; CLIP uses log(1/0.07) = 2.6592."""
    init_logit_bias: float = -10.0
    """Initial bias of the sigmoid loss (SigLIP uses -10); unused by InfoNCE."""
    max_logit_scale: Union[float, None] = 100.0
    """Clamp exp(logit_scale) to at most this during training (None: never clamp)."""
    inherit: InheritConfig = field(default_factory=InheritConfig)


@dataclass
class LossConfig:
    """The contrastive loss and its tile size."""

    kind: str = "infonce"
    """'infonce' (CLIP) or 'sigmoid' (SigLIP)."""
    chunk_size: int = 1024
    """Rows of the logit matrix computed at once; memory O(chunk_size x batch), result exact."""
    matryoshka_dims: list[int] = field(default_factory=list)
    """Nested embedding prefixes trained alongside the full embedding (Matryoshka, Kusupati et
    al. 2022; :mod:`mclip.losses.matryoshka`), e.g. [32, 64, 128] for embed_dim 256; empty: off."""
    matryoshka_weights: list[float] = field(default_factory=list)
    """The weight of each prefix's loss (empty: 1 each); the full embedding's loss has weight 1."""


@dataclass
class TrainConfig:
    """Optimisation, schedule, checkpoints, logging and devices; batch_size is the global batch."""

    steps: int = 300
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup_steps: int = 30
    min_lr_ratio: float = 0.0
    grad_clip: Union[float, None] = 1.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    save_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 10
    seed: int = 0
    out_dir: str = "runs/demo"
    device: str = "auto"
    """'auto' (cuda if available), 'cpu', 'cuda', 'cuda:N'."""
    precision: str = "auto"
    """'auto' (bf16 autocast on GPU, fp32 on CPU), 'fp32', 'bf16'. fp16 is refused: it gives
    NaN with multilingual towers and is ~30x slower on CPU."""
    threads: int = 0
    """torch intra-op threads on CPU; 0: torch's default capped by the CPUs this process may use
    (affinity and cgroup quota: no over-subscription in containers and SLURM jobs)."""
    micro_batches: int = 1
    """Gradient cache: encode each rank's batch in this many pieces; the gradient is unchanged."""
    freeze_batchnorm: bool = False
    """Run BatchNorm layers in eval mode (exact gradient cache with BatchNorm towers)."""
    max_bad_steps: int = 5
    """A step whose loss or gradient is NaN/inf is skipped (weights untouched) and counted;
    this many such steps in a row stop the run with a message (the last checkpoint stays)."""
    channels_last: bool = True
    """Image tower weights and input batches in channels_last memory format: faster
    convolutions (oneDNN on CPU, tensor cores on GPU); saved weights are unchanged."""
    compile: bool = False
    """torch.compile both towers (in place: checkpoint keys are unchanged); pays off on GPU."""


@dataclass
class DistConfig:
    """torch.distributed settings (used only when launched with several ranks)."""

    gather: str = "exact"
    """'exact': every rank's embeddings are negatives (full-batch loss and gradient);
    'group_local': negatives from the rank's group only (less communication, approximate)."""
    group_size: int = 0
    """Ranks per gather group; 0: the ranks of one node (LOCAL_WORLD_SIZE), else all ranks."""
    backend: str = "auto"
    """'auto' (nccl with CUDA, gloo on CPU), 'nccl' or 'gloo'."""
    timeout_minutes: int = 30


@dataclass
class EvalConfig:
    """Evaluation during training (:mod:`mclip.train.periodic_eval`); off unless ``suite`` is
    given and ``every`` > 0. The best checkpoint by ``metric`` is kept as ``OUT_DIR/best/``."""

    suite: str = ""
    """A suite YAML (e.g. eval_suites/demo.yaml); empty: no evaluation during training."""
    every: int = 0
    """Evaluate every this many steps, and after the last step; 0: off."""
    metric: str = ""
    """The number that picks the best checkpoint: 'TASK/METRIC' (a task of the suite and a
    headline metric name as in the results JSON, e.g. 'shapes/acc@1'; its mean over the task's
    languages) or 'mean/METRIC' (the mean of that over the tasks reporting METRIC, offered when
    two or more do). Higher is better. Empty: the first task's first headline metric."""
    data_root: str = ""
    """Where the suite's relative paths point; empty: the suite's own data_root."""
    languages: list[str] = field(default_factory=list)
    """Evaluate only these languages (every task); empty: the suite's languages."""
    limit: Union[int, None] = None
    """Use only the first N images of every image set (faster, noisier); null: all."""
    bootstrap: int = 0
    """Bootstrap resamples for intervals (0: none; intervals cost time)."""
    batch_size: int = 256
    keep_best: bool = True
    """Keep the best model by ``metric`` as OUT_DIR/best/ (a model directory plus best.json)."""


@dataclass
class Config:
    """Everything one training run needs; saved as config.yaml with every checkpoint."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    teacher_learning: TeacherLearningConfig = field(default_factory=TeacherLearningConfig)

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dicts (YAML / JSON ready)."""
        return dataclasses.asdict(self)
