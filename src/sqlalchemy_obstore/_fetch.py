"""The bounds of an HTTP fetch, free of I/O: a deadline and a bounded body decoder.

[`remote`][sqlalchemy_obstore.remote] downloads with httpcore (httpx's transport layer),
sync or async. Whatever the mode, two things must hold while the bytes arrive, and both
live here so that the two executors share them:

* **A deadline for the whole fetch.** [`Deadline`][] cuts the timeout of every single
  network wait (connecting, the TLS handshake, each write and each read) to the time
  left, through a network backend wrapper that httpcore calls for every socket
  operation (`DeadlineBackend` for sync code, `AsyncDeadlineBackend` for async). A
  server that trickles one byte at a time cannot hold a fetch past its deadline: the
  wait in progress when the deadline passes ends then.
* **Bounded decoding.** The raw body is read as sent and [`BodyDecoder`][] undoes its
  `Content-Encoding` (gzip, deflate) itself, handing out at most `piece` bytes per
  step, so a small compressed body that expands enormously (a "zip bomb") is counted
  against `max_size` piece by piece and never held whole. Encodings it cannot bound
  are refused.
"""

from __future__ import annotations

import ssl
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import httpcore

__all__ = (
    "AsyncDeadlineBackend",
    "BodyDecoder",
    "Deadline",
    "DeadlineBackend",
    "UndecodableBodyError",
)

_GZIP_MAGIC = b"\x1f\x8b"
_MAX_CODINGS = 2
"""Stacked content codings accepted in one response (`gzip, gzip` is legal, rarely sent)."""


class Deadline:
    """A point in time a fetch must be over by (`None`: no deadline).

    Args:
        seconds: Time allowed from now, or `None` for no limit.
        clock: A monotonic clock in seconds (for tests).

    Example:
        >>> deadline = Deadline(10.0)
        >>> deadline.clamp(30.0) <= 10.0
        True
        >>> Deadline(None).clamp(30.0)
        30.0
    """

    __slots__ = ("_clock", "_end", "seconds")

    # A socket wait cut to the time left ends when (or a hair after) the deadline passes;
    # anything this close to it counts as the deadline.
    _SLACK = 0.001

    def __init__(self, seconds: float | None, *, clock: Callable[[], float] = time.monotonic):
        self.seconds = seconds
        self._clock = clock
        self._end = None if seconds is None else clock() + seconds

    def remaining(self) -> float | None:
        """Seconds left (negative once passed), or `None` without a deadline."""
        return None if self._end is None else self._end - self._clock()

    def expired(self) -> bool:
        """Whether the deadline has passed."""
        left = self.remaining()
        return left is not None and left <= self._SLACK

    def clamp(
        self,
        timeout: float | None,
        error: type[Exception] = httpcore.ReadTimeout,
    ) -> float | None:
        """The time one network wait may take: `timeout`, cut to what is left.

        Raises:
            Exception: `error` (an httpcore timeout by default) when no time is left.
        """
        left = self.remaining()
        if left is None:
            return timeout
        if left <= self._SLACK:
            raise error("the fetch's deadline has passed")
        return left if timeout is None else min(timeout, left)


