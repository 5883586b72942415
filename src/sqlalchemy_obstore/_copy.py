"""Copy one object from a backend to another with bounded memory, sync or async.

An object of at most one part is read in one request and written in one. A larger one
streams: the source's chunks are the body of the destination's `put`, which sends them
as a multipart upload with at most `_PARTS` parts in flight: async code passes
`iter_chunks_async` to `put_async`, sync code `iter_chunks` to `put`, whose iterator
bodies are read in the calling thread (see `ObstoreBackend.put`), so every backend,
wrappers included, streams the same way and there is one streaming write mechanism.
A failing chunk (a checksum check in `see`, a broken source) aborts the upload: nothing
is stored, no incomplete upload is left.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ._io import Call, Plan, run
from .backends import Backend, SizedBody, WriteResult

__all__ = ("copy_object", "copying")

_PARTS = 2  # parts in flight per copy: memory ~ 2 parts (+1 being read)


def _unchanged(chunk: bytes) -> bytes:
    return chunk


def copying(
    source: Backend,
    destination: Backend,
    path: str,
    *,
    size: int,
    attributes: Mapping[str, str] | None,
    chunk_size: int,
    see: Callable[[bytes], bytes] = _unchanged,
    destination_path: str | None = None,
) -> Plan[None]:
    """The copy of `path` from `source` to `destination`, as a plan (see `_io`).

    One request each way for an object of at most `chunk_size` bytes; streamed
    otherwise. Each chunk passes through `see` on its way.
    """
    target = destination_path or path
    if size <= chunk_size:
        data = see((yield Call(source.get_bytes, source.get_bytes_async, path)))
        yield Call(
            destination.put,
            destination.put_async,
            target,
            data,
            attributes=attributes,
            use_multipart=False,
        )
        return

    # The source's stream has the colour of the put it feeds.
    def upload() -> WriteResult:
        chunks = (see(chunk) for chunk in source.iter_chunks(path, chunk_size=chunk_size))
        body = SizedBody(chunks, size)  # longer than a part: it streams from the start
        return destination.put(
            target, body, attributes=attributes, chunk_size=chunk_size, max_concurrency=_PARTS
        )

    async def upload_async() -> WriteResult:
        stream = source.iter_chunks_async(path, chunk_size=chunk_size)
        body = (see(chunk) async for chunk in stream)
        return await destination.put_async(
            target, body, attributes=attributes, chunk_size=chunk_size, max_concurrency=_PARTS
        )

    yield Call(upload, upload_async)


def copy_object(
    source: Backend,
    destination: Backend,
    path: str,
    *,
    size: int,
    attributes: Mapping[str, str] | None,
    chunk_size: int,
    see: Callable[[bytes], bytes] = _unchanged,
    destination_path: str | None = None,
) -> None:
    """Copy `path` from `source` to `destination` where the caller runs (see `_io.run`)."""
    run(
        copying(
            source,
            destination,
            path,
            size=size,
            attributes=attributes,
            chunk_size=chunk_size,
            see=see,
            destination_path=destination_path,
        )
    )
