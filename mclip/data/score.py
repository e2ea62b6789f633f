"""Image-text scores of training shards, and shards filtered by them (LAION-5B's CLIP filter: keep
the pairs whose cosine clears a threshold, 0.28 English and 0.26 multilingual there; here in any
language, with any model ``mclip eval`` takes).

``mclip data score SHARDS --model SPEC --out DIR`` writes, per shard, one Parquet row per caption of
every usable sample (every caption in every language it has):

    DIR/parts/PART.parquet   key (str), language (str), caption_hash (str), score (float32: the
                             cosine of the image and caption embeddings), image_hash (str),
                             width, height (int32: the image's size in pixels)
    DIR/parts/PART.json      the shard (redacted URL or real path), its size and version or mtime,
                             the model's fingerprint, the languages asked for, counts; written
                             last: a part whose JSON matches is kept by a second run (resume)
    DIR/scores.json          the model, the shards, captions scored per language, skip counts
    DIR/histograms.csv/.png  per language: the score histogram and its quantiles

PART is a digest of the shard's name (:func:`mclip.data.teacher_cache.part_name`). Under
``torchrun`` each rank scores every world-size-th shard. ``mclip data filter`` then writes new
shards with the captions below a threshold dropped (:func:`filter_shards`).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Callable

import torch

from mclip.data.remote import shard_stamp
from mclip.data.shards import SkipCounter, batched, content_hash, usable_samples
from mclip.data.teacher_cache import part_name, resolved
from mclip.errors import ConfigError
from mclip.outputs import write_atomically, write_text_atomically

PARTS_DIR = "parts"
COLUMNS = ("key", "language", "caption_hash", "score", "image_hash", "width", "height")


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise ConfigError(
            "scores are Parquet files: pip install 'mclip[curate]' (pyarrow)"
        ) from None
    return pyarrow


@torch.no_grad()
def score_shard(
    model,
    shard: str,
    batch_size: int = 256,
    default_language: str = "en",
    language_key: str = "",
    languages: set[str] | None = None,
) -> tuple[dict[str, list], SkipCounter]:
    """({column: values} with a row per caption of every usable sample of ``shard``, skip
    counts). ``model``: any adapter (:func:`mclip.models.adapters.load_model`); a language with a
    LoRA adapter is encoded with it."""
    counter, transform = SkipCounter(), model.image_transform(train=False)
    columns: dict[str, list] = {name: [] for name in COLUMNS}
    usable = usable_samples(shard, counter, default_language, language_key, languages)
    for batch in batched(usable, batch_size):
        images = _unit(
            model.encode_image(torch.stack([transform(im) for _, _, im, _, _ in batch]))
            .float()
            .cpu()
        )
        by_language: dict[str, list[tuple[int, str]]] = {}
        for row, (_, _, _, captions, _) in enumerate(batch):
            for language, texts in captions.items():
                by_language.setdefault(language, []).extend((row, text) for text in texts)
        for language, pairs in by_language.items():
            with _in_language(model, language):
                texts = _unit(
                    torch.cat(
                        [
                            model.encode_text([t for _, t in pairs[i : i + batch_size]])
                            .float()
                            .cpu()
                            for i in range(0, len(pairs), batch_size)
                        ]
                    )
                )
            rows = torch.tensor([row for row, _ in pairs])
            scores = (images[rows] * texts).sum(-1)
            for (row, text), score in zip(pairs, scores.tolist()):
                key, digest, image, _, _ = batch[row]
                columns["key"].append(key)
                columns["language"].append(language)
                columns["caption_hash"].append(content_hash(text))
                columns["score"].append(score)
                columns["image_hash"].append(digest)
                columns["width"].append(image.width)
                columns["height"].append(image.height)
    return columns, counter


def _unit(embeddings: torch.Tensor) -> torch.Tensor:
    """Rows of [N, d] scaled to unit length (the adapters return them so already; a model that
    does not still scores cosines)."""
    return torch.nn.functional.normalize(embeddings, dim=-1)


def _in_language(model, language: str):
    import contextlib

    switch = getattr(model, "text_language", None)
    return switch(language) if switch is not None else contextlib.nullcontext()


def write_scores(
    model,
    spec: str,
    shards: list[str],
    out_dir: str | Path,
    batch_size: int = 256,
    default_language: str = "en",
    language_key: str = "",
    languages: list[str] | None = None,
    rank: int = 0,
    world_size: int = 1,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Score this rank's shards (every ``world_size``-th from ``rank``) into ``out_dir`` (module
    docstring); parts already written for the same shard version, model and languages are kept.
    Returns this rank's summary {"shards", "reused", "captions": {language: n}, "skipped"}."""
    from mclip.fingerprint import model_fingerprint

    pa = _pyarrow()
    out = Path(out_dir)
    (out / PARTS_DIR).mkdir(parents=True, exist_ok=True)
    wanted = sorted(set(languages or []))
    identity = {
        "model": spec,
        "model_fingerprint": model_fingerprint(model),
        "languages": wanted,
        "default_language": default_language,
        "language_key": language_key,
    }
    captions, skipped, reused = Counter[str](), Counter[str](), 0
    mine = shards[rank::world_size]
    for done, shard in enumerate(mine, 1):
        part = out / PARTS_DIR / part_name(shard)
        stamp = {"shard": resolved(shard), **_stamp(shard), **identity}
        info_path = part.with_suffix(".json")
        info = json.loads(info_path.read_text("utf-8")) if info_path.is_file() else None
        if info is not None and all(info.get(k) == v for k, v in stamp.items()):
            reused += 1
        else:
            columns, counter = score_shard(
                model, shard, batch_size, default_language, language_key, set(wanted)
            )
            table = pa.table(
                {
                    **columns,
                    "score": pa.array(columns["score"], pa.float32()),
                    "width": pa.array(columns["width"], pa.int32()),
                    "height": pa.array(columns["height"], pa.int32()),
                }
            )

            def write_table(tmp: Path, table=table) -> None:
                pa.parquet.write_table(table, str(tmp))

            write_atomically(part.with_suffix(".parquet"), write_table)
            info = {
                **stamp,
                "captions": dict(Counter(columns["language"])),
                "samples": len(set(columns["key"])),
                "skipped": dict(counter),
            }
            write_text_atomically(info_path, json.dumps(info, indent=1))
        captions.update(info["captions"])
        skipped.update(info["skipped"])
        if progress is not None:
            progress(f"{done}/{len(mine)} shards ({reused} kept from an earlier run)")
    return {
        "shards": len(mine),
        "reused": reused,
        "captions": dict(captions),
        "skipped": dict(skipped),
    }


