"""Teacher learning as one weighted term of the image-text step (``distill.parallel_weight``).

Each step also takes a batch of parallel text (``distill.parallel``, a TSV of source,
translation, language): an online teacher encodes the sources, the student's text tower encodes
the translations (through its learned projection when the sizes differ), and the teacher-learning
loss of :mod:`mclip.train.teacher_learning` (Multilingual-CLIP's MSE, or InfoNCE against the
batch's other sources with a learned scale) pulls them together — so a student learns images
and captions and, in the same steps, the teacher's text space in languages that have no
captions (AltCLIP / DC-CLIP do it in stages; here it is one more term). The pairs of a step are
a pure function of the seed and the step, so ``--resume`` is exact; the gradient runs through
the gradient cache and across ranks like the stage-one trainer's, and is added to the step's
image-text gradient before the ranks average.
"""

from __future__ import annotations

import torch

from mclip.config import Config
from mclip.data.parallel import read_parallel_tsv
from mclip.losses.distill_objective import DistillHeads
from mclip.losses.gather import GatherGroups
from mclip.models.dual import DualEncoder
from mclip.train.setup import autocast_context
from mclip.train.teacher_learning import (
    TeacherLearningObjective,
    pair_order,
    source_pairs,
    teacher_learning_gradients,
)
from mclip.train.teachers import Teacher


class _ProjectedText:
    """The student's text tower seen in teacher ``index``'s space (its learned projection)."""

    def __init__(
        self,
        model: DualEncoder,
        heads: DistillHeads,
        index: int,
        device: torch.device,
        precision: str,
    ):
        self.model, self.heads, self.index = model, heads, index
        self.device, self.precision = device, precision

    def encode_text(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        with autocast_context(self.device, self.precision):
            text = self.model.encode_text(tokens)
        return self.heads.project("text", self.index, text.float())


class ParallelTextTerm:
    """``distill.parallel_weight`` x teacher learning on ``pairs`` (module docstring).

    ``pairs``: (source, translation, language) triples; ``teacher``: the online teacher that
    encodes the sources, teacher ``index`` of ``heads``. :meth:`add_gradients` accumulates one
    step's weighted gradient into ``.grad`` and returns the term's unweighted global value.
    """

    def __init__(
        self,
        cfg: Config,
        pairs: list[tuple[str, str, str]],
        teacher: Teacher,
        index: int,
        heads: DistillHeads,
        groups: GatherGroups | None = None,
        rank: int = 0,
        world_size: int = 1,
    ):
        distill = cfg.distill
        self.pairs = pairs + source_pairs(pairs) if distill.parallel_include_source else pairs
        self.teacher, self.index, self.heads = teacher, index, heads
        self.weight, self.seed = distill.parallel_weight, cfg.train.seed
        self.batch_size = distill.parallel_batch_size or cfg.train.batch_size
        self.micro_batches, self.precision = cfg.train.micro_batches, cfg.train.precision
        self.rank, self.world_size = rank, world_size
        self.objective = TeacherLearningObjective(
            distill.parallel_loss, cfg.loss.chunk_size, groups
        )
        self.last_value = float("nan")

    @property
    def terms(self) -> dict[str, float]:
        """The term's unweighted value of the last step, for the log's ``terms``."""
        return {"teacher_learning": self.last_value}

    def _weighted(self, teacher_emb, student_emb, logit_scale):
        to_backward, value = self.objective(teacher_emb, student_emb, logit_scale)
        return self.weight * to_backward, value

    def add_gradients(self, model: DualEncoder, step: int, device: torch.device) -> torch.Tensor:
        """Accumulate this rank's gradient of the weighted term for global step ``step``;
        return the unweighted global value (a 0-d tensor)."""
        local = self.batch_size // self.world_size
        rows = pair_order(len(self.pairs), self.seed, step, self.batch_size)
        rows = rows[self.rank * local : (self.rank + 1) * local]
        assert self.teacher.model is not None  # an online teacher (parallel_term picks one)
        with torch.no_grad(), autocast_context(device, self.precision):
            teacher_emb = self.teacher.model.encode_text([self.pairs[i][0] for i in rows])
        tokens = {
            k: v.to(device) for k, v in model.tokenize([self.pairs[i][1] for i in rows]).items()
        }
        student = _ProjectedText(model, self.heads, self.index, device, self.precision)
        scale = (
            self.heads.parallel_logit_scale
            if self.heads.parallel_logit_scale is not None
            else torch.zeros((), device=device)
        )
        value = teacher_learning_gradients(
            student,
            self._weighted,
            scale,
            teacher_emb.float().to(device),
            tokens,
            self.micro_batches,
            device,
        )
        self.last_value = float(value)
        return value


def parallel_term(
    cfg: Config,
    teachers: list[Teacher],
    heads: DistillHeads | None,
    groups: GatherGroups | None,
    rank: int,
    world_size: int,
) -> tuple[ParallelTextTerm | None, dict]:
    """The term of ``cfg.distill`` (None when ``parallel_weight`` is 0) with the first online
    teacher, and what reading the TSV found: {"pairs", "skipped", "teacher"}."""
    if cfg.distill.parallel_weight <= 0:
        return None, {}
    pairs, skipped = read_parallel_tsv(cfg.distill.parallel)
    index = next(i for i, teacher in enumerate(teachers) if teacher.online)
    assert heads is not None  # built whenever there are teachers (build_objective)
    term = ParallelTextTerm(cfg, pairs, teachers[index], index, heads, groups, rank, world_size)
    return term, {"pairs": len(term.pairs), "skipped": skipped, "teacher": teachers[index].name}
