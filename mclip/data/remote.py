"""Where shard bytes come from, and what happens when a read breaks.

A shard is named by a local path, an ``http://`` / ``https://`` URL, a ``pipe:COMMAND`` whose
standard output is the shard (open_clip's convention, e.g. ``pipe:aws s3 cp s3://b/x.tar -``), or
any fsspec URL (``s3://``, ``gs://``, ... when its package, s3fs or gcsfs, is installed). Every
shard reader of mclip (training, ``mclip data index``, ``mclip distill embed``, ``mclip data
parallel``, evaluation shards) opens shards through :func:`open_shard`.

A remote shard is read through :class:`ShardStream`: one pass front to back, counting the bytes
handed out. A transient fault (a connection reset, a timeout, a read that ends before the size
the server announced, an HTTP 429 or 5xx, a ``pipe:`` command that exits with an error) is
retried after an exponential backoff with full jitter (``base * 2^attempt`` seconds at most,
capped; ``data.retries`` attempts in a row, default 5), reopening the shard at the byte where the
read broke: with an HTTP Range request where the server honours one, by seeking for fsspec files,
and otherwise by reading from the start and dropping the bytes already handed out. The tar reader
above never sees the fault, so the members, the samples and the order are those of an unbroken
read: a retry changes no training step. Each retry is counted as ``retried_reads``. A permanent
fault (404, 403, 401, 410, a missing object) or a fault still there after the last retry raises
:class:`ShardUnavailable`, which the shard readers count as ``unreadable_shard_or_member`` before
going on with the next shard, as for a deleted local shard.

Credentials come from the environment of the library doing the reading (AWS profiles and
variables for s3fs, ``GOOGLE_APPLICATION_CREDENTIALS`` for gcsfs, the command's own for
``pipe:``); messages and logs name shards through :func:`redact`, which drops user names,
passwords and signed-URL query strings.
"""

from __future__ import annotations

import http.client
import io
import os
import random
import re
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, BinaryIO, Callable, cast

HTTP_SCHEMES = ("http://", "https://")
PIPE_PREFIX = "pipe:"
PERMANENT_HTTP = {401, 403, 404, 410}
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_CHUNK = 1 << 20


class ShardUnavailable(OSError):
    """A shard that cannot be read: a permanent fault, or a transient one still there after the
    last retry. The message names the shard (redacted) and the cause."""


class _Transient(OSError):
    """A fault worth retrying (raised inside this module only)."""


def is_remote(url: str) -> bool:
    """Whether ``url`` names a shard that is not a local path (URL with a scheme, or pipe:)."""
    return url.startswith(PIPE_PREFIX) or bool(_URL.match(url))


def redact(url: str) -> str:
    """``url`` as it may appear in messages and logs: without user name and password, without
    the query string of a URL (signed URLs carry their signature there), and only the first word
    of a ``pipe:`` command."""
    if url.startswith(PIPE_PREFIX):
        words = url[len(PIPE_PREFIX) :].split()
        return f"{PIPE_PREFIX}{words[0] if words else ''} ..." if len(words) > 1 else url
    if not _URL.match(url):
        return url
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


@dataclass
class RetryPolicy:
    """How transient faults are retried: up to ``retries`` attempts in a row, the k-th after a
    random wait in [0, min(``max_delay``, ``base_delay`` * 2^k)] seconds (full jitter), and a
    ``timeout`` in seconds for each network operation."""

    retries: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    timeout: float = 60.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def wait(self, attempt: int) -> None:
        """Sleep before retry number ``attempt`` (0-based)."""
        self.sleep(self.rng.uniform(0.0, min(self.max_delay, self.base_delay * 2**attempt)))


class _Opened:
    """An opened source of a shard's bytes: ``stream`` positioned at ``offset + skip`` bytes
    before the wanted offset (``skip`` bytes still to drop), ``size`` the shard's size if known,
    ``finish()`` raising a transient fault when the source ended in error."""

    def __init__(
        self,
        stream: io.BufferedIOBase,
        size: int | None = None,
        skip: int = 0,
        finish: Callable[[], None] = lambda: None,
    ):
        self.stream, self.size, self.skip, self.finish = stream, size, skip, finish


def _open_http(url: str, offset: int, timeout: float) -> _Opened:
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        response = urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=timeout
        )
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # nothing after the offset: the shard was complete
            return _Opened(io.BytesIO(b""), size=offset)
        if error.code in PERMANENT_HTTP:
            raise ShardUnavailable(f"HTTP {error.code} for {redact(url)}") from None
        raise _Transient(f"HTTP {error.code} for {redact(url)}") from None
    length = response.headers.get("Content-Length")
    if response.status == 206:
        total = response.headers.get("Content-Range", "").rpartition("/")[2]
        size = int(total) if total.isdigit() else (offset + int(length) if length else None)
        return _Opened(response, size=size)
    return _Opened(response, size=int(length) if length else None, skip=offset)


