"""Manifests of saved model and checkpoint directories: which files, what size, what digest.

    DIR/manifest.json   {"version": 1, "files": {"model.safetensors": {"bytes": N, "sha256": H},
                                                 "trainer.pt": {...},
                                                 "text_tower/config.json": ...}}

The manifest is the last file written into a directory (before the directory is renamed into
place), so a directory whose manifest is present was complete when it was written, and one whose
files no longer match it (a truncated copy, a disk error, a half-synced network file system) is
damaged: :func:`damage` says which file and how. Files added later (``adapters/``) are not listed
and not checked. A directory written before manifests existed is checked by structure instead: a
``model.safetensors`` whose header must fit its size, a ``trainer.pt`` that must be a complete zip
archive (torch's format), a ``config.yaml`` that must be there.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zipfile
from pathlib import Path

from mclip.errors import ConfigError
from mclip.outputs import replace_with

MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 1
_CHUNK = 1 << 22


class DamagedCheckpoint(ConfigError):
    """A saved model or checkpoint directory whose files do not match its manifest (or, without
    one, are not whole); the message names the directory and the file."""


def file_digest(path: Path) -> str:
    """sha256 (hex) of a file's bytes, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(directory: str | Path) -> Path:
    """List every file under ``directory`` (relative POSIX names) with its size in bytes and
    sha256, in ``directory/manifest.json``; call it after the last other file is written."""
    directory = Path(directory)
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        name = path.relative_to(directory).as_posix()
        if name != MANIFEST_FILE:
            files[name] = {"bytes": path.stat().st_size, "sha256": file_digest(path)}
    document = json.dumps({"version": MANIFEST_VERSION, "files": files}, indent=1)
    return replace_with(directory / MANIFEST_FILE, lambda tmp: tmp.write_text(document, "utf-8"))


def damage(directory: str | Path, required: tuple[str, ...] = ()) -> str | None:
    """What is wrong with a saved directory, in a few words naming the file, or None if it is
    intact. ``required`` names files that must exist (e.g. ``model.safetensors``)."""
    directory = Path(directory)
    for name in required:
        if not (directory / name).is_file():
            return f"{name} is missing"
    manifest = directory / MANIFEST_FILE
    if not manifest.is_file():
        return _structural_damage(directory)
    try:
        files = json.loads(manifest.read_text("utf-8"))["files"]
        listed = {
            name: (int(entry["bytes"]), str(entry["sha256"])) for name, entry in files.items()
        }
    except (OSError, ValueError, KeyError, TypeError):
        return f"{MANIFEST_FILE} is unreadable"
    for name, (size, digest) in listed.items():
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        actual = path.stat().st_size
        if actual != size:
            return f"{name} has {actual} bytes, the manifest says {size}"
        if file_digest(path) != digest:
            return f"{name} has the right size but other bytes than were written (sha256 differs)"
    return None


def _structural_damage(directory: Path) -> str | None:
    """Checks for directories without a manifest: whole safetensors and zip files."""
    for path in sorted(directory.rglob("*.safetensors")):
        problem = _safetensors_damage(path)
        if problem:
            return f"{path.relative_to(directory).as_posix()} {problem}"
    for path in sorted(directory.glob("*.pt")):
        try:
            with zipfile.ZipFile(path) as archive:
                archive.infolist()
        except (zipfile.BadZipFile, OSError, EOFError):
            return f"{path.name} is not a complete torch archive (truncated?)"
    return None


def _safetensors_damage(path: Path) -> str | None:
    """None when the file's header parses and its tensors end exactly at the end of the file."""
    size = path.stat().st_size
    try:
        with path.open("rb") as handle:
            (header_len,) = struct.unpack("<Q", handle.read(8))
            if header_len > size - 8:
                return f"is truncated ({size} bytes, its header alone needs {header_len + 8})"
            header = json.loads(handle.read(header_len))
    except (OSError, ValueError, struct.error):
        return "has no readable safetensors header (truncated or not a safetensors file)"
    end = max(
        (entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"),
        default=0,
    )
    if 8 + header_len + end != size:
        return f"is truncated ({size} bytes of {8 + header_len + end})"
    return None


def check_intact(directory: str | Path, required: tuple[str, ...] = ()) -> None:
    """Raise :class:`DamagedCheckpoint` naming the directory and the file when :func:`damage`
    finds a problem."""
    problem = damage(directory, required)
    if problem:
        raise DamagedCheckpoint(
            f"'{directory}' is damaged: {problem}. Use an earlier checkpoint "
            f"(a run directory picks its newest intact one), or write this "
            f"one again"
        )
