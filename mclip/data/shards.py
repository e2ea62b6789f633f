"""Finding shards and reading samples from them, with bad data skipped and counted.

Shards follow the img2dataset WebDataset layout: ``KEY.jpg`` (or jpeg/png/webp), ``KEY.txt``
and optionally ``KEY.json`` (which may hold ``{"captions": {lang: [caption, ...]}}``).
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator

from braceexpand import braceexpand
from PIL import Image
from webdataset import tariterators

from mclip.config import ConfigError
from mclip.data.language_codes import UNKNOWN_LANGUAGE, normalise_language
from mclip.data.read_ahead import open_shards_ahead
from mclip.data.remote import HTTP_SCHEMES, PIPE_PREFIX, RetryPolicy, is_remote, list_remote

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")


class DataError(RuntimeError):
    """The data cannot be used at all (for example every sample of every shard is bad)."""


def expand_shards(spec: str, key: str = "data.train_shards") -> list[str]:
    """Shard paths and URLs from a spec: a comma-separated list of brace patterns, globs or
    directories of .tar files; a part may be a URL (``https://host/shard-{000..099}.tar``,
    ``pipe:COMMAND``, or an fsspec URL such as ``s3://bucket/prefix/`` or
    ``s3://bucket/*.tar``, whose listing replaces the glob; :mod:`mclip.data.remote`).

    Every local path must exist; the error names the missing ones and the key to fix. Remote
    shards are not checked here: one that cannot be read is counted when it is read.
    """
    paths: list[str] = []
    for part in _split_spec(spec, key):
        if part.startswith(PIPE_PREFIX):
            paths.append(part)  # a command is not brace-expanded: its own shell may want braces
            continue
        for item in braceexpand(part):
            if is_remote(item):
                paths.extend(list_remote(item, key) if _lists(item) else [item])
            elif os.path.isdir(item):
                paths.extend(sorted(str(p) for p in Path(item).glob("*.tar")))
            elif any(ch in item for ch in "*?["):
                paths.extend(sorted(glob.glob(item)))
            else:
                paths.append(item)
    missing = [p for p in paths if not is_remote(p) and not os.path.isfile(p)]
    if missing:
        shown = ", ".join(missing[:3]) + (
            f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        )
        raise ConfigError(
            f"config key '{key}': {len(missing)} of {len(paths)} shards do not exist "
            f"({shown}). Check the path, or generate the demo data with "
            f"'mclip data demo --out demo_data'."
        )
    if not paths:
        raise ConfigError(f"config key '{key}': '{spec}' matches no shard (.tar) file")
    return paths


def _split_spec(spec: str, key: str) -> list[str]:
    """The comma-separated parts of a shard spec; a comma inside braces (``{a,b}``) belongs to
    its brace pattern. Unbalanced braces are a ConfigError naming ``key``."""
    parts, depth, current = [], 0, list[str]()
    for ch in spec:
        depth += (ch == "{") - (ch == "}")
        if depth < 0:
            break
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if depth != 0:
        raise ConfigError(f"config key '{key}': '{spec}' has unbalanced braces")
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


def _lists(url: str) -> bool:
    """Whether an fsspec URL names several shards (a prefix ending in '/', or a glob)."""
    return not url.startswith(HTTP_SCHEMES) and (
        url.endswith("/") or any(ch in url for ch in "*?[")
    )


def check_shard_count(
    n_shards: int, world_size: int, num_workers: int, key: str = "data.train_shards"
) -> None:
    """Every (rank, worker) reader needs at least one shard of ``key``'s shard set, or its
    readers all fall back to the whole list (every rank reading the same samples)."""
    readers = world_size * max(num_workers, 1)
    if n_shards >= readers:
        return
    if n_shards < world_size:
        fix = f"write the data as at least {readers} shards (each rank needs its own)"
    else:
        fix = (
            f"lower 'data.num_workers' to {n_shards // world_size} or write the data as at "
            f"least {readers} shards"
        )
    raise ConfigError(
        f"config key '{key}': {n_shards} shards for {world_size} rank(s) x "
        f"{max(num_workers, 1)} worker(s) = {readers} readers: every reader needs "
        f"at least one shard of its own. Fix: {fix}."
    )


class SkipCounter(Counter):
    """Counts skipped samples by reason; doubles as a webdataset error handler."""

    def __call__(self, error: Exception) -> bool:
        self["unreadable_shard_or_member"] += 1
        return True  # keep going with the next member / shard


def iter_raw_samples(
    urls: Iterable[str], counter: SkipCounter, policy: RetryPolicy | None = None
) -> Iterator[dict]:
    """Raw samples {'__key__', 'jpg': bytes, 'txt': bytes, ...} from tar shards (local paths or
    URLs, :func:`mclip.data.remote.open_shard`), in order. A shard or member that cannot be read
    is counted in ``counter`` (``unreadable_shard_or_member``; retries as ``retried_reads``)."""

    def opened() -> Iterator[dict]:  # the next remote shard downloads while this one decodes
        for url, stream in open_shards_ahead(
            urls, policy, counter, on_error=lambda error, url: counter(error)
        ):
            yield {"url": url, "stream": stream}

    files = tariterators.tar_file_expander(opened(), handler=counter)
    return tariterators.group_by_keys(files, handler=counter)


def content_hash(data: bytes | str) -> str:
    """A short hex digest (BLAKE2b, 8 bytes) of an image's bytes or a caption's UTF-8 text."""
    return hashlib.blake2b(
        data.encode("utf-8") if isinstance(data, str) else data, digest_size=8
    ).hexdigest()


def image_bytes(sample: dict) -> bytes | None:
    """The raw bytes of a sample's image (the first of ``IMAGE_KEYS`` present), or None."""
    return next((sample[k] for k in IMAGE_KEYS if k in sample), None)


def decode_image(sample: dict, counter: SkipCounter) -> Image.Image | None:
    """The sample's image as an RGB PIL image, or None (counted) if missing or corrupt."""
    data = image_bytes(sample)
    if data is None:
        counter["missing_image"] += 1
        return None
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        return image.convert("RGB")
    except Exception:  # PIL raises many types for bad bytes; any of them means "corrupt"
        counter["corrupt_image"] += 1
        return None


LANGUAGE_KEYS = ("LANGUAGE", "language")
"""``KEY.json`` fields that name the language of ``KEY.txt`` (img2dataset / LAION-2B-multi)."""


def decode_captions(
    sample: dict, counter: SkipCounter, default_language: str = "en", language_key: str = ""
) -> dict[str, list[str]]:
    """Captions by language from one raw sample.

    ``json["captions"]`` (a mapping {lang: [caption, ...]} or {lang: caption}) wins when present.
    Otherwise ``KEY.txt`` is the caption, in the language named by ``json[language_key]`` (or,
    with no key given, ``json["LANGUAGE"]`` / ``json["language"]``), else ``default_language``.
    A ``captions`` field that is not a mapping is counted as ``bad_metadata`` and ``KEY.txt``
    is used instead. Empty captions are dropped; a sample left with none is counted as
    ``empty_caption`` (or ``missing_caption`` when it has no caption at all) and returns {}.

    Every language the metadata names is normalised by
    :func:`~mclip.data.language_codes.normalise_language` (``deu``, ``de-DE`` -> ``de``); keys
    that normalise to one code have their captions merged, in order. A named language that is
    unknown or not a language (``und``, ``xx``, ``englsh``) keeps its captions under
    ``"und"`` (:data:`~mclip.data.language_codes.UNKNOWN_LANGUAGE`), and the sample is counted
    once as ``unknown_language``. ``default_language`` is used as given.
    """
    meta: dict = {}
    if "json" in sample:
        try:
            loaded = json.loads(sample["json"])
            meta = loaded if isinstance(loaded, dict) else {}
            if not isinstance(loaded, dict):
                counter["bad_metadata"] += 1
        except (ValueError, UnicodeDecodeError):
            counter["bad_json"] += 1
    captions: dict[str, list[str]] = {}
    unknown = False
    raw = meta.get("captions")
    if isinstance(raw, dict):
        for lang, texts in raw.items():
            code = normalise_language(str(lang))
            unknown = unknown or code is None
            captions.setdefault(code or UNKNOWN_LANGUAGE, []).extend(
                c for c in (texts if isinstance(texts, list) else [texts]) if isinstance(c, str)
            )
    elif raw is not None:
        counter["bad_metadata"] += 1
    if not captions and "txt" in sample:
        named = named_language(meta, language_key)
        code = default_language if named is None else normalise_language(named)
        unknown = code is None
        captions = {code or UNKNOWN_LANGUAGE: [sample["txt"].decode("utf-8", errors="replace")]}
    if not captions:
        counter["missing_caption"] += 1
        return {}
    kept = {lang: [c.strip() for c in texts if c.strip()] for lang, texts in captions.items()}
    kept = {lang: texts for lang, texts in kept.items() if texts}
    if not kept:
        counter["empty_caption"] += 1
    elif unknown and UNKNOWN_LANGUAGE in kept:
        counter["unknown_language"] += 1
    return kept


def named_language(meta: dict, language_key: str = "") -> str | None:
    """The language a sample's metadata names for ``KEY.txt``, as written, or None when it names
    none: ``meta[language_key]``, or with no key given ``meta["LANGUAGE"]`` / ``meta["language"]``;
    a missing, empty or non-string value names none."""
    for key in (language_key,) if language_key else LANGUAGE_KEYS:
        value = meta.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def caption_language(meta: dict, default_language: str = "en", language_key: str = "") -> str:
    """The language of a sample's ``KEY.txt`` caption: the normalised language its metadata names
    (``"und"`` when that is unknown or not a language), else ``default_language``."""
    named = named_language(meta, language_key)
    if named is None:
        return default_language
    return normalise_language(named) or UNKNOWN_LANGUAGE


def read_metadata(sample: dict) -> dict:
    """The sample's ``json`` member as a dict ({} when absent or unreadable)."""
    try:
        meta = json.loads(sample.get("json", b"{}"))
    except (ValueError, UnicodeDecodeError):
        return {}
    return meta if isinstance(meta, dict) else {}


def usable_samples(
    shard: str,
    counter: SkipCounter,
    default_language: str = "en",
    language_key: str = "",
    languages: set[str] | None = None,
    policy: RetryPolicy | None = None,
) -> Iterator[tuple]:
    """(key, image content hash, RGB image, {language: [captions]}, raw sample) of every sample of
    ``shard`` with a decodable image and a caption (in ``languages``, when given); the others are
    counted in ``counter`` (``no_caption_in_selected_languages``, the caption and image skips)."""
    for sample in iter_raw_samples([shard], counter, policy):
        captions = decode_captions(sample, counter, default_language, language_key)
        captions = {
            lang: texts for lang, texts in captions.items() if not languages or lang in languages
        }
        if not captions:
            counter["no_caption_in_selected_languages"] += 1
            continue
        image, data = decode_image(sample, counter), image_bytes(sample)
        if image is not None and data is not None:  # data is there when the image decoded
            yield sample["__key__"], content_hash(data), image, captions, sample


def batched(items: Iterable, size: int) -> Iterator[list]:
    """Lists of ``size`` consecutive items (the last one shorter)."""
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
