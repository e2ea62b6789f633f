"""Image and text embeddings kept on disk between evaluation runs (``mclip eval --cache DIR``).

Everything is keyed by a fingerprint of the model (its class, spec, library versions and every
weight and buffer), so a retrained or different model never reads another model's embeddings:

    DIR/<model fingerprint>/model.json                 what the fingerprint stands for
    DIR/<model fingerprint>/images/<set key>.safetensors
        emb [N, d] float32; metadata: keys, labels, skip counts, the set's description
        set key = hash of (image set description, its files' state, the image transform, limit)
    DIR/<model fingerprint>/texts/<run>-<n>.safetensors
        emb [K, d] float32 and hash [K] int64 (64-bit BLAKE2b of each text)

A changed image file changes the set's key (every file's name, size, modification time and a hash
of its first and last MiB: :func:`mclip.eval.datasets.base.file_state`), so its entry is simply
not found again; a second run with more languages finds the texts it already encoded and encodes
only the new ones. Text lookups use 64-bit hashes: with 10 million cached texts the chance of any
collision is about 3e-6. Files are written to a temporary name and renamed, so a killed run leaves
no half-written entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mclip.config import ConfigError
from mclip.fingerprint import model_fingerprint  # noqa: F401  (the cache's key)
from mclip.outputs import write_atomically, write_text_atomically


def transform_fingerprint(transform) -> str:
    """A stable description of an image transform: its repr without memory addresses."""
    text = re.sub(r" at 0x[0-9a-fA-F]+", "", repr(transform))
    if "object>" in text and hasattr(transform, "__dict__"):  # a default repr says nothing
        text += repr(sorted((k, repr(v)) for k, v in vars(transform).items()))
    return text


def text_hashes(texts: list[str]) -> np.ndarray:
    """64-bit BLAKE2b hash of each text, int64 [len(texts)]."""
    return np.array(
        [
            int.from_bytes(
                hashlib.blake2b(t.encode("utf-8"), digest_size=8).digest(), "little", signed=True
            )
            for t in texts
        ],
        dtype=np.int64,
    )


class EmbeddingCache:
    """The on-disk cache of one model's embeddings (see the module docstring).

    ``stats`` counts ``image_hits``, ``image_misses``, ``text_hits`` and ``text_misses``.
    """

    def __init__(self, directory: str | Path, model, precision: str = "fp32"):
        self.root = Path(directory) / model_fingerprint(model, precision)
        try:
            (self.root / "images").mkdir(parents=True, exist_ok=True)
            (self.root / "texts").mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(
                f"cannot use '{directory}' as an embedding cache: {error}; pass "
                f"a writable --cache directory"
            ) from None
        info = self.root / "model.json"
        if not info.exists():
            write_text_atomically(
                info,
                json.dumps(
                    {
                        "name": getattr(model, "name", ""),
                        "versions": getattr(model, "versions", {}),
                        "precision": precision,
                    }
                ),
            )
        self.stats = {"image_hits": 0, "image_misses": 0, "text_hits": 0, "text_misses": 0}
        self._text_index: dict[int, tuple[Path, int]] | None = None
        self._run = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._written = 0

    # images ---------------------------------------------------------------------------------
    def _image_path(self, set_key: str) -> Path:
        return (
            self.root
            / "images"
            / (f"{hashlib.sha256(set_key.encode()).hexdigest()[:24]}.safetensors")
        )

    def load_images(self, set_key: str) -> tuple[torch.Tensor, list[str], list, dict] | None:
        """(emb [N, d], keys, labels, skipped) stored under ``set_key``, or None (a miss)."""
        path = self._image_path(set_key)
        if not path.exists():
            self.stats["image_misses"] += 1
            return None
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
            emb = f.get_tensor("emb")
        self.stats["image_hits"] += 1
        return (
            emb,
            json.loads(meta["keys"]),
            json.loads(meta["labels"]),
            json.loads(meta["skipped"]),
        )

    def save_images(
        self,
        set_key: str,
        emb: torch.Tensor,
        keys: list[str],
        labels: list,
        skipped: dict,
        description: str = "",
    ) -> None:
        """Store one image set's embeddings [N, d] with their keys, labels and skip counts."""
        meta = {
            "keys": json.dumps(keys),
            "labels": json.dumps(labels),
            "skipped": json.dumps(skipped),
            "description": description,
            "set_key": set_key,
        }
        _atomic_save(self._image_path(set_key), {"emb": emb.float().contiguous()}, meta)

    # texts ----------------------------------------------------------------------------------
    def _index(self) -> dict[int, tuple[Path, int]]:
        if self._text_index is None:
            self._text_index = {}
            for path in sorted((self.root / "texts").glob("*.safetensors")):
                with safe_open(str(path), framework="pt") as f:
                    for row, h in enumerate(f.get_tensor("hash").tolist()):
                        self._text_index[h] = (path, row)
        return self._text_index

    def lookup_texts(self, hashes: np.ndarray) -> tuple[dict[int, torch.Tensor], list[int]]:
        """({position: embedding [d]} for cached texts, positions not cached) of text hashes."""
        index, found, missing = self._index(), {}, []
        by_file: dict[Path, list[tuple[int, int]]] = {}
        for position, h in enumerate(hashes.tolist()):
            if h in index:
                path, row = index[h]
                by_file.setdefault(path, []).append((position, row))
            else:
                missing.append(position)
        for path, pairs in by_file.items():
            with safe_open(str(path), framework="pt") as f:
                emb = f.get_tensor("emb")
            for position, row in pairs:
                found[position] = emb[row]
        self.stats["text_hits"] += len(found)
        self.stats["text_misses"] += len(missing)
        return found, missing

    def save_texts(self, hashes: np.ndarray, emb: torch.Tensor) -> None:
        """Store new text embeddings [K, d] under their hashes [K]."""
        if not len(hashes):
            return
        path = self.root / "texts" / f"{self._run}-{self._written}.safetensors"
        self._written += 1
        _atomic_save(
            path,
            {
                "emb": emb.float().contiguous(),
                "hash": torch.from_numpy(np.ascontiguousarray(hashes)),
            },
            {},
        )
        index = self._index()
        for row, h in enumerate(hashes.tolist()):
            index[h] = (path, row)


def _atomic_save(path: Path, tensors: dict, metadata: dict) -> None:
    write_atomically(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
