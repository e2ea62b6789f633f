"""Progress of the CLI's long commands: a tqdm bar on a terminal, plain lines elsewhere.

A bar written to a log file is one long line of carriage returns, and a disabled bar says
nothing for half an hour; so off a terminal (CI, ``nohup``, pipes) the count is printed as a
line at most every ``every_s`` seconds, and once at the end.
"""

from __future__ import annotations

import sys
import time


class LineProgress:
    """A tqdm-like counter printing ``[mclip] DESC: N/TOTAL UNIT (R UNIT/s)`` lines to stderr.

    Supports what the CLI uses of tqdm: ``update(n)``, ``set_postfix(**values)``, and use as a
    context manager (the closing line gives the final count and the elapsed seconds).
    """

    def __init__(
        self,
        desc: str,
        total: int | None = None,
        unit: str = "it",
        every_s: float = 60.0,
        clock=time.monotonic,
        stream=None,
    ):
        self.desc, self.total, self.unit, self.every_s = desc, total, unit, every_s
        self.n, self.postfix = 0, dict[str, object]()
        self._clock, self._stream = clock, stream
        self._start = self._last = clock()

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units; print a line if ``every_s`` seconds passed since the last."""
        self.n += n
        if self._clock() - self._last >= self.every_s:
            self._print()

    def set_postfix(self, refresh: bool = False, **values) -> None:
        """Values shown after the count (e.g. ``loss``), as tqdm's ``set_postfix``."""
        self.postfix = values

    def _print(self, done: bool = False) -> None:
        now = self._clock()
        self._last = now
        elapsed = now - self._start
        count = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
        rate = f"{self.n / elapsed:.1f} {self.unit}/s" if elapsed > 0 else ""
        extra = "".join(f", {k}={v}" for k, v in self.postfix.items())
        timing = f", done in {elapsed:.0f} s" if done else ""
        print(
            f"[mclip] {self.desc}: {count} {self.unit} ({rate}{extra}{timing})",
            file=self._stream or sys.stderr,
            flush=True,
        )

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self._print(done=True)


def progress_bar(desc: str, total: int | None = None, unit: str = "it", every_s: float = 60.0):
    """A tqdm bar when stderr is a terminal, else a :class:`LineProgress` (``every_s`` seconds
    between lines). Use as a context manager; ``update(n)`` counts ``n`` more ``unit``."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True)
    return LineProgress(desc, total, unit, every_s)


def warn_passed_over(command: str, damaged: list) -> None:
    """One warning line per damaged checkpoint a run directory's resolution passed over."""
    for path, problem in damaged:
        print(
            f"[{command}] warning: passed over damaged checkpoint {path} ({problem})",
            file=sys.stderr,
        )
