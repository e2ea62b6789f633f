"""Teacher embeddings computed once, stored beside the shards, read by training (offline
distillation; the MobileCLIP "reinforced data" idea, Vasu et al. 2024, arXiv:2311.17049).

``mclip distill embed`` runs a teacher over every sample of a shard set and writes, per shard,

    OUT/parts/PART/images.npy           [n, d] image embeddings (the teacher's own preprocessing)
    OUT/parts/PART/images_flipped.npy   [n, d] the same images flipped (data.augment replays)
    OUT/parts/PART/texts.npy            [t, d] embeddings of every caption in every language
    OUT/parts/PART/index.json           {key: [image row, image content hash,
                                               {lang: {caption hash: text row}}]}
    OUT/parts/PART/part.json            the shard, its size and mtime, teacher digest, counts

and at the end ``OUT/teacher.json`` (teacher spec and fingerprint, embed_dim, logit scale /
bias, dtype, the run's totals). PART is a digest of the shard's resolved path. One shard's
embeddings are in memory at a time, a training rank loads the index of only the shards it
reads (a few at a time), and keys need to be unique within a shard only, so shard sets of any
size and several sources (whose keys repeat) can be embedded into one directory. A part whose
``part.json`` names the same shard (size and mtime), teacher (its
:func:`mclip.eval.cache.model_fingerprint`: class, spec, versions, every weight), dtype and
languages is reused, so an interrupted ``distill embed`` continues where it stopped; and since
the reader finds the shards from the parts, several ``distill embed`` processes (one per GPU,
each on a slice of the shards) can write into the same directory.

bf16 is stored as raw 16-bit words (numpy has no bf16), fp32 as float32; the arrays are
memory-mapped at training time, so only the rows of a batch are read.

A sample is found by its shard and key; its image bytes must hash to the stored content hash,
and each caption by (language, caption hash). Anything else — a shard or key that was not
embedded, an image that changed, a caption that was not embedded — is a
:class:`~mclip.data.shards.DataError` naming the sample: never a silent misalignment.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mclip.data.remote import redact, shard_identity, shard_stamp
from mclip.data.shards import DataError, SkipCounter, batched, content_hash, usable_samples
from mclip.fingerprint import model_fingerprint

META_FILE, PARTS_DIR, INDEX_FILE, PART_FILE = "teacher.json", "parts", "index.json", "part.json"
ARRAYS = {"image": "images.npy", "image_flipped": "images_flipped.npy", "text": "texts.npy"}
DTYPES = ("bf16", "fp32")
OPEN_PARTS = 32
"""Parts (shards) whose index a training process keeps loaded at once."""


def _to_storage(embeddings: torch.Tensor, dtype: str) -> np.ndarray:
    if dtype == "bf16":
        return embeddings.to(torch.bfloat16).view(torch.int16).numpy()
    return embeddings.float().numpy()


def _from_storage(rows: np.ndarray, dtype: str) -> torch.Tensor:
    tensor = torch.from_numpy(np.array(rows))  # a copy: memory-mapped rows are read-only
    return tensor.view(torch.bfloat16).float() if dtype == "bf16" else tensor.float()


def resolved(shard: str) -> str:
    """The name a shard is known by in ``teacher.json``: its real path, or its redacted URL
    (:func:`mclip.data.remote.shard_identity`)."""
    return shard_identity(shard)


def part_name(shard: str) -> str:
    """The directory name of a shard's embeddings: a digest of its resolved path."""
    return content_hash(resolved(shard))


def _shard_stamp(shard: str) -> dict:
    """The shard's name and version (size and mtime; a remote object's size and ETag); the size
    keeps the key ``size`` that parts written before remote shards use."""
    stamp = shard_stamp(shard)
    return {"shard": resolved(shard), "size": stamp.pop("bytes", None), **stamp}