def _open_pipe(url: str, offset: int, timeout: float) -> _Opened:
    command = url[len(PIPE_PREFIX) :]
    process = subprocess.Popen(command, shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stderr = cast(IO[bytes], process.stderr)  # PIPE: never None; stdout a BufferedReader

    def finish() -> None:
        status = process.wait()
        error = stderr.read().decode("utf-8", "replace").strip().splitlines()
        stderr.close()
        if status != 0:
            raise _Transient(
                f"{redact(url)} exited with status {status}"
                + (f": {error[-1][:200]}" if error else "")
            )

    return _Opened(cast(io.BufferedReader, process.stdout), skip=offset, finish=finish)


def _open_fsspec(url: str, offset: int, timeout: float) -> _Opened:
    try:
        import fsspec
    except ImportError:
        raise ShardUnavailable(
            f"{redact(url)} needs fsspec and the package of its protocol "
            f"(s3fs for s3://, gcsfs for gs://): pip install 'mclip[remote]'"
        ) from None
    try:
        handle = fsspec.open(url, "rb").open()
    except (FileNotFoundError, PermissionError) as error:
        raise ShardUnavailable(f"{redact(url)}: {type(error).__name__}") from None
    except ImportError as error:
        raise ShardUnavailable(
            f"{redact(url)}: {error}; install the package of its protocol "
            f"(pip install 'mclip[remote]')"
        ) from None
    handle.seek(offset)
    return _Opened(handle, size=getattr(handle, "size", None))


def _open_local(path: str, offset: int, timeout: float) -> _Opened:
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by the ShardStream
    except FileNotFoundError:
        raise ShardUnavailable(f"{path} does not exist") from None
    handle.seek(offset)
    return _Opened(handle, size=os.fstat(handle.fileno()).st_size)


def opener_of(url: str) -> Callable[[str, int, float], _Opened]:
    """The function that opens ``url`` at a byte offset."""
    if url.startswith(HTTP_SCHEMES):
        return _open_http
    if url.startswith(PIPE_PREFIX):
        return _open_pipe
    if _URL.match(url) and not url.startswith("file://"):
        return _open_fsspec
    return _open_local


RETRYABLE = (
    _Transient,
    ConnectionError,
    TimeoutError,
    socket.timeout,
    http.client.HTTPException,
    urllib.error.URLError,
)


class ShardStream(io.RawIOBase):
    """The bytes of one shard, read once front to back; a transient fault reopens the shard at
    the byte where the read broke (module docstring). ``counter["retried_reads"]`` counts the
    retries."""

    def __init__(self, url: str, policy: RetryPolicy | None = None, counter: Counter | None = None):
        super().__init__()
        self.url, self.policy = url, policy or RetryPolicy()
        self.counter = counter if counter is not None else Counter()
        self.offset, self._open = 0, opener_of(url)
        self._opened: _Opened | None = None
        self._reopen()

    def readable(self) -> bool:
        return True

    def _reopen(self) -> None:
        attempt = 0
        while True:
            try:
                self._close_source()
                self._opened = self._open(self.url, self.offset, self.policy.timeout)
                self._drop(self._opened.skip)
                return
            except RETRYABLE as error:
                attempt = self._retry(attempt, error)

    def _drop(self, n: int) -> None:
        """Read and discard ``n`` bytes (a source that cannot start at the offset)."""
        assert self._opened is not None  # only called by _reopen, right after opening
        while n > 0:
            data = self._opened.stream.read(min(n, _CHUNK))
            if not data:
                raise _Transient(
                    f"{redact(self.url)} ended after {self.offset - n} bytes, "
                    f"before the {self.offset} already read"
                )
            n -= len(data)

    def _retry(self, attempt: int, error: Exception) -> int:
        if isinstance(error, ShardUnavailable):
            raise error
        if attempt >= self.policy.retries:
            raise ShardUnavailable(
                f"{redact(self.url)}: gave up after {attempt} retries at "
                f"byte {self.offset} ({type(error).__name__}: "
                f"{str(error)[:200]})"
            ) from None
        self.counter["retried_reads"] += 1
        self.policy.wait(attempt)
        return attempt + 1

    def readinto(self, buffer) -> int:
        attempt = 0
        while True:
            try:
                assert self._opened is not None  # open since __init__; reopened after a fault
                n = self._opened.stream.readinto(buffer)
                if n:
                    self.offset += n
                    return n
                self._opened.finish()
                size = self._opened.size
                if size is not None and self.offset < size:
                    raise _Transient(f"{redact(self.url)} ended at byte {self.offset} of {size}")
                return 0
            except RETRYABLE as error:
                attempt = self._retry(attempt, error)
                self._reopen()

    def _close_source(self) -> None:
        if self._opened is not None:
            try:
                self._opened.stream.close()
            except Exception:  # a broken connection may fail to close; it is discarded anyway
                pass
            self._opened = None

    def close(self) -> None:
        self._close_source()
        super().close()


def open_shard(
    url: str, policy: RetryPolicy | None = None, counter: Counter | None = None
) -> BinaryIO:
    """A readable binary stream of the shard ``url`` (any form of the module docstring); local
    paths are plain files, every other form a :class:`ShardStream` with retries."""
    if not is_remote(url) or url.startswith("file://"):
        path = url[len("file://") :] if url.startswith("file://") else url
        try:
            return open(path, "rb")  # noqa: SIM115 - the tar reader closes it
        except FileNotFoundError:
            raise ShardUnavailable(f"{path} does not exist") from None
    return io.BufferedReader(ShardStream(url, policy, counter), buffer_size=_CHUNK)


def list_remote(url: str, key: str = "data.train_shards") -> list[str]:
    """The ``.tar`` objects under an fsspec prefix (``s3://bucket/prefix/``) or matching an
    fsspec glob (``s3://bucket/*.tar``), sorted, as full URLs. A ConfigError naming ``key``
    when the protocol's package is missing or nothing matches."""
    from mclip.errors import ConfigError

    try:
        import fsspec

        fs, path = fsspec.core.url_to_fs(url)
        found = fs.glob(path if not url.endswith("/") else path.rstrip("/") + "/*.tar")
    except ImportError as error:
        raise ConfigError(
            f"config key '{key}': {redact(url)} needs fsspec and the package of "
            f"its protocol ({error}); pip install 'mclip[remote]'"
        ) from None
    except (OSError, ValueError) as error:
        raise ConfigError(f"config key '{key}': cannot list {redact(url)} ({error})") from None
    shards = sorted(fs.unstrip_protocol(p) for p in found if p.endswith(".tar"))
    if not shards:
        raise ConfigError(f"config key '{key}': no .tar object under {redact(url)}")
    return shards


def shard_identity(url: str) -> str:
    """The name a shard is known by in an index or a teacher cache: a local shard's real path
    (symlinks and ``..`` resolved), a remote shard's redacted URL (a signed URL's changing
    signature does not make it another shard)."""
    return redact(url) if is_remote(url) else os.path.realpath(url)


def shard_stamp(url: str, policy: RetryPolicy | None = None) -> dict:
    """What changes when a shard is rewritten: a local file's ``bytes`` and ``mtime_ns``; a
    remote object's ``bytes`` and ``version`` (its ETag, else its Last-Modified), from an HTTP
    HEAD or the fsspec listing; ``{}`` for a ``pipe:`` command (nothing to ask: matched by its
    name only). A shard that cannot be asked is a :class:`ShardUnavailable`."""
    if not is_remote(url) or url.startswith("file://"):
        stat = os.stat(url[len("file://") :] if url.startswith("file://") else url)
        return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if url.startswith(PIPE_PREFIX):
        return {}
    policy = policy or RetryPolicy()
    attempt = 0
    while True:
        try:
            return _remote_stamp(url, policy.timeout)
        except RETRYABLE as error:
            if isinstance(error, ShardUnavailable) or attempt >= policy.retries:
                raise ShardUnavailable(
                    f"cannot ask {redact(url)} for its size and version ({error})"
                ) from None
            policy.wait(attempt)
            attempt += 1


def _remote_stamp(url: str, timeout: float) -> dict:
    if url.startswith(HTTP_SCHEMES):
        request = urllib.request.Request(url, method="HEAD")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                headers = response.headers
        except urllib.error.HTTPError as error:
            if error.code in PERMANENT_HTTP:
                raise ShardUnavailable(f"HTTP {error.code} for {redact(url)}") from None
            raise _Transient(f"HTTP {error.code} for {redact(url)}") from None
        length = headers.get("Content-Length")
        return {
            "bytes": int(length) if length else None,
            "version": headers.get("ETag") or headers.get("Last-Modified"),
        }
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    fs.invalidate_cache(path)  # a listing cached by an earlier glob would give the old version
    try:
        info = fs.info(path)
    except FileNotFoundError:
        raise ShardUnavailable(f"{redact(url)} does not exist") from None
    version = next(
        (
            str(info[k])
            for k in ("ETag", "etag", "LastModified", "mtime", "updated")
            if info.get(k) is not None
        ),
        None,
    )
    return {"bytes": info.get("size"), "version": version}


def shard_stamps(urls: list[str], threads: int = 32) -> list[dict]:
    """:func:`shard_stamp` of every URL, remote ones asked concurrently (``threads`` at a time:
    an index of 10,000 HTTP shards is checked in seconds, not minutes)."""
    from concurrent.futures import ThreadPoolExecutor

    if not any(is_remote(u) for u in urls):
        return [shard_stamp(u) for u in urls]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(shard_stamp, urls))
