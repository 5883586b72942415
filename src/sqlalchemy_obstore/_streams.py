"""Upload and download bodies: what obstore is given to send, and what it hands back.

Uploads: [`PulledInAThread`][] turns a sync iterator into an async one pulled outside
obstore's runtime; [`async_chunks`][] cuts a buffer into part-sized views and counts the
parts of a stream; [`Abortable`][] is a body that can be made to fail from outside, so
that a cancelled upload is aborted by obstore rather than dropped. Downloads:
[`Pieces`][] cuts a stream into pieces of the size asked for ([`AS_THEY_COME`][] hands
them on unchanged).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from ._body import close_body

if TYPE_CHECKING:
    from ._body import PartCount

__all__ = (
    "ABORT_WAIT_SECONDS",
    "AS_THEY_COME",
    "Abortable",
    "BodyAborted",
    "Pieces",
    "PulledInAThread",
    "async_chunks",
    "drained",
    "multipart_possible",
    "retrieve",
    "unchanged",
)


_END = object()


class PulledInAThread:
    """A sync iterator as an async one, each item pulled in a worker thread.

    The worker thread is outside obstore's runtime (a sync obstore call there works)
    and the event loop does not wait on the iterator's reads. `close` closes the
    iterator now, or right after the pull in progress when one is running.
    """

    def __init__(self, body: Iterator[Any]) -> None:
        self._body = body
        self._closed = False

    def _step(self) -> Any:
        chunk = next(self._body, _END)
        if self._closed:
            close_body(self._body)
        return chunk

    async def chunks(self) -> AsyncIterator[Any]:
        loop = asyncio.get_running_loop()
        try:
            while not self._closed:
                chunk = await loop.run_in_executor(None, self._step)
                if chunk is _END:
                    return
                yield chunk
        finally:
            self.close()

    def close(self) -> None:
        self._closed = True
        close_body(self._body)


ABORT_WAIT_SECONDS = 30
"""How long a cancelled `put_async` waits for obstore to abort its multipart upload."""


def retrieve(task: asyncio.Future[Any]) -> None:
    """Fetch a finished task's outcome, so that one nobody awaits is not reported."""
    if not task.cancelled():
        task.exception()


def multipart_possible(body: Any, options: Mapping[str, Any], chunk_size: int) -> bool:
    """Whether obstore may run `body` as a multipart upload with these put options."""
    if options.get("mode") is not None or options.get("use_multipart") is False:
        return False  # a conditional put is always a single request
    if isinstance(body, (bytes, bytearray, memoryview)):
        return options.get("use_multipart") is True or memoryview(body).nbytes > chunk_size
    return True  # obstore sends every iterator body as a multipart upload


async def async_chunks(
    body: Any, chunk_size: int, count: PartCount | None = None
) -> AsyncIterator[Any]:
    """`body` as an async iterator (a buffer is cut into `chunk_size` views, not copied).

    With `count`, every chunk is counted against the store's part limit first.
    """
    if isinstance(body, (bytes, bytearray, memoryview)):
        view = memoryview(body).cast("B")
        for start in range(0, view.nbytes, chunk_size):
            yield view[start : start + chunk_size]
        return
    async for chunk in body:
        yield chunk if count is None else count.add(chunk)


def unchanged(chunk: Any) -> Any:
    """The chunk itself (where no part counter checks chunks)."""
    return chunk


def drained(items: list[Any]) -> Iterator[Any]:
    """The items of `items`, each dropped from the list once handed out."""
    items.reverse()
    while items:
        yield items.pop()


class Abortable:
    """An upload body that can be made to fail from outside (see `ObstoreBackend._shielded`).

    `abort` makes the next pull raise `BodyAborted`; a pull in progress (waiting for
    the caller's source: a request body, a file read) is interrupted at once by
    cancelling the task obstore runs it in.
    """

    def __init__(self, source: AsyncIterator[Any]) -> None:
        self._source = source
        self._aborted = False
        self._pulling: asyncio.Task[Any] | None = None

    async def chunks(self) -> AsyncIterator[Any]:
        try:
            while True:
                if self._aborted:
                    raise BodyAborted
                self._pulling = asyncio.current_task()
                try:
                    chunk = await self._source.__anext__()
                except StopAsyncIteration:
                    return
                except asyncio.CancelledError:
                    if self._aborted:
                        raise BodyAborted from None
                    raise
                finally:
                    self._pulling = None
                yield chunk
        finally:
            close = getattr(self._source, "aclose", None)
            if close is not None:
                with suppress(RuntimeError):
                    await close()

    def abort(self) -> None:
        self._aborted = True
        if self._pulling is not None:
            self._pulling.cancel()


class BodyAborted(Exception):
    """Raised inside obstore's `put` to make it abort: the caller's body failed."""


def _as_bytes(chunk: Any) -> bytes:
    return chunk if type(chunk) is bytes else bytes(chunk)


class Pieces:
    """Cuts a stream of buffers into pieces of exactly `size` bytes (the last shorter).

    The sans-I/O half of `iter_chunks`/`iter_chunks_async`: obstore merges network
    chunks up to `min_chunk_size` but hands over a memory or local object whole.
    """

    __slots__ = ("held", "size")

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self.held = b""

    def cut(self, chunk: Any) -> list[bytes]:
        """The whole pieces `chunk` completes; the remainder is held for the next one.

        Copies each byte once: a piece that spans two chunks is joined from the held
        remainder and the new chunk's start, never from a copy of the whole chunk.
        """
        size = self.size
        view = memoryview(chunk).cast("B")
        pieces: list[bytes] = []
        start = 0
        if self.held:
            need = size - len(self.held)
            if view.nbytes < need:
                self.held += view
                return pieces
            pieces.append(self.held + view[:need])
            self.held = b""
            start = need
        elif view.nbytes == size:
            return [_as_bytes(chunk)]
        end = view.nbytes - (view.nbytes - start) % size
        pieces.extend(bytes(view[i : i + size]) for i in range(start, end, size))
        if end < view.nbytes:
            self.held = bytes(view[end:])
        return pieces

    def rest(self) -> list[bytes]:
        held, self.held = self.held, b""
        return [held] if held else []


class _Unchanged(Pieces):
    """Hands chunks on as they come (network stores: no copy, no re-cutting)."""

    def cut(self, chunk: Any) -> list[bytes]:
        return [_as_bytes(chunk)]


AS_THEY_COME = _Unchanged(1)
