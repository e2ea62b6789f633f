"""Helpers of the benchmark scripts that train and evaluate with the ``mclip`` CLI: a run is a
subprocess whose output goes to a log, and finished runs and evaluations are reused, so an
interrupted benchmark continues where it stopped."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def mclip(args: list[str], threads: int, log: Path) -> None:
    """Run one ``mclip`` command, its output in ``log``; exit with the log's tail if it fails."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "mclip.cli", *map(str, args)]
    with log.open("w") as stream:
        done = subprocess.run(command, stdout=stream, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{log.read_text()[-3000:]}")


def finished(run: Path) -> bool:
    """Whether ``run`` trained to its last step (its log ends with an unstopped ``end``)."""
    log = run / "log.jsonl"
    if not log.exists():
        return False
    last = json.loads(log.read_text().splitlines()[-1])
    return last.get("event") == "end" and last.get("stopped_by") is None


def parameters(run: Path) -> int:
    """The model's parameter count, from the run's ``start`` log event."""
    return json.loads((run / "log.jsonl").read_text().splitlines()[0])["parameters"]


def evaluate(
    model: Path, suite: Path, data: Path, out: Path, threads: int, extra: list[str] = ()
) -> list[dict]:
    """``mclip eval`` of ``model`` on ``suite`` into ``out`` (reused when ``out`` holds its
    results); the rows of its ``results.csv`` (task, language, metric, value in [0, 1], ...)."""
    results = out / "results.csv"
    if not results.exists():
        print(f"[{out.parent.name}/{out.name}] evaluating ...", file=sys.stderr, flush=True)
        mclip(
            [
                "eval",
                "--model",
                model,
                "--suite",
                suite,
                "--data-root",
                data,
                "--out",
                out,
                "--quiet",
                *extra,
            ],
            threads,
            out.parent / f"{out.name}.eval.log",
        )
    return list(csv.DictReader(results.open()))


def metric(rows: list[dict], task: str, name: str) -> dict[str, float]:
    """{language: value in %} of one task's metric."""
    return {
        row["language"]: 100 * float(row["value"])
        for row in rows
        if row["task"] == task and row["metric"] == name
    }


def write_report(args, targets: dict[str, bool], report: dict) -> None:
    """Print each target as met / NOT met and write ``report`` with the arguments and the
    targets to ``args.out`` as JSON."""
    for target, met in targets.items():
        print(f"  {'met' if met else 'NOT met'}: {target}")
    report = {"config": {k: str(v) for k, v in vars(args).items()}, **report, "targets": targets}
    args.out.write_text(json.dumps(report, indent=1))
    print(f"\nwrote {args.out}")