def _stamp(shard: str) -> dict:
    try:
        return shard_stamp(shard)
    except OSError:  # unreadable: scored as empty (counted), nothing to compare later
        return {}


def read_scores(out_dir: str | Path, shard: str) -> dict[tuple[str, str, str], float]:
    """{(key, language, caption hash): score} of one shard's part ({} when it was not scored)."""
    pa = _pyarrow()
    path = Path(out_dir) / PARTS_DIR / f"{part_name(shard)}.parquet"
    if not path.is_file():
        return {}
    table = pa.parquet.read_table(str(path), columns=["key", "language", "caption_hash", "score"])
    data = table.to_pydict()
    return {
        (k, lang, h): s
        for k, lang, h, s in zip(data["key"], data["language"], data["caption_hash"], data["score"])
    }


def all_scores(out_dir: str | Path) -> dict[str, list[float]]:
    """{language: every score} over every part in ``out_dir``."""
    pa = _pyarrow()
    out: dict[str, list[float]] = {}
    for path in sorted((Path(out_dir) / PARTS_DIR).glob("*.parquet")):
        data = pa.parquet.read_table(str(path), columns=["language", "score"]).to_pydict()
        for language, score in zip(data["language"], data["score"]):
            out.setdefault(language, []).append(score)
    return out
