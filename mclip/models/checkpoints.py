"""Finding a run's checkpoints on disk: ``OUT_DIR/checkpoints/step_*``, the newest intact one,
and the model directory a path names (a checkpoint, or a run's newest intact checkpoint).

Writing checkpoints is the trainer's (:mod:`mclip.train.checkpoint`); reading them is needed
below it too (loading a run as a model, :mod:`mclip.models.adapters.native`), so it lives here.
"""

from __future__ import annotations

import re
from pathlib import Path

from mclip.errors import ConfigError
from mclip.models.dual import CONFIG_FILE, WEIGHTS_FILE
from mclip.models.manifest import DamagedCheckpoint, damage

_STEP_DIR = re.compile(r"^step_(\d+)$")


def checkpoint_dir(out_dir: str | Path) -> Path:
    """Where a run keeps its checkpoints: ``OUT_DIR/checkpoints``."""
    return Path(out_dir) / "checkpoints"


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Complete checkpoints under ``out_dir``, oldest first."""
    root = checkpoint_dir(out_dir)
    if not root.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in root.iterdir()
        if (m := _STEP_DIR.match(p.name)) and (p / WEIGHTS_FILE).is_file()
    ]
    return [p for _, p in sorted(found)]


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run (intact or not), or None."""
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def newest_intact_checkpoint(
    out_dir: str | Path, required: tuple[str, ...] = (CONFIG_FILE,)
) -> tuple[Path | None, list[tuple[Path, str]]]:
    """(the newest checkpoint whose files match its manifest, or None; [(newer checkpoint,
    what is wrong with it)] for each damaged one passed over, newest first). ``required``: files
    a checkpoint must have besides its weights (``trainer.pt`` to resume)."""
    damaged: list[tuple[Path, str]] = []
    for path in reversed(list_checkpoints(out_dir)):
        problem = damage(path, required=(WEIGHTS_FILE, *required))
        if problem is None:
            return path, damaged
        damaged.append((path, problem))
    return None, damaged


def resolve_model_dir(path: str | Path, passed_over: list | None = None) -> Path:
    """A checked model directory from a checkpoint directory or a run directory (its newest
    intact checkpoint; each damaged newer one is appended to ``passed_over`` as (path, problem)).
    A damaged checkpoint named directly, or a run with none intact, is a ConfigError naming the
    file."""
    path = Path(path)
    if (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file():
        problem = damage(path)
        if problem:
            raise DamagedCheckpoint(
                f"checkpoint '{path}' is damaged: {problem}. Name an earlier "
                f"checkpoint, or the run directory to use its newest "
                f"intact one"
            )
        return path
    intact, damaged = newest_intact_checkpoint(path)
    if passed_over is not None:
        passed_over.extend(damaged)
    if intact is None and damaged:
        listed = "; ".join(f"{p.name}: {problem}" for p, problem in damaged[:3])
        raise DamagedCheckpoint(
            f"run '{path}' has no intact checkpoint ({listed}); train again or restore the files"
        )
    if intact is None:
        raise ConfigError(
            f"'{path}' is neither a model directory ({CONFIG_FILE} + {WEIGHTS_FILE}) "
            f"nor a run directory with checkpoints/step_*; pass e.g. "
            f"runs/demo or runs/demo/checkpoints/step_0000300"
        )
    return intact
