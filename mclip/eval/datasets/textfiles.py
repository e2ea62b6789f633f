"""Reading the text and JSON files of published evaluation sets, gzipped or not.

Files are read as they are published: any of them may be gzipped (``NAME.gz``, or gzip bytes
under any name), and a missing file raises :class:`~mclip.config.ConfigError` naming the file
expected and the folder it was expected in.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from mclip.config import ConfigError

GZIP_MAGIC = b"\x1f\x8b"


def find_file(directory: Path, name: str, what: str) -> Path:
    """The path of ``name`` (or ``name.gz``) in ``directory``; raises ConfigError naming both
    when neither exists. ``what`` says what the file is, for the message."""
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"{what}: expected '{name}' (or '{name}.gz') in '{directory}', but it is not there"
    )


def strip_gz(name: str) -> str:
    """``name`` without a trailing ``.gz`` (how published files are named when compressed)."""
    return name[:-3] if name.endswith(".gz") else name


def read_text(path: Path, what: str) -> str:
    """The whole text of ``path`` (UTF-8, a leading BOM dropped), gunzipped when it is gzip."""
    try:
        raw = Path(path).read_bytes()
        if raw[:2] == GZIP_MAGIC:
            raw = gzip.decompress(raw)
        return raw.decode("utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"{what}: file '{path}' does not exist") from None
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise ConfigError(f"{what}: cannot read '{path}': {error}") from None


def read_lines(path: Path, what: str) -> list[str]:
    """The lines of ``path`` without line ends (``\\n``, ``\\r\\n``); no phantom last line."""
    text = read_text(path, what)
    if not text:
        return []
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_json(path: Path, what: str) -> Any:
    """The parsed JSON of ``path`` (gzipped or not); ConfigError naming the file if it is not
    JSON."""
    text = read_text(path, what)
    try:
        return json.loads(text)
    except ValueError as error:
        raise ConfigError(f"{what}: '{path}' is not valid JSON ({error})") from None