def _embed_shard(
    teacher,
    shard: str,
    part: Path,
    stamp: dict,
    dtype: str,
    languages: set[str],
    batch_size: int,
    default_language: str,
    language_key: str,
    progress: Callable[[int], None] | None,
) -> dict:
    """Embed one shard's usable samples into ``part``; its ``part.json`` content."""
    counter, transform = SkipCounter(), teacher.image_transform(train=False)
    index: dict[str, list] = {}
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in ARRAYS}
    n_images = n_texts = 0

    usable = usable_samples(shard, counter, default_language, language_key, languages)
    with torch.no_grad():
        for batch in batched(usable, batch_size):
            pixels = torch.stack([transform(image) for _, _, image, _, _ in batch])
            parts["image"].append(teacher.encode_image(pixels).float().cpu())
            parts["image_flipped"].append(teacher.encode_image(pixels.flip(-1)).float().cpu())
            texts: list[str] = []
            for key, digest, _, captions, _ in batch:
                if key in index:
                    raise DataError(
                        f"sample key '{key}' occurs twice in shard '{redact(shard)}'; "
                        f"teacher "
                        f"embeddings are found by shard and key, so keys must be "
                        f"unique within a shard"
                    )
                rows: dict[str, dict[str, int]] = {}
                for lang, captions_of_lang in captions.items():
                    for caption in captions_of_lang:
                        digest_text = content_hash(caption)
                        if digest_text not in rows.setdefault(lang, {}):
                            rows[lang][digest_text] = n_texts + len(texts)
                            texts.append(caption)
                index[key] = [n_images, digest, rows]
                n_images += 1
            for start in range(0, len(texts), batch_size):
                parts["text"].append(
                    teacher.encode_text(texts[start : start + batch_size]).float().cpu()
                )
            n_texts += len(texts)
            if progress is not None:
                progress(len(batch))
    part.mkdir(parents=True, exist_ok=True)
    empty = torch.zeros(0, int(teacher.embed_dim))
    for name, file in ARRAYS.items():
        np.save(part / file, _to_storage(torch.cat(parts[name]) if parts[name] else empty, dtype))
    (part / INDEX_FILE).write_text(json.dumps(index, ensure_ascii=False), "utf-8")
    info = {
        **stamp,
        "images": n_images,
        "texts": n_texts,
        "skipped": dict(counter),
        "languages": sorted({lang for _, _, rows in index.values() for lang in rows}),
    }
    (part / PART_FILE).write_text(json.dumps(info, indent=1), "utf-8")  # last: the part is done
    return info


def write_teacher_embeddings(
    teacher,
    spec: str,
    shards: list[str],
    out_dir: str | Path,
    dtype: str = "bf16",
    languages: list[str] | None = None,
    batch_size: int = 256,
    default_language: str = "en",
    language_key: str = "",
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Embed every usable sample of ``shards`` with ``teacher`` (a
    :class:`~mclip.models.adapters.ModelAdapter`) into ``out_dir``, shard by shard (module
    docstring); parts already written for the same shard, teacher weights, dtype and languages
    are kept.

    ``languages``: captions of these languages only (None: all). ``progress(n)`` is called with
    the number of samples done since the last call (a reused shard's too). Bad samples are
    skipped and counted. Returns the metadata written to ``teacher.json`` (``reused_parts``:
    how many shards were already embedded).
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}; valid choices: {', '.join(DTYPES)}")
    out = Path(out_dir)
    (out / PARTS_DIR).mkdir(parents=True, exist_ok=True)
    wanted = sorted(set(languages or []))
    identity = {
        "teacher_digest": model_fingerprint(teacher),
        "dtype": dtype,
        "selected": wanted,
        "default_language": default_language,
        "language_key": language_key,
    }
    infos, reused = {}, 0
    for shard in shards:
        part = out / PARTS_DIR / part_name(shard)
        stamp = {**_shard_stamp(shard), **identity}
        done = part / PART_FILE
        info = json.loads(done.read_text("utf-8")) if done.is_file() else None
        if info is not None and all(info.get(k) == v for k, v in stamp.items()):
            reused += 1
            if progress is not None:
                progress(info["images"])
        else:
            info = _embed_shard(
                teacher,
                shard,
                part,
                stamp,
                dtype,
                set(wanted),
                batch_size,
                default_language,
                language_key,
                progress,
            )
        infos[resolved(shard)] = info
    images = sum(info["images"] for info in infos.values())
    skipped: SkipCounter = SkipCounter()
    for info in infos.values():
        skipped.update(info["skipped"])
    if not images:
        raise DataError(
            f"no usable sample in {len(shards)} shard(s) "
            f"({', '.join(map(redact, shards[:3]))}); "
            f"skipped: {dict(skipped)}"
        )
    bias = teacher.logit_bias
    meta = {
        "teacher": spec,
        "embed_dim": int(teacher.embed_dim),
        "dtype": dtype,
        "teacher_digest": identity["teacher_digest"],
        "logit_scale": math.exp(float(teacher.logit_scale.detach())),
        "logit_bias": float(bias.detach()) if bias is not None else None,
        "shards": len(infos),
        "images": images,
        "texts": sum(info["texts"] for info in infos.values()),
        "languages": sorted({lang for info in infos.values() for lang in info["languages"]}),
        "skipped": dict(skipped),
        "reused_parts": reused,
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=1), "utf-8")
    return meta


class _Part:
    """One shard's index and memory-mapped arrays."""

    def __init__(self, directory: Path):
        self.index = json.loads((directory / INDEX_FILE).read_text("utf-8"))
        self.arrays = {
            name: np.load(directory / file, mmap_mode="r") for name, file in ARRAYS.items()
        }


