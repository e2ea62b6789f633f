"""Output files written whole or not at all, and output folders checked before any work.

Every file a report, a comparison or an export writes goes through :func:`write_atomically`: the
content goes to a hidden temporary file beside the target, is flushed to disk, and only then
renamed over the target. A full disk or a killed process therefore leaves the previous file as it
was, never a truncated one. A failure is an :class:`OutputError` (a ConfigError: one line from the
CLI) naming the path. :func:`check_writable` lets a command refuse an unwritable output folder
before it spends an evaluation or a training run on results it could not keep.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Callable

from mclip.errors import ConfigError


class OutputError(ConfigError):
    """An output file or folder that cannot be written; the message names the path."""


def replace_with(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` to write the whole content to a temporary path beside ``path``, make
    it durable (fsync) and rename it to ``path``; returns ``path``. An OSError (no space, no
    permission) is raised as it is, after removing the temporary file: ``path`` keeps its earlier
    content. For callers with their own handling of OSError (the trainer's checkpoints)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        descriptor = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(tmp, path)
    except OSError:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise
    return path


def write_atomically(path: str | Path, write: Callable[[Path], object]) -> Path:
    """:func:`replace_with`, with an OSError turned into an :class:`OutputError` naming
    ``path`` (one line from the CLI)."""
    try:
        return replace_with(path, write)
    except OSError as error:
        raise OutputError(
            f"could not write '{path}': {error.strerror or error}; free space or "
            f"choose another output folder (an earlier '{Path(path).name}' there "
            f"is unchanged)"
        ) from None


def write_text_atomically(path: str | Path, text: str) -> Path:
    """:func:`write_atomically` of a UTF-8 text."""
    return write_atomically(path, lambda tmp: tmp.write_text(text, "utf-8"))


def check_writable(directory: str | Path, option: str) -> Path:
    """Create ``directory`` (and its parents) and write and remove a small probe file in it;
    an :class:`OutputError` naming ``option`` (e.g. ``--out``) and the folder when that fails.
    Returns the directory."""
    directory = Path(directory)
    probe = directory / f".mclip-write-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise OutputError(
            f"{option} '{directory}' is not a writable folder "
            f"({error.strerror or error}); "
            f"choose a folder you can write to"
        ) from None
    return directory