# -- network backends: every socket wait bounded by the deadline ------------------------------
class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream, deadline: Deadline) -> None:
        self._stream = stream
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, self._deadline.clamp(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, self._deadline.clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        limit = self._deadline.clamp(timeout, httpcore.ConnectTimeout)
        stream = self._stream.start_tls(ssl_context, server_hostname, limit)
        return _DeadlineStream(stream, self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's sync network backend with every wait cut to a `Deadline`."""

    def __init__(self, deadline: Deadline, backend: httpcore.NetworkBackend | None = None):
        self._deadline = deadline
        self._backend = backend or httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        """Connect, within the timeout and the time left."""
        limit = self._deadline.clamp(timeout, httpcore.ConnectTimeout)
        stream = self._backend.connect_tcp(host, port, limit, local_address, socket_options)
        return _DeadlineStream(stream, self._deadline)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:  # pragma: no cover - fetches never use unix sockets
        """Refused: a fetch only ever connects over TCP."""
        raise httpcore.ConnectError("unix sockets are not used for remote fetches")

    def sleep(self, seconds: float) -> None:  # pragma: no cover - retries are off
        """Sleep (httpcore sleeps between connection retries, which fetches turn off)."""
        self._backend.sleep(seconds)


class _AsyncDeadlineStream(httpcore.AsyncNetworkStream):
    def __init__(self, stream: httpcore.AsyncNetworkStream, deadline: Deadline) -> None:
        self._stream = stream
        self._deadline = deadline

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        limit = self._deadline.clamp(timeout, httpcore.ReadTimeout)
        return await self._stream.read(max_bytes, limit)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._stream.write(buffer, self._deadline.clamp(timeout, httpcore.WriteTimeout))

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        limit = self._deadline.clamp(timeout, httpcore.ConnectTimeout)
        stream = await self._stream.start_tls(ssl_context, server_hostname, limit)
        return _AsyncDeadlineStream(stream, self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class AsyncDeadlineBackend(httpcore.AsyncNetworkBackend):
    """httpcore's async (anyio) network backend with every wait cut to a `Deadline`."""

    def __init__(self, deadline: Deadline, backend: httpcore.AsyncNetworkBackend | None = None):
        self._deadline = deadline
        self._backend = backend or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Connect, within the timeout and the time left."""
        limit = self._deadline.clamp(timeout, httpcore.ConnectTimeout)
        stream = await self._backend.connect_tcp(host, port, limit, local_address, socket_options)
        return _AsyncDeadlineStream(stream, self._deadline)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:  # pragma: no cover - fetches never use unix sockets
        """Refused: a fetch only ever connects over TCP."""
        raise httpcore.ConnectError("unix sockets are not used for remote fetches")

    async def sleep(self, seconds: float) -> None:  # pragma: no cover - retries are off
        """Sleep (httpcore sleeps between connection retries, which fetches turn off)."""
        await self._backend.sleep(seconds)


# -- bounded decoding ---------------------------------------------------------------------------
class UndecodableBodyError(Exception):
    """The body's `Content-Encoding` is refused, or the encoded body is broken.

    `remote` turns it into a `RemoteFetchError` naming the URL.
    """


class _Inflater:
    """One gzip or deflate coding undone with bounded output steps."""

    __slots__ = ("_kind", "_pending", "_piece", "_started", "_trailing", "_z")

    def __init__(self, kind: str, piece: int) -> None:
        self._kind = kind
        self._piece = piece
        self._z: Any = None
        self._pending = b""  # bytes not yet given to zlib (a deflate or gzip header to sniff)
        self._started = False
        self._trailing = False  # after the end of the data: whatever follows is ignored

    def _start(self, data: bytes) -> bytes | None:
        """Open a decompressor for the stream `data` begins; `None` until 2 bytes are in."""
        if len(data) < 2:
            return None
        if self._kind == "gzip":
            self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        else:  # deflate is zlib-wrapped by the RFC, raw from some servers: look at the header
            cmf, flg = data[0], data[1]
            wrapped = cmf & 0x0F == 8 and (cmf << 8 | flg) % 31 == 0
            self._z = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
        self._started = True
        return data

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Decode `data`, at most `piece` bytes per item."""
        data = self._pending + data if self._pending else data
        self._pending = b""
        while data and not self._trailing:
            if self._z is None or self._z.eof:
                if self._z is not None and not data.startswith(_GZIP_MAGIC[: len(data)]):
                    self._trailing = True  # not another gzip member: padding or garbage
                    return
                if self._z is not None and self._kind != "gzip":
                    self._trailing = True
                    return
                started = self._start(data)
                if started is None:
                    self._pending = data
                    return
            try:
                yield from self._inflate(data)
            except zlib.error as exc:
                raise UndecodableBodyError(f"the {self._kind} data is corrupt ({exc})") from None
            data = self._z.unused_data if self._z.eof else b""

    def _inflate(self, data: bytes) -> Iterator[bytes]:
        z, piece = self._z, self._piece
        while True:
            out = z.decompress(data, piece)
            data = z.unconsumed_tail
            if out:
                yield out
            if z.eof or (not data and len(out) < piece):
                return

    def finish(self) -> Iterator[bytes]:
        """Check that the data ended where its coding says it ends.

        Raises:
            UndecodableBodyError: If the body stopped in the middle of the coded data.
        """
        if self._trailing or (not self._started and not self._pending):
            return iter(())
        if self._pending or not self._z.eof:
            raise UndecodableBodyError(f"the {self._kind} data is cut short")
        return iter(())


class BodyDecoder:
    """Undoes a response's `Content-Encoding` in steps of at most `piece` bytes.

    `identity` (or no header) passes the bytes through as they come; `gzip`/`x-gzip`
    (several members included) and `deflate` (zlib-wrapped or raw) are decoded with
    zlib, whose output is taken `piece` bytes at a time, so a body that expands
    enormously never exists whole in memory. Up to two codings may be stacked.

    Args:
        content_encoding: The `Content-Encoding` header (all its values, comma-joined).
        piece: The largest item handed out.

    Raises:
        UndecodableBodyError: For a coding that cannot be bounded or is unknown (`br`,
            `zstd`, `compress`, ...) and for more than two codings.

    Example:
        >>> import gzip
        >>> decoder = BodyDecoder("gzip", piece=4)
        >>> list(decoder.feed(gzip.compress(b"0123456789")))
        [b'0123', b'4567', b'89']
        >>> list(decoder.finish())
        []
    """

    __slots__ = ("_stages", "codings")

    def __init__(self, content_encoding: str | None, *, piece: int = 64 * 1024) -> None:
        codings = [
            c.strip().lower()
            for c in (content_encoding or "").split(",")
            if c.strip().lower() not in {"", "identity"}
        ]
        codings = ["gzip" if c == "x-gzip" else c for c in codings]
        for coding in codings:
            if coding not in {"gzip", "deflate"}:
                raise UndecodableBodyError(
                    f"the server sent the body with Content-Encoding {coding!r}, which was "
                    "not asked for (the request says Accept-Encoding: identity) and cannot be "
                    "decoded with bounded memory"
                )
        if len(codings) > _MAX_CODINGS:
            raise UndecodableBodyError(
                f"the server stacked {len(codings)} content codings ({', '.join(codings)}); "
                f"at most {_MAX_CODINGS} are decoded"
            )
        self.codings = tuple(codings)
        # The server applied them in the listed order: undo the last one first.
        self._stages = [_Inflater(c, piece) for c in reversed(codings)]

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Decode one chunk of the raw body."""
        if not self._stages:
            if data:
                yield data
            return
        yield from _through(self._stages, data)

    def finish(self) -> Iterator[bytes]:
        """Flush at the end of the raw body; check that no coded data was cut short."""
        for index, stage in enumerate(self._stages):
            for piece in stage.finish():
                yield from _through(self._stages[index + 1 :], piece)


def _through(stages: list[_Inflater], data: bytes) -> Iterator[bytes]:
    if not stages:
        yield data
        return
    first, rest = stages[0], stages[1:]
    for piece in first.feed(data):
        yield from _through(rest, piece)