class TeacherEmbeddingStore:
    """Read-only access to the embeddings written by :func:`write_teacher_embeddings`: every
    part of the directory (one per shard, from any number of ``distill embed`` runs of the same
    teacher and dtype); a shard's index is loaded when a batch first needs it (at most
    :data:`OPEN_PARTS` kept)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        if not (self.directory / META_FILE).is_file():
            raise DataError(
                f"'{directory}' holds no teacher embeddings (missing {META_FILE}); "
                f"write them with: mclip distill embed --teacher SPEC --shards ... "
                f"--out {directory}"
            )
        self.meta = json.loads((self.directory / META_FILE).read_text("utf-8"))
        if "teacher_digest" not in self.meta:
            raise DataError(
                f"'{directory}' was written by an older mclip distill embed (one index "
                f"for all shards); run it again into a new directory"
            )
        self.shards: dict[str, str] = {}
        """Resolved shard path -> its part's directory name."""
        self.languages: set[str] = set()
        for done in sorted((self.directory / PARTS_DIR).glob(f"*/{PART_FILE}")):
            info = json.loads(done.read_text("utf-8"))
            if (info["teacher_digest"], info["dtype"]) != (
                self.meta["teacher_digest"],
                self.meta["dtype"],
            ):
                raise DataError(
                    f"'{done.parent}' (shard '{info['shard']}') holds embeddings of "
                    f"another teacher or dtype than '{self.directory / META_FILE}' "
                    f"names; embed every shard with one teacher: delete that part and "
                    f"run mclip distill embed again, or use another --out"
                )
            self.shards[info["shard"]] = done.parent.name
            self.languages.update(info["languages"])
        self._resolved: dict[str, str] = {}
        self._open: OrderedDict[str, _Part] = OrderedDict()

    @property
    def embed_dim(self) -> int:
        return int(self.meta["embed_dim"])

    @property
    def logit_scale(self) -> float:
        """The teacher's temperature inverse t (not its log)."""
        return float(self.meta["logit_scale"])

    @property
    def logit_bias(self) -> float | None:
        return self.meta["logit_bias"]

    def check_shards(self, shards: list[str]) -> None:
        """Every training shard must be one the embeddings were computed from."""
        foreign = [s for s in shards if resolved(s) not in self.shards]
        if foreign:
            raise DataError(
                f"the teacher embeddings in '{self.directory}' were computed from "
                f"other shards than {foreign[0]}"
                + (f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else "")
                + "; run mclip distill embed on the training shards (every source's)"
            )

    def part(self, shard: str) -> _Part:
        """The embeddings of one shard (as the training stream names it)."""
        path = self._resolved.get(shard)
        if path is None:
            path = self._resolved[shard] = resolved(shard)
        if path in self._open:
            self._open.move_to_end(path)
            return self._open[path]
        name = self.shards.get(path)
        if name is None:
            raise DataError(
                f"shard '{redact(shard)}' has no teacher embeddings in "
                f"'{self.directory}'; "
                f"run mclip distill embed on the training shards"
            )
        self._open[path] = _Part(self.directory / PARTS_DIR / name)
        if len(self._open) > OPEN_PARTS:
            self._open.popitem(last=False)
        return self._open[path]

    def lookup(
        self,
        shards: list[str],
        keys: list[str],
        image_hashes: list[str],
        flipped: list[bool],
        texts: list[str],
        languages: list[str],
        text_to_image: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(image [n, d], text [m, d]) float32 embeddings of a batch, as the training stream
        gives it: ``shards`` / ``keys`` / ``image_hashes`` / ``flipped`` per image, ``texts``
        / ``languages`` per caption and ``text_to_image`` [m] the image of each caption."""
        entries = []
        for shard, key, digest in zip(shards, keys, image_hashes):
            entry = self.part(shard).index.get(key)
            if entry is None:
                raise DataError(
                    f"sample '{key}' of shard '{redact(shard)}' has no teacher "
                    f"embedding in "
                    f"'{self.directory}'; the shards changed since mclip distill "
                    f"embed: run it again"
                )
            if entry[1] != digest:
                raise DataError(
                    f"the image of sample '{key}' (shard '{redact(shard)}') differs "
                    f"from the "
                    f"one its teacher embedding in '{self.directory}' was computed "
                    f"from; run mclip distill embed again on the current shards"
                )
            entries.append(entry)
        dtype = self.meta["dtype"]
        images = torch.empty(len(keys), self.embed_dim)
        for i, (shard, entry, is_flipped) in enumerate(zip(shards, entries, flipped)):
            array = self.part(shard).arrays["image_flipped" if is_flipped else "image"]
            images[i] = _from_storage(array[entry[0]], dtype)
        text_rows = []
        for text, lang, owner in zip(texts, languages, text_to_image.tolist()):
            row = entries[owner][2].get(lang, {}).get(content_hash(text))
            if row is None:
                raise DataError(
                    f"caption {text!r} ({lang}) of sample '{keys[owner]}' has no "
                    f"teacher embedding in '{self.directory}' (embedded languages: "
                    f"{', '.join(sorted(self.languages))}); run mclip distill embed "
                    f"with these captions"
                )
            text_rows.append(_from_storage(self.part(shards[owner]).arrays["text"][row], dtype))
        embedded = torch.stack(text_rows) if text_rows else torch.empty(0, self.embed_dim)
        return images, embedded
