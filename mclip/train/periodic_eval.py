"""Evaluation during training: a suite at fixed steps, its headline numbers, the best model kept.

The trainer builds one :class:`TrainingEvaluator` from the config (``eval.*`` keys) before the
first step; that loads the suite and checks ``eval.metric`` against it, so a wrong name fails
before any training. At the steps :meth:`~TrainingEvaluator.due` names, every rank calls
:meth:`~TrainingEvaluator.evaluate` with the live model (each rank encodes its share of the
images and texts, :mod:`mclip.eval.distributed`) and then
:meth:`~TrainingEvaluator.keep_best`, which rank 0 alone acts on by writing::

    OUT_DIR/best/
        config.yaml, model.safetensors (, text_tower/)   -- `mclip eval --model OUT_DIR/best`
        best.json                                        -- metric, value, step, numbers

Headline numbers are named ``TASK/METRIC``: a task of the suite and a metric name as in the
results JSON of ``mclip eval`` (``shapes/acc@1``, ``xtd10/text_to_image_R@1``), each the mean
over the task's languages -- the task's ``mean`` block of that JSON. ``mean/METRIC`` is the mean
of ``TASK/METRIC`` over the tasks that report METRIC, offered when two or more tasks of the suite
report it. Only the headline metrics of :data:`mclip.eval.metric_names.HEADLINE` count (counts such
as ``n_classes`` do not), and ``acc@k`` / ``R@k`` only for the ``k`` the task asks for. Higher is
better for all of them.

Evaluation runs in fp32 without autocast, exactly as ``mclip eval`` does, so its numbers equal
those of ``mclip eval`` on the saved weights; it leaves the model's train / eval modes and the
RNG streams as it found them, so a run with evaluation trains the same weights as one without.
"""

from __future__ import annotations

import difflib
import json
import math
import shutil
from pathlib import Path

import torch

from mclip.config import Config, ConfigError
from mclip.eval.distributed import EvalRanks
from mclip.eval.metric_names import headline
from mclip.eval.results import language_means
from mclip.eval.suite import Suite, Task, load_suite, narrow_languages, run_suite
from mclip.models.adapters.native import NativeAdapter
from mclip.models.dual import WEIGHTS_FILE, DualEncoder
from mclip.train.checkpoint import rng_state, set_rng_state
from mclip.train.distributed import DistContext

BEST_DIR = "best"
BEST_FILE = "best.json"
MEAN = "mean"
_TMP, _OLD = ".tmp-best", ".old-best"
_PATH_KEYS = ("images", "class_texts", "prompts", "captions", "sentences")
_K_OF = {
    "zeroshot_classification": "top_k",
    "retrieval": "recall_at",
    "bitext_retrieval": "top_k",
    "image_to_image": "recall_at",
    "text_to_text": "recall_at",
}


def task_headline(task: Task) -> list[str]:
    """The headline metrics ``task`` reports: :func:`~mclip.eval.metric_names.headline` of its kind,
    counts left out, ``acc@k`` / ``R@k`` only for the ``k`` in its ``top_k`` / ``recall_at``."""
    ks = getattr(task, _K_OF[task.kind]) if task.kind in _K_OF else None
    out = []
    for metric in headline(task.kind):
        if metric.startswith("n_"):
            continue
        stem, _, k = metric.rpartition("@")
        if ks is not None and stem.endswith(("acc", "R")) and k.isdigit() and int(k) not in ks:
            continue
        out.append(metric)
    return out


def metric_names(suite: Suite) -> list[str]:
    """The valid ``eval.metric`` values for ``suite``, in suite order: ``TASK/METRIC`` for each
    task's headline metrics, then ``mean/METRIC`` for metrics two or more tasks report."""
    names, tasks_of = [], dict[str, list[str]]()
    for task in suite.tasks:
        for metric in task_headline(task):
            names.append(f"{task.name}/{metric}")
            tasks_of.setdefault(metric, []).append(task.name)
    means = [f"{MEAN}/{metric}" for metric, tasks in tasks_of.items() if len(tasks) > 1]
    clash = [name for name in means if name in names]
    if clash:
        raise ConfigError(
            f"suite '{suite.name}' has a task named '{MEAN}', which clashes with "
            f"the mean over tasks ({', '.join(clash)}); rename the task"
        )
    return names + means


