"""Teacher embeddings computed once, stored beside the shards, read by training (offline
distillation; the MobileCLIP "reinforced data" idea, Vasu et al. 2024, arXiv:2311.17049).

``mclip distill embed`` runs a teacher over every sample of a shard set and writes

    OUT/teacher.json         teacher spec, embed_dim, logit scale / bias, dtype, shards, counts
    OUT/images.npy           [N, d] image embeddings (the teacher's own preprocessing)
    OUT/images_flipped.npy   [N, d] the same images flipped horizontally (data.augment replays)
    OUT/texts.npy            [T, d] embeddings of every caption in every language
    OUT/index.json           {key: [image row, image content hash, {lang: {caption hash: row}}]}

bf16 is stored as raw 16-bit words (numpy has no bf16), fp32 as float32; the arrays are
memory-mapped at training time, so only the rows of a batch are read.

A sample is found by its key; its image bytes must hash to the stored content hash, and each
caption by (language, caption hash). Anything else — a key that was not embedded, an image that
changed, a caption that was not embedded — is a :class:`~mclip.data.shards.DataError` naming
the key: never a silent misalignment. Keys must be unique over the embedded shards.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from mclip.data.shards import (DataError, SkipCounter, content_hash, decode_captions, decode_image,
                               image_bytes, iter_raw_samples)

META_FILE, INDEX_FILE = "teacher.json", "index.json"
ARRAYS = {"image": "images.npy", "image_flipped": "images_flipped.npy", "text": "texts.npy"}
DTYPES = ("bf16", "fp32")


def _to_storage(embeddings: torch.Tensor, dtype: str) -> np.ndarray:
    if dtype == "bf16":
        return embeddings.to(torch.bfloat16).view(torch.int16).numpy()
    return embeddings.float().numpy()


def _from_storage(rows: np.ndarray, dtype: str) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(rows))
    return tensor.view(torch.bfloat16).float() if dtype == "bf16" else tensor.float()


def _batches(items: Iterator, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def write_teacher_embeddings(teacher, spec: str, shards: list[str], out_dir: str | Path,
                             dtype: str = "bf16", languages: list[str] | None = None,
                             batch_size: int = 256, default_language: str = "en",
                             language_key: str = "", progress: Callable[[int], None] | None = None
                             ) -> dict:
    """Embed every usable sample of ``shards`` with ``teacher`` (a
    :class:`~mclip.models.adapters.ModelAdapter`) into ``out_dir`` (module docstring).

    ``languages``: captions of these languages only (None: all). ``progress(n)`` is called with
    the number of samples done since the last call. Bad samples are skipped and counted.
    Returns the metadata written to ``teacher.json``.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}; valid choices: {', '.join(DTYPES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counter, allowed = SkipCounter(), set(languages or [])
    transform = teacher.image_transform(train=False)
    index: dict[str, list] = {}
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in ARRAYS}
    n_images = n_texts = 0

    def usable() -> Iterator[tuple]:
        for sample in iter_raw_samples(shards, counter):
            captions = decode_captions(sample, counter, default_language, language_key)
            captions = {lang: texts for lang, texts in captions.items()
                        if not allowed or lang in allowed}
            if not captions:
                counter["no_caption_in_selected_languages"] += 1
                continue
            image = decode_image(sample, counter)
            if image is not None:
                yield sample["__key__"], content_hash(image_bytes(sample)), image, captions

    with torch.no_grad():
        for batch in _batches(usable(), batch_size):
            pixels = torch.stack([transform(image) for _, _, image, _ in batch])
            parts["image"].append(teacher.encode_image(pixels).float().cpu())
            parts["image_flipped"].append(teacher.encode_image(pixels.flip(-1)).float().cpu())
            texts = []
            for key, digest, _, captions in batch:
                if key in index:
                    raise DataError(f"sample key '{key}' occurs twice in the shards; teacher "
                                    f"embeddings are found by key, so keys must be unique")
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
                parts["text"].append(teacher.encode_text(texts[start:start + batch_size]).float().cpu())
            n_texts += len(texts)
            if progress is not None:
                progress(len(batch))
    if not index:
        raise DataError(f"no usable sample in {len(shards)} shard(s) ({', '.join(shards[:3])}); "
                        f"skipped: {dict(counter)}")
    for name, file in ARRAYS.items():
        np.save(out / file, _to_storage(torch.cat(parts[name]), dtype))
    (out / INDEX_FILE).write_text(json.dumps(index, ensure_ascii=False), "utf-8")
    bias = teacher.logit_bias
    meta = {"teacher": spec, "embed_dim": int(parts["image"][0].shape[1]), "dtype": dtype,
            "logit_scale": math.exp(float(teacher.logit_scale.detach())),
            "logit_bias": float(bias.detach()) if bias is not None else None,
            "shards": [str(Path(s).resolve()) for s in shards], "images": n_images,
            "texts": n_texts, "languages": sorted({lang for _, _, rows in index.values()
                                                   for lang in rows}),
            "skipped": dict(counter)}
    (out / META_FILE).write_text(json.dumps(meta, indent=1), "utf-8")
    return meta


class TeacherEmbeddingStore:
    """Read-only access to the embeddings written by :func:`write_teacher_embeddings`."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        missing = [f for f in (META_FILE, INDEX_FILE, *ARRAYS.values())
                   if not (self.directory / f).is_file()]
        if missing:
            raise DataError(f"'{directory}' holds no teacher embeddings (missing {', '.join(missing)});"
                            f" write them with: mclip distill embed --teacher SPEC --shards ... "
                            f"--out {directory}")
        self.meta = json.loads((self.directory / META_FILE).read_text("utf-8"))
        self.index = json.loads((self.directory / INDEX_FILE).read_text("utf-8"))
        self.arrays = {name: np.load(self.directory / file, mmap_mode="r")
                       for name, file in ARRAYS.items()}

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
        embedded = set(self.meta["shards"])
        foreign = [s for s in shards if str(Path(s).resolve()) not in embedded]
        if foreign:
            raise DataError(f"the teacher embeddings in '{self.directory}' were computed from "
                            f"other shards than {foreign[0]}" + (f" (and {len(foreign) - 1} more)"
                                                                  if len(foreign) > 1 else "")
                            + "; run mclip distill embed on the training shards")

    def lookup(self, keys: list[str], image_hashes: list[str], flipped: list[bool],
               texts: list[str], languages: list[str], text_to_image: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(image [n, d], text [m, d]) float32 embeddings of a batch, as the training stream
        gives it: ``keys`` / ``image_hashes`` / ``flipped`` per image, ``texts`` /
        ``languages`` per caption and ``text_to_image`` [m] the image of each caption."""
        image_rows, flipped_rows, text_rows = [], [], []
        for key, digest in zip(keys, image_hashes):
            entry = self.index.get(key)
            if entry is None:
                raise DataError(f"sample '{key}' has no teacher embedding in '{self.directory}'; "
                                f"the shards changed since mclip distill embed: run it again")
            if entry[1] != digest:
                raise DataError(f"the image of sample '{key}' differs from the one its teacher "
                                f"embedding in '{self.directory}' was computed from; run mclip "
                                f"distill embed again on the current shards")
        for key, is_flipped in zip(keys, flipped):
            (flipped_rows if is_flipped else image_rows).append(self.index[key][0])
        for text, lang, owner in zip(texts, languages, text_to_image.tolist()):
            row = self.index[keys[owner]][2].get(lang, {}).get(content_hash(text))
            if row is None:
                raise DataError(f"caption {text!r} ({lang}) of sample '{keys[owner]}' has no "
                                f"teacher embedding in '{self.directory}' (embedded languages: "
                                f"{', '.join(self.meta['languages'])}); run mclip distill embed "
                                f"with these captions")
            text_rows.append(row)
        images = torch.empty(len(keys), self.embed_dim)
        plain = [i for i, f in enumerate(flipped) if not f]
        mirrored = [i for i, f in enumerate(flipped) if f]
        dtype = self.meta["dtype"]
        if plain:
            images[plain] = _from_storage(self.arrays["image"][image_rows], dtype)
        if mirrored:
            images[mirrored] = _from_storage(self.arrays["image_flipped"][flipped_rows], dtype)
        return images, _from_storage(self.arrays["text"][text_rows], dtype)
