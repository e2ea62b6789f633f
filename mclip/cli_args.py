"""Argument types of the ``mclip`` command line: numbers in range, existing paths, devices.

Each is an argparse ``type=``, so a bad value stops the command while its arguments are parsed,
before any work, as one line (:class:`OneLineParser`):

    mclip: error: argument --limit: 0 is not an integer >= 1 (see 'mclip eval --help')
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Callable


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit status 2, like every other
    mclip error (argparse's own print the usage block first)."""

    def error(self, message: str):
        self.exit(2, f"mclip: error: {message} (see '{self.prog} --help')\n")


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
        if number < minimum:
            raise argparse.ArgumentTypeError(f"{number} is not an integer >= {minimum}")
        return number

    parse.__name__ = f"integer >= {minimum}"
    return parse


def float_in(
    low: float, high: float | None = None, low_open: bool = True, high_open: bool = True
) -> Callable[[str], float]:
    """An argparse type: a float in the interval from ``low`` to ``high`` (None: no bound);
    ``low_open`` / ``high_open`` exclude the bounds."""
    shown = (
        f"{'(' if low_open else '['}{low:g}, "
        f"{'inf)' if high is None else f'{high:g}' + (')' if high_open else ']')}"
    )

    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
        too_low = number <= low if low_open else number < low
        too_high = high is not None and (number >= high if high_open else number > high)
        if too_low or too_high or number != number:
            raise argparse.ArgumentTypeError(f"{value} is not in {shown}")
        return number

    parse.__name__ = f"number in {shown}"
    return parse


def _existing(kind: str) -> Callable[[str], str]:
    """An argparse type: the path of an existing ``file``, ``dir`` or ``path`` (either)."""
    checks = {"file": Path.is_file, "dir": Path.is_dir, "path": Path.exists}

    def parse(value: str) -> str:
        path = Path(value)
        if not checks[kind](path):
            if not path.exists():
                raise argparse.ArgumentTypeError(f"'{value}' does not exist")
            other = "a directory, not a file" if kind == "file" else "a file, not a directory"
            raise argparse.ArgumentTypeError(f"'{value}' is {other}")
        return value

    parse.__name__ = f"existing {kind}"
    return parse


existing_file, existing_dir, existing_path = _existing("file"), _existing("dir"), _existing("path")


def device_name(value: str) -> str:
    """An argparse type: ``auto`` or a torch device this machine has (``cpu``, ``cuda``,
    ``cuda:1``, ...); ``cuda`` without a visible GPU, or a GPU index past the last, is refused."""
    if value == "auto":
        return value
    import torch

    try:
        device = torch.device(value)
    except (RuntimeError, TypeError):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a device; give auto, cpu, cuda or cuda:N"
        ) from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise argparse.ArgumentTypeError(
                f"{value}: no CUDA device is visible here; use cpu or auto"
            )
        if device.index is not None and device.index >= count:
            raise argparse.ArgumentTypeError(
                f"{value}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
            )
    return value


def hub_id(value: str) -> str:
    """An argparse type: a Hugging Face repository id ``ORG/NAME``."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*", value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a repository id ORG/NAME (letters, digits, '.', '_', '-')"
        )
    return value


def embed_dims(value: str) -> list:
    """An argparse type: ``32,64,full`` (:func:`mclip.eval.embed_dims.parse_embed_dims`)."""
    from mclip.errors import ConfigError
    from mclip.eval.embed_dims import parse_embed_dims

    try:
        return parse_embed_dims(value)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(
            str(error).removeprefix("--embed-dims").lstrip(": ")
        ) from None