def headline_numbers(results: dict, names: list[str] | None = None) -> dict[str, float]:
    """{``TASK/METRIC``: mean over the task's languages} for the headline metrics of
    :func:`~mclip.eval.runner.run_tasks` results, and ``mean/METRIC`` over the tasks that have a
    value for it (without ``names``: where two or more do); a metric without a value in any
    language (not applicable) is absent. With ``names`` (from :func:`metric_names`) only those
    keys, in that order."""
    numbers, per_metric = {}, dict[str, list[float]]()
    for name, task in results.items():
        keys = [k for k in headline(task["kind"]) if not k.startswith("n_")]
        for metric, value in language_means(task, keys).get("all", {}).items():
            numbers[f"{name}/{metric}"] = float(value)
            per_metric.setdefault(metric, []).append(float(value))
    means = {
        f"{MEAN}/{metric}": sum(values) / len(values)
        for metric, values in per_metric.items()
        if names is not None or len(values) > 1
    }
    for key, value in means.items():  # a task named 'mean' is refused by metric_names
        numbers.setdefault(key, value)
    if names is None:
        return numbers
    return {key: numbers[key] for key in names if key in numbers}


def check_suite_paths(suite: Suite, suite_path: str, data_root: str) -> None:
    """ConfigError naming the task, the key and ``eval.data_root`` when a data path of ``suite``
    does not exist (shard patterns with braces or wildcards are left to the readers)."""
    for task in suite.tasks:
        for key in _PATH_KEYS:
            for part in filter(None, (p.strip() for p in str(getattr(task, key, "")).split(","))):
                if any(ch in part for ch in "{*?") or Path(part).exists():
                    continue
                root = (
                    f"'{data_root}'"
                    if data_root
                    else f"empty, so the suite's own '{suite.data_root}'"
                )
                raise ConfigError(
                    f"eval.suite '{suite_path}', task '{task.name}': {key} '{part}' "
                    f"does not exist; config key 'eval.data_root' ({root}) must be "
                    f"the folder holding the suite's data (e.g. the output of "
                    f"'mclip data demo' for eval_suites/demo.yaml)"
                )


def write_best(out_dir: str | Path, model: DualEncoder, cfg: Config, record: dict) -> Path:
    """Write ``OUT_DIR/best/`` (model directory + ``best.json`` with ``record``) atomically.

    The new model is written completely to ``OUT_DIR/.tmp-best`` (``best.json`` last: it marks a
    complete directory); only then is the old ``best`` moved aside, the new one renamed into
    place, and the old one deleted. :func:`recover_best` repairs a crash between the renames.
    """
    out_dir = Path(out_dir)
    final, tmp, old = out_dir / BEST_DIR, out_dir / _TMP, out_dir / _OLD
    shutil.rmtree(tmp, ignore_errors=True)
    model.save(tmp, cfg)
    (tmp / BEST_FILE).write_text(json.dumps(record, indent=1, ensure_ascii=False), "utf-8")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def _complete(directory: Path) -> bool:
    return (directory / BEST_FILE).is_file() and (directory / WEIGHTS_FILE).is_file()


def recover_best(out_dir: str | Path) -> None:
    """After a crash inside :func:`write_best`: put a complete best model back at ``best/``
    (the new one if it was finished, else the old one) and remove the leftovers."""
    out_dir = Path(out_dir)
    final, tmp, old = out_dir / BEST_DIR, out_dir / _TMP, out_dir / _OLD
    if not final.exists():
        for candidate in (tmp, old):
            if _complete(candidate):
                candidate.rename(final)
                break
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)


def read_best(out_dir: str | Path) -> dict | None:
    """The ``best.json`` record of ``OUT_DIR/best``, or None when there is none (or unreadable)."""
    path = Path(out_dir) / BEST_DIR / BEST_FILE
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None


