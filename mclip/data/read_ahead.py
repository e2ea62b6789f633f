"""Remote shards read ahead: while one shard is decoded, the next remote one is opened and read
by a background thread into a bounded buffer, so the network waits on the model, not the reverse
(:func:`open_shards_ahead`, used by every shard reader through
:func:`mclip.data.shards.iter_raw_samples`)."""

from __future__ import annotations

import io
import queue
import threading
from collections import Counter
from typing import BinaryIO, Callable

from mclip.data.remote import RetryPolicy, is_remote, open_shard

CHUNK = 1 << 20
READ_AHEAD_BYTES = 64 << 20  # per shard being fetched ahead


class ReadAhead(io.RawIOBase):
    """A stream read by a background thread into a bounded buffer (``limit`` bytes), so that a
    remote shard's bytes arrive while the previous shard is still being decoded; an error of
    the reading thread is raised to the reader at the point it happened. ``close()`` stops the
    thread."""

    def __init__(self, stream: BinaryIO, limit: int = READ_AHEAD_BYTES, chunk: int = CHUNK):
        super().__init__()
        self._stream, self._chunk = stream, chunk
        self._queue: queue.Queue = queue.Queue(maxsize=max(limit // chunk, 1))
        self._pending, self._done, self._stop = b"", False, threading.Event()
        self._thread = threading.Thread(target=self._fill, daemon=True)
        self._thread.start()

    def _fill(self) -> None:
        try:
            while not self._stop.is_set():
                data = self._stream.read(self._chunk)
                self._put(data)
                if not data:
                    return
        except BaseException as error:  # handed to the reader, raised there
            self._put(error)

    def _put(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending and not self._done:
            item = self._queue.get()
            if isinstance(item, BaseException):
                self._done = True
                raise item
            if not item:
                self._done = True
            self._pending = item
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        self._stop.set()
        try:
            self._stream.close()
        except Exception:  # closing a half-read remote stream may fail; it is discarded
            pass
        super().close()


def open_shards_ahead(
    urls,
    policy: RetryPolicy | None = None,
    counter: Counter | None = None,
    on_error: Callable[[Exception, str], object] = lambda error, url: None,
):
    """(url, stream) of every shard in turn, each remote one opened and read ahead (up to
    :data:`READ_AHEAD_BYTES`) while the one before it is consumed: the network works while the
    caller decodes. Local shards are opened when their turn comes. A shard that cannot be opened
    goes to ``on_error`` and is passed over."""

    def start(url: str):
        try:
            stream = open_shard(url, policy, counter)
        except OSError as error:
            return error
        return ReadAhead(stream) if is_remote(url) else stream

    urls = iter(urls)
    current = next(urls, None)
    opened = start(current) if current is not None else None
    ahead = None
    try:
        while current is not None:
            following = next(urls, None)
            ahead = start(following) if following is not None and is_remote(following) else None
            if isinstance(opened, Exception):
                on_error(opened, current)
            else:
                yield current, opened
            current, opened = following, ahead
            ahead = None
            if opened is None and current is not None:
                opened = start(current)
    finally:  # the caller stopped early: stop the read-ahead threads
        for stream in (opened, ahead):
            if stream is not None and not isinstance(stream, Exception):
                stream.close()
