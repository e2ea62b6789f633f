"""The trainer's logger: a progress bar on a terminal, JSONL always, TensorBoard if installed."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from tqdm import tqdm


class TrainLogger:
    """Writes every record to ``OUT_DIR/log.jsonl``; shows progress on stderr.

    On a terminal a tqdm bar shows loss, lr and samples/s; elsewhere (CI, pipes) a plain line is
    printed for each logged step. ``quiet=True`` shows nothing (the JSONL is still written).
    Only rank 0 should own a logger that writes. ``append=False`` starts a new log (a fresh
    run); a resumed run appends to its log.
    """

    def __init__(
        self,
        out_dir: str | Path,
        total_steps: int,
        start_step: int = 0,
        quiet: bool = False,
        enabled: bool = True,
        append: bool = True,
    ):
        self.enabled = enabled
        self.quiet = quiet or not enabled
        self.interactive = sys.stderr.isatty() and not self.quiet
        self.path = Path(out_dir) / "log.jsonl"
        self._file = None
        self._bar = None
        self._tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a" if append else "w", encoding="utf-8")
        if self.interactive:
            self._bar = tqdm(
                total=total_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True
            )
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(Path(out_dir) / "tensorboard"))
        except Exception:  # tensorboard is optional
            self._tb = None

    def event(self, name: str, **fields) -> None:
        """A one-off record (start, resume, checkpoint, end); printed unless quiet."""
        if not self.enabled:
            return
        self._write({"event": name, "time": time.time(), **fields})
        if not self.quiet:
            message = f"[mclip] {name}: " + ", ".join(
                f"{k}={_fmt(v)}" for k, v in fields.items() if k != "config"
            )
            (self._bar.write(message) if self._bar else print(message, file=sys.stderr, flush=True))

    def step(self, step: int, metrics: dict) -> None:
        """A training-step record (the bar moves with :meth:`advance`)."""
        if not self.enabled:
            return
        self._write({"step": step, "time": time.time(), **metrics})
        if self._tb is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)):
                    self._tb.add_scalar(key, value, step)
        shown = {k: metrics[k] for k in ("loss", "lr", "samples_per_s") if k in metrics}
        if self._bar is not None:
            self._bar.set_postfix({k: _fmt(v) for k, v in shown.items()})
        elif not self.quiet:
            print(
                f"[mclip] step {step}: " + ", ".join(f"{k}={_fmt(v)}" for k, v in shown.items()),
                file=sys.stderr,
                flush=True,
            )

    def evaluation(self, step: int, numbers: dict[str, float], **fields) -> None:
        """An evaluation during training: ``numbers`` are headline numbers {"TASK/METRIC": value}
        (:mod:`mclip.train.periodic_eval`); ``fields`` say e.g. which metric picks the best model
        and whether this one is the best so far.

        JSONL: ``{"event": "eval", "step", "time", "metrics": numbers, **fields}``; TensorBoard:
        a scalar ``eval/TASK/METRIC`` per number; one printed line unless quiet.
        """
        if not self.enabled:
            return
        self._write(
            {"event": "eval", "step": step, "time": time.time(), "metrics": dict(numbers), **fields}
        )
        if self._tb is not None:
            for key, value in numbers.items():
                self._tb.add_scalar(f"eval/{key}", value, step)
            self._tb.flush()
        if not self.quiet:
            message = f"[mclip] eval at step {step}: " + ", ".join(
                f"{k}={_fmt(v)}" for k, v in {**fields, **numbers}.items()
            )
            (self._bar.write(message) if self._bar else print(message, file=sys.stderr, flush=True))

    def advance(self, n: int = 1) -> None:
        """Move the progress bar by ``n`` steps."""
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        """Flush and close the bar, the JSONL file and TensorBoard."""
        for handle in (self._bar, self._file, self._tb):
            if handle is not None:
                handle.close()
        self._bar = self._file = self._tb = None

    def _write(self, record: dict) -> None:
        assert self._file is not None  # callers write only when enabled, and before close()
        self._file.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        self._file.flush()


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