class TrainingEvaluator:
    """Runs ``cfg.eval.suite`` on the model being trained and keeps the best one.

    Build it on every rank before training (``dist``: the trainer's
    :class:`~mclip.train.distributed.DistContext`; None for one process). It raises a
    ConfigError for a wrong ``eval.metric`` (listing the valid names), a missing data path or a
    bad suite. ``enabled`` is False when ``eval.suite`` is empty or ``eval.every`` is 0; then
    :meth:`due` is always False. With ``resume=True`` the best value so far is read back from
    ``OUT_DIR/best/best.json``; a fresh run starts without one (its first evaluation replaces an
    earlier run's ``best/``).

    ``metric`` is the resolved metric name, ``names`` every headline number :meth:`evaluate`
    returns, ``best_value`` / ``best_step`` the best so far (None before the first), and
    ``last_results`` the full per-language results of the last evaluation (as ``run_suite``).
    """

    def __init__(self, cfg: Config, dist: DistContext | None = None, resume: bool = False):
        ev = cfg.eval
        self.cfg = cfg
        self.enabled = bool(ev.suite.strip()) and ev.every > 0
        self.every, self.total_steps = ev.every, cfg.train.steps
        self.out_dir = Path(cfg.train.out_dir)
        self.ranks = EvalRanks(dist.rank, dist.world_size) if dist is not None else EvalRanks()
        self.suite: Suite | None = None
        self.names: list[str] = []
        self.metric = ""
        self.best_value: float | None = None
        self.best_step: int | None = None
        self.last_results: dict = {}
        if not self.enabled:
            return
        suite = load_suite(ev.suite, ev.data_root or None)
        if ev.languages:
            narrow_languages(suite, list(ev.languages))
        check_suite_paths(suite, ev.suite, ev.data_root)
        self.suite, self.names = suite, metric_names(suite)
        if not self.names:
            raise ConfigError(
                f"eval.suite '{ev.suite}' reports no headline metric to pick the "
                f"best checkpoint by (its tasks ask for none of acc@1 / acc@5 / "
                f"R@1 / R@5 ...); add one to a task's top_k or recall_at"
            )
        self.metric = ev.metric or self.names[0]
        if self.metric not in self.names:
            raise ConfigError(self._unknown_metric(self.names, f"suite '{ev.suite}'"))
        if self.ranks.is_main:
            recover_best(self.out_dir)
        if resume:  # rank 0's file, so that every rank compares against the same value
            record = self.ranks.broadcast(read_best(self.out_dir) if self.ranks.is_main else None)
            if record is not None and record.get("metric") == self.metric:
                self.best_value, self.best_step = float(record["value"]), int(record["step"])

    def _unknown_metric(self, valid: list[str], where: str) -> str:
        close = difflib.get_close_matches(self.metric, valid, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        return (
            f"config key 'eval.metric' is '{self.metric}', which is not a headline number of "
            f"{where}.{hint} Valid: {', '.join(valid)} (TASK/METRIC is the mean over the "
            f"task's languages; mean/METRIC the mean over tasks)"
        )

    def due(self, step: int) -> bool:
        """Whether to evaluate after ``step`` completed steps: every ``eval.every`` steps and
        after the last one."""
        return self.enabled and step > 0 and (step % self.every == 0 or step == self.total_steps)

    def evaluate(self, model: DualEncoder, step: int) -> dict[str, float]:
        """Run the suite on the live ``model`` (on its device, fp32, no gradients) on every rank;
        returns the headline numbers {``TASK/METRIC``: value}, the same on every rank.

        The model's train / eval modes and the RNG states are restored afterwards. ConfigError
        (listing what the suite produced) when ``eval.metric`` has no value (e.g. ``acc@5`` on
        a task whose languages all have fewer than 5 classes).
        """
        if not self.enabled:
            raise ConfigError(
                "evaluation during training is off (eval.suite empty or eval.every 0)"
            )
        assert self.suite is not None  # set by __init__ whenever enabled
        ev = self.cfg.eval
        modes = [(module, module.training) for module in model.modules()]
        rng = rng_state()
        adapter = NativeAdapter(model, self.cfg, name=f"{self.out_dir} step {step}")
        try:
            with torch.no_grad():
                results = run_suite(
                    adapter,
                    self.suite,
                    device=model.logit_scale.device,
                    batch_size=ev.batch_size,
                    limit=ev.limit,
                    bootstrap=ev.bootstrap,
                    seed=0,
                    ranks=self.ranks,
                )
        finally:
            for module, training in modes:
                module.train(training)
            set_rng_state(rng)
        numbers = self.ranks.broadcast(headline_numbers(results, self.names))
        self.last_results = results
        if self.metric not in numbers:
            raise ConfigError(
                self._unknown_metric(
                    list(numbers),
                    f"what suite '{ev.suite}' produced at step {step} (the metric has "
                    f"no value in any language)",
                )
            )
        return numbers

    def keep_best(
        self,
        model: DualEncoder,
        cfg: Config,
        step: int,
        value: float,
        numbers: dict[str, float] | None = None,
    ) -> bool:
        """Whether ``value`` (of ``metric``, at ``step``) beats the best so far (strictly; NaN
        never does). If so, and ``eval.keep_best``, rank 0 writes ``model`` (saved with ``cfg``)
        to ``OUT_DIR/best/`` atomically with ``best.json`` {metric, value, step, numbers}; the
        old best is removed only once the new one is complete. Call it on every rank with the
        same value (what :meth:`evaluate` returns is identical on all ranks)."""
        value = float(value)
        if not math.isfinite(value) or (self.best_value is not None and value <= self.best_value):
            return False
        if self.cfg.eval.keep_best and self.ranks.is_main:
            suite = self.suite.name if self.suite is not None else ""
            write_best(
                self.out_dir,
                model,
                cfg,
                {
                    "metric": self.metric,
                    "value": value,
                    "step": step,
                    "suite": suite,
                    "numbers": dict(numbers or {}),
                },
            )
        self.best_value, self.best_step = value, step
        return True
