"""Copy one object from a backend to another with bounded memory, sync or async.

Async: the source's `iter_chunks_async` feeds the destination's multipart `put_async`.
Sync needs another route: obstore's sync `put` consumes an iterator body inside its own
runtime, where a sync obstore read cannot run ("Cannot start a runtime from within a
runtime"). So sync copies read the source in the calling thread and write through a
buffered *writer* (`obstore.open_writer`, a multipart upload in `chunk_size` parts).
Backends that offer none (wrappers that do not expose one) receive the object in one
piece, which holds it in memory once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol

from ._compat import await_, in_async_context
from ._fork import obs  # obstore's functions; refused in a forked child
from ._logging import library_logger
from .backends import Backend, ObstoreBackend

__all__ = ("SyncWriter", "copy_object", "open_sync_writer")


logger = library_logger("sqlalchemy_obstore.copy")
_PART_CONCURRENCY = 2  # parts in flight per copy: memory ~ 2 parts (+1 being read)


class SyncWriter(Protocol):
    """Receives an object's bytes chunk by chunk; the object appears on a clean exit."""

    def write(self, data: bytes) -> None:
        """Append `data`."""
        ...


def open_sync_writer(
    backend: Backend, path: str, attributes: Mapping[str, str] | None, chunk_size: int
) -> AbstractContextManager[SyncWriter] | None:
    """A streaming writer to `path`, or `None` when the backend offers none.

    Backends other than `ObstoreBackend` may offer one with a `_open_sync_writer` method
    of the same signature (the mirror and overlay backends do).
    """
    hook = getattr(backend, "_open_sync_writer", None)
    if hook is not None:
        writer: AbstractContextManager[SyncWriter] | None = hook(path, attributes, chunk_size)
        return writer
    if type(backend) is ObstoreBackend:
        return _obstore_writer(backend, path, attributes, chunk_size)
    return None


class _Writer:
    def __init__(self, backend: ObstoreBackend, path: str, file: Any) -> None:
        self.backend = backend
        self.path = path
        self.file = file

    def write(self, data: bytes) -> None:
        with self.backend._errors("put", self.path):
            self.file.write(data)


@contextmanager
def _obstore_writer(
    backend: ObstoreBackend, path: str, attributes: Mapping[str, str] | None, chunk_size: int
) -> Iterator[SyncWriter]:
    options: dict[str, Any] = {"buffer_size": chunk_size, "max_concurrency": _PART_CONCURRENCY}
    if attributes and backend.supports_attributes:
        options["attributes"] = dict(attributes)
    with backend._errors("put", path):
        file = obs.open_writer(backend.store, path, **options)
    try:
        yield _Writer(backend, path, file)
    except BaseException as exc:
        # Leaving the writer with an exception aborts its multipart upload: no partial
        # object, no incomplete upload (closing would complete it with what was written).
        try:
            with backend._errors("put", path):
                file.__exit__(type(exc), exc, exc.__traceback__)
        except Exception as failure:  # the original error matters more; say what is left
            logger.warning(
                "Could not abort the upload to %r in backend %r (%s); an incomplete "
                "multipart upload may be left: `sqlalchemy-obstore gc` aborts it",
                path,
                backend.key,
                failure,
            )
        raise
    with backend._errors("put", path):
        file.close()


def copy_object(
    source: Backend,
    destination: Backend,
    path: str,
    *,
    size: int,
    attributes: Mapping[str, str] | None,
    chunk_size: int,
    see: Callable[[bytes], bytes] = lambda chunk: chunk,
    destination_path: str | None = None,
) -> None:
    """Copy `path` from `source` to `destination`; each chunk passes through `see`.

    One request each way for an object of at most `chunk_size` bytes; streamed
    otherwise. Inside SQLAlchemy's greenlet bridge the async API is used.
    """
    target = destination_path or path
    if size <= chunk_size:
        if in_async_context():
            data = see(await_(source.get_bytes_async(path)))
            await_(destination.put_async(target, data, attributes=attributes, use_multipart=False))
        else:
            data = see(source.get_bytes(path))
            destination.put(target, data, attributes=attributes, use_multipart=False)
        return
    if in_async_context():

        async def body() -> AsyncIterator[bytes]:
            async for chunk in source.iter_chunks_async(path, chunk_size=chunk_size):
                yield see(chunk)

        await_(
            destination.put_async(
                target,
                body(),
                attributes=attributes,
                chunk_size=chunk_size,
                max_concurrency=_PART_CONCURRENCY,
            )
        )
        return
    writer = open_sync_writer(destination, target, attributes, chunk_size)
    if writer is None:
        data = see(b"".join(source.iter_chunks(path, chunk_size=chunk_size)))
        destination.put(target, data, attributes=attributes)
        return
    with writer as sink:
        for chunk in source.iter_chunks(path, chunk_size=chunk_size):
            sink.write(see(chunk))
