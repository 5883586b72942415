"""Backends made of backends: a mirror (write to several stores) and an overlay (sandbox).

- [`MirrorBackend`][sqlalchemy_obstore.composite.MirrorBackend] writes every object to a
  primary backend and to one or more mirrors, and reads from the primary. Register it
  under your backend key to move to another store with no downtime: new uploads land in
  both stores, [`migrate`][sqlalchemy_obstore.migration.migrate] backfills the old ones,
  then the primary is flipped (see the migration guide).
- [`OverlayBackend`][sqlalchemy_obstore.composite.OverlayBackend] reads through to a
  read-only *base* backend and sends every write and delete to an *overlay* backend, so a
  staging environment can run against production objects without changing them.

Both are [`Backend`][sqlalchemy_obstore.Backend] subclasses: register them in a registry
like any backend; columns name them by key.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from datetime import timedelta
from typing import Any

from ._copy import SyncWriter, copy_object, open_sync_writer
from ._delegating import Call, DelegatingBackend, put_kwargs
from ._logging import library_logger
from .backends import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MAX_CONCURRENCY,
    Backend,
    HttpMethod,
    ObjectInfo,
    UploadBody,
    WriteResult,
)
from .errors import (
    ConfigurationError,
    ObjectExistsError,
    ObjectNotFoundError,
    StorageError,
)

__all__ = ("TOMBSTONE_PREFIX", "MirrorBackend", "OverlayBackend")

logger = library_logger("sqlalchemy_obstore.composite")

TOMBSTONE_PREFIX = ".overlay-tombstones"
"""Where an `OverlayBackend` records, in the overlay store, the base objects it deleted."""

_BUFFERS = (bytes, bytearray, memoryview)
_READS = frozenset({"GET", "HEAD"})
_LOOKUPS: frozenset[Call] = frozenset({"head", "get"})


def _paths(paths: str | Sequence[str]) -> list[str]:
    return [paths] if isinstance(paths, str) else list(paths)


async def _stream(
    source: Backend,
    destination: Backend,
    path: str,
    attributes: Mapping[str, str] | None,
    chunk_size: int,
    destination_path: str | None = None,
) -> None:
    """Async streamed copy of one object from a backend to another."""
    await destination.put_async(
        destination_path or path,
        source.iter_chunks_async(path, chunk_size=chunk_size),
        attributes=attributes,
        chunk_size=chunk_size,
    )


# -- mirror -----------------------------------------------------------------------------------
class MirrorBackend(DelegatingBackend):
    """Writes to a primary backend and every mirror; reads from the primary.

    Puts and copies go to the primary and then to each mirror (concurrently in async
    code); deletes go to all of them; reads, `head`, listing and signing use the
    primary only (a URL signed for PUT writes to the primary only). With `strict=True`
    (the default) a failed mirror write fails the put and removes what was written, so
    the session lifecycle's guarantees hold for every store: a committed row's object
    exists in all of them. With `strict=False` a mirror failure is logged and counted in
    `mirror_failures`, and the put succeeds.

    Capabilities, prefix, key layout, checksum algorithm, policy and URL signer are the
    primary's.

    Args:
        key: The key columns store (usually the key the primary had).
        primary: The backend that serves reads.
        mirrors: Backends that receive a copy of every write.
        strict: Fail writes when a mirror fails (see above).

    Raises:
        ConfigurationError: Without mirrors.

    Example:
        >>> from sqlalchemy_obstore import MirrorBackend, ObstoreBackend
        >>> old = ObstoreBackend("old", "memory://")
        >>> new = ObstoreBackend("new", "memory://")
        >>> uploads = MirrorBackend("uploads", primary=old, mirrors=[new])
        >>> _ = uploads.put("a.txt", b"hello")
        >>> old.get_bytes("a.txt"), new.get_bytes("a.txt")
        (b'hello', b'hello')
    """

    def __init__(
        self, key: str, primary: Backend, mirrors: Sequence[Backend], *, strict: bool = True
    ) -> None:
        if not mirrors:
            raise ConfigurationError("A MirrorBackend needs at least one mirror.", backend=key)
        super().__init__(key, primary)
        self.mirrors = list(mirrors)
        self.strict = strict
        self.mirror_failures = 0

    @property
    def primary(self) -> Backend:
        """The backend that serves reads (the wrapped backend)."""
        return self.inner

    @primary.setter
    def primary(self, backend: Backend) -> None:
        self.inner = backend

    def describe(self) -> str:
        """The primary and the mirrors, without secrets."""
        mirrors = ", ".join(m.describe() for m in self.mirrors)
        return f"{self.primary.describe()}, mirrored to {mirrors}"

    def __repr__(self) -> str:
        return (
            f"MirrorBackend(key={self.key!r}, primary={self.primary!r}, "
            f"mirrors={self.mirrors!r}, strict={self.strict})"
        )

    # -- failure handling -----------------------------------------------------------------------
    def _mirror_failed(self, mirror: Backend, path: str, exc: BaseException) -> None:
        if self.strict:
            return
        self.mirror_failures += 1
        logger.warning(
            "Mirror %r of backend %r failed to write %r: %s", mirror.key, self.key, path, exc
        )

    def _undo(self, written: Sequence[Backend], path: str) -> None:
        for backend in written:
            try:
                backend.delete(path)
            except StorageError as exc:  # pragma: no cover - best effort
                logger.warning("Could not remove %r from %r: %s", path, backend.key, exc)

    async def _undo_async(self, written: Sequence[Backend], path: str) -> None:
        for backend in written:
            try:
                await backend.delete_async(path)
            except StorageError as exc:  # pragma: no cover - best effort
                logger.warning("Could not remove %r from %r: %s", path, backend.key, exc)

    # -- writes -------------------------------------------------------------------------------
    def put(
        self,
        path: str,
        body: UploadBody,
        *,
        attributes: Mapping[str, str] | None = None,
        create_only: bool = False,
        use_multipart: bool | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    ) -> WriteResult:
        """Write to the primary, then to each mirror (from the primary when streamed)."""
        options = put_kwargs(attributes, create_only, use_multipart, chunk_size, max_concurrency)
        result = self.primary.put(path, body, **options)
        written: list[Backend] = [self.primary]
        size: int | None = len(body) if isinstance(body, (bytes, bytearray)) else None
        for mirror in self.mirrors:
            try:
                if isinstance(body, _BUFFERS):
                    mirror.put(path, body, **{**options, "create_only": False})
                else:  # the body is consumed: stream the stored object across
                    if size is None:
                        size = self.primary.head(path).size
                    copy_object(
                        self.primary,
                        mirror,
                        path,
                        size=size,
                        attributes=attributes,
                        chunk_size=chunk_size,
                    )
            except StorageError as exc:
                if self.strict:
                    self._undo(written, path)
                    raise
                self._mirror_failed(mirror, path, exc)
            else:
                written.append(mirror)
        return result

    async def put_async(
        self,
        path: str,
        body: UploadBody,
        *,
        attributes: Mapping[str, str] | None = None,
        create_only: bool = False,
        use_multipart: bool | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    ) -> WriteResult:
        """Async version of [`put`][sqlalchemy_obstore.composite.MirrorBackend.put].

        A buffer is written to every store at once; a streamed body goes to the primary
        and is then streamed from it to the mirrors, concurrently.
        """
        options = put_kwargs(attributes, create_only, use_multipart, chunk_size, max_concurrency)
        mirror_options = {**options, "create_only": False}
        buffer = isinstance(body, _BUFFERS)
        mirror_outcomes: list[Any]
        if buffer and not create_only:
            outcomes = await asyncio.gather(
                self.primary.put_async(path, body, **options),
                *(m.put_async(path, body, **mirror_options) for m in self.mirrors),
                return_exceptions=True,
            )
            result, mirror_outcomes = outcomes[0], list(outcomes[1:])
            if isinstance(result, BaseException):
                await self._undo_async(_succeeded(self.mirrors, mirror_outcomes), path)
                raise result
        else:  # the primary first: it may refuse (create_only), or it consumes the body
            result = await self.primary.put_async(path, body, **options)
            mirror_outcomes = list(
                await asyncio.gather(
                    *(
                        m.put_async(path, body, **mirror_options)
                        if buffer
                        else _stream(self.primary, m, path, attributes, chunk_size)
                        for m in self.mirrors
                    ),
                    return_exceptions=True,
                )
            )
        assert isinstance(result, WriteResult)
        failed = [
            (m, o)
            for m, o in zip(self.mirrors, mirror_outcomes, strict=True)
            if isinstance(o, BaseException)
        ]
        fatal = [e for _, e in failed if self.strict or not _storage(e)]
        if fatal:
            # Remove what was written, so that no store keeps an object of a failed put.
            written = [self.primary, *_succeeded(self.mirrors, mirror_outcomes)]
            await self._undo_async(written, path)
            raise fatal[0]
        for mirror, exc in failed:
            self._mirror_failed(mirror, path, exc)
        return result

    def _open_sync_writer(
        self, path: str, attributes: Mapping[str, str] | None, chunk_size: int
    ) -> AbstractContextManager[SyncWriter] | None:
        """A streaming writer to every store at once (for sync copies into the mirror)."""
        writers = [
            open_sync_writer(b, path, attributes, chunk_size) for b in [self.primary, *self.mirrors]
        ]
        if any(w is None for w in writers):
            return None
        return _all_writers([w for w in writers if w is not None])

    def copy(self, source: str, destination: str, *, overwrite: bool = False) -> None:
        """Copy inside the primary and inside each mirror."""
        self.primary.copy(source, destination, overwrite=overwrite)
        written: list[Backend] = [self.primary]
        for mirror in self.mirrors:
            try:
                mirror.copy(source, destination, overwrite=True)
            except StorageError as exc:
                if self.strict:
                    self._undo(written, destination)
                    raise
                self._mirror_failed(mirror, destination, exc)
            else:
                written.append(mirror)

    async def copy_async(self, source: str, destination: str, *, overwrite: bool = False) -> None:
        """Async version of [`copy`][sqlalchemy_obstore.composite.MirrorBackend.copy]."""
        await self.primary.copy_async(source, destination, overwrite=overwrite)
        outcomes = await asyncio.gather(
            *(m.copy_async(source, destination, overwrite=True) for m in self.mirrors),
            return_exceptions=True,
        )
        failed = [(m, o) for m, o in zip(self.mirrors, outcomes, strict=True) if o is not None]
        if failed and (self.strict or not all(_storage(e) for _, e in failed)):
            written = [self.primary, *_succeeded(self.mirrors, list(outcomes))]
            await self._undo_async(written, destination)
            raise failed[0][1]
        for mirror, exc in failed:
            self._mirror_failed(mirror, destination, exc)

    def delete(self, paths: str | Sequence[str]) -> None:
        """Delete from every store.

        Every store is tried; then the primary's error is raised, or a mirror's when
        the mirror is strict (a lenient mirror's is logged and counted).
        """
        errors: list[tuple[Backend, BaseException]] = []
        for backend in [self.primary, *self.mirrors]:
            try:
                backend.delete(paths)
            except StorageError as exc:
                errors.append((backend, exc))
        self._raise_delete_errors(errors, paths)

    async def delete_async(self, paths: str | Sequence[str]) -> None:
        """Async version of [`delete`][sqlalchemy_obstore.composite.MirrorBackend.delete]."""
        batch = _paths(paths)
        backends = [self.primary, *self.mirrors]
        outcomes = await asyncio.gather(
            *(b.delete_async(batch) for b in backends), return_exceptions=True
        )
        errors = [(b, o) for b, o in zip(backends, outcomes, strict=True) if o is not None]
        self._raise_delete_errors(errors, paths)

    def _raise_delete_errors(
        self, errors: list[tuple[Backend, BaseException]], paths: str | Sequence[str]
    ) -> None:
        for backend, exc in errors:
            if backend is self.primary or self.strict or not _storage(exc):
                raise exc
        for backend, exc in errors:
            self._mirror_failed(backend, paths if isinstance(paths, str) else "...", exc)


def _succeeded(backends: Sequence[Backend], outcomes: Sequence[Any]) -> list[Backend]:
    return [b for b, o in zip(backends, outcomes, strict=True) if not isinstance(o, BaseException)]


def _storage(exc: BaseException) -> bool:
    return isinstance(exc, StorageError)


class _Fanout:
    def __init__(self, sinks: list[SyncWriter]) -> None:
        self.sinks = sinks

    def write(self, data: bytes) -> None:
        for sink in self.sinks:
            sink.write(data)


@contextmanager
def _all_writers(writers: list[AbstractContextManager[SyncWriter]]) -> Iterator[SyncWriter]:
    with ExitStack() as stack:
        yield _Fanout([stack.enter_context(w) for w in writers])


# -- overlay ----------------------------------------------------------------------------------
class OverlayBackend(DelegatingBackend):
    """Reads through to a read-only base backend; writes and deletes go to an overlay.

    An object written through the overlay hides the base object at the same path. A
    deleted base object is recorded as a *tombstone*, a small object at
    `.overlay-tombstones/<path>` in the overlay store: from then on `head` and the reads
    raise `ObjectNotFoundError` and listings skip it, also after a restart (the
    tombstones live in the store). Writing the path again removes its tombstone. The
    base backend is never written to. Reads come from the overlay when it holds the
    object, else from the base.

    New keys are made with the overlay's prefix, key layout and checksum algorithm.

    Args:
        key: The key columns store (usually the production key).
        base: The read-only backend (for example production's bucket, with read-only
            credentials).
        overlay: The backend that receives every write and delete.

    Example:
        >>> from sqlalchemy_obstore import ObjectNotFoundError, ObstoreBackend, OverlayBackend
        >>> production = ObstoreBackend("uploads", "memory://")
        >>> _ = production.put("a.txt", b"real")
        >>> staging = OverlayBackend("uploads", production, ObstoreBackend("s", "memory://"))
        >>> staging.get_bytes("a.txt")
        b'real'
        >>> staging.delete("a.txt")
        >>> staging.exists("a.txt"), production.get_bytes("a.txt")
        (False, b'real')
    """

    def __init__(self, key: str, base: Backend, overlay: Backend) -> None:
        super().__init__(key, overlay)
        self.base = base
        self.public_base_url = None

    @property
    def overlay(self) -> Backend:
        """The backend that receives every write and delete (the wrapped backend)."""
        return self.inner

    @overlay.setter
    def overlay(self, backend: Backend) -> None:
        self.inner = backend

    # -- capabilities ---------------------------------------------------------------------------
    @property
    def supports_signing(self) -> bool:
        """Whether both stores can sign (a URL is signed by the store holding the object)."""
        return self.base.supports_signing and self.overlay.supports_signing

    @property
    def supports_native_signing(self) -> bool:
        """Whether both stores sign URLs themselves."""
        return self.base.supports_native_signing and self.overlay.supports_native_signing

    @property
    def max_sign_expiry(self) -> timedelta | None:
        """The shorter of both stores' signed-URL lifetimes."""
        limits = [x for x in (self.base.max_sign_expiry, self.overlay.max_sign_expiry) if x]
        return min(limits) if limits else None

    def describe(self) -> str:
        """Both stores, without secrets."""
        return f"{self.overlay.describe()} over read-only {self.base.describe()}"

    def __repr__(self) -> str:
        return f"OverlayBackend(key={self.key!r}, base={self.base!r}, overlay={self.overlay!r})"

    # -- tombstones -----------------------------------------------------------------------------
    @staticmethod
    def _tombstone(path: str) -> str:
        return f"{TOMBSTONE_PREFIX}/{path}"

    @staticmethod
    def _hidden(path: str) -> bool:
        return path.startswith(TOMBSTONE_PREFIX + "/")

    def _where(self, path: str) -> Backend:
        """The backend holding `path` (raises ObjectNotFoundError when it is deleted)."""
        if self.overlay.exists(path):
            return self.overlay
        if self.overlay.exists(self._tombstone(path)):
            raise ObjectNotFoundError(
                f"No object at {path!r} in backend {self.key!r} (deleted in the overlay).",
                backend=self.key,
                path=path,
            )
        return self.base

    async def _where_async(self, path: str) -> Backend:
        if await self.overlay.exists_async(path):
            return self.overlay
        if await self.overlay.exists_async(self._tombstone(path)):
            raise ObjectNotFoundError(
                f"No object at {path!r} in backend {self.key!r} (deleted in the overlay).",
                backend=self.key,
                path=path,
            )
        return self.base

    def _route(self, call: Call, path: str | None) -> Backend:
        """Reads: the backend holding `path`; everything else: the overlay."""
        if call in _LOOKUPS and path is not None:
            return self._where(path)
        return self.overlay

    async def _route_async(self, call: Call, path: str | None) -> Backend:
        """Async version of `_route`."""
        if call in _LOOKUPS and path is not None:
            return await self._where_async(path)
        return self.overlay

    # -- writes -------------------------------------------------------------------------------
    def put(
        self,
        path: str,
        body: UploadBody,
        *,
        attributes: Mapping[str, str] | None = None,
        create_only: bool = False,
        use_multipart: bool | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    ) -> WriteResult:
        """Write to the overlay (and lift a tombstone at `path`).

        With `create_only`, an object visible in the base counts as existing.
        """
        options = put_kwargs(attributes, create_only, use_multipart, chunk_size, max_concurrency)
        if create_only:
            self._refuse_existing(path, False, self.exists(path))
        result = self.overlay.put(path, body, **options)
        self.overlay.delete(self._tombstone(path))
        return result

    async def put_async(
        self,
        path: str,
        body: UploadBody,
        *,
        attributes: Mapping[str, str] | None = None,
        create_only: bool = False,
        use_multipart: bool | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    ) -> WriteResult:
        """Async version of [`put`][sqlalchemy_obstore.composite.OverlayBackend.put]."""
        options = put_kwargs(attributes, create_only, use_multipart, chunk_size, max_concurrency)
        if create_only:
            self._refuse_existing(path, False, await self.exists_async(path))
        result = await self.overlay.put_async(path, body, **options)
        await self.overlay.delete_async(self._tombstone(path))
        return result

    def _open_sync_writer(
        self, path: str, attributes: Mapping[str, str] | None, chunk_size: int
    ) -> AbstractContextManager[SyncWriter] | None:
        writer = open_sync_writer(self.overlay, path, attributes, chunk_size)
        if writer is None:
            return None
        return self._lifting(writer, path)

    @contextmanager
    def _lifting(
        self, writer: AbstractContextManager[SyncWriter], path: str
    ) -> Iterator[SyncWriter]:
        with writer as sink:
            yield sink
        self.overlay.delete(self._tombstone(path))

    def _refuse_existing(self, destination: str, overwrite: bool, exists: bool) -> None:
        if exists and not overwrite:
            raise ObjectExistsError(
                f"An object already exists at {destination!r} in backend {self.key!r}; "
                "it was not overwritten.",
                backend=self.key,
                path=destination,
            )

    def copy(self, source: str, destination: str, *, overwrite: bool = False) -> None:
        """Copy into the overlay (a base object is streamed across)."""
        holder = self._where(source)
        if holder is self.overlay:
            self.overlay.copy(source, destination, overwrite=overwrite)
        else:
            self._refuse_existing(destination, overwrite, self.exists(destination))
            info = self.base.head(source)
            copy_object(
                self.base,
                self.overlay,
                source,
                size=info.size,
                attributes=_attributes_of(info),
                chunk_size=DEFAULT_CHUNK_SIZE,
                destination_path=destination,
            )
        self.overlay.delete(self._tombstone(destination))

    async def copy_async(self, source: str, destination: str, *, overwrite: bool = False) -> None:
        """Async version of [`copy`][sqlalchemy_obstore.composite.OverlayBackend.copy]."""
        holder = await self._where_async(source)
        if holder is self.overlay:
            await self.overlay.copy_async(source, destination, overwrite=overwrite)
        else:
            exists = await self.exists_async(destination)
            self._refuse_existing(destination, overwrite, exists)
            info = await self.base.head_async(source)
            await _stream(
                self.base,
                self.overlay,
                source,
                _attributes_of(info),
                DEFAULT_CHUNK_SIZE,
                destination_path=destination,
            )
        await self.overlay.delete_async(self._tombstone(destination))

    def delete(self, paths: str | Sequence[str]) -> None:
        """Delete from the overlay; base objects get a tombstone instead."""
        batch = _paths(paths)
        self.overlay.delete(batch)
        for path in batch:
            if self.base.exists(path):
                self.overlay.put(self._tombstone(path), b"", use_multipart=False)

    async def delete_async(self, paths: str | Sequence[str]) -> None:
        """Async version of [`delete`][sqlalchemy_obstore.composite.OverlayBackend.delete]."""
        batch = _paths(paths)
        await self.overlay.delete_async(batch)
        for path in batch:
            if await self.base.exists_async(path):
                await self.overlay.put_async(self._tombstone(path), b"", use_multipart=False)

    # -- reads --------------------------------------------------------------------------------
    def iter_chunks(self, path: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
        """Stream from the overlay, else from the base unless deleted."""
        yield from self._where(path).iter_chunks(path, chunk_size=chunk_size)

    async def iter_chunks_async(
        self, path: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> AsyncIterator[bytes]:
        """Async version of `iter_chunks`."""
        holder = await self._where_async(path)
        async for chunk in holder.iter_chunks_async(path, chunk_size=chunk_size):
            yield chunk

    def list_objects(
        self, prefix: str | None = None, *, offset: str | None = None
    ) -> Iterator[ObjectInfo]:
        """Both stores merged by path, overlay first, deleted base objects left out.

        The overlay's objects and tombstones under `prefix` are held in memory (an
        overlay is a sandbox's changes); the base is streamed. The result is in key
        order when the base lists in key order.
        """
        own = sorted(
            (
                i
                for i in self.overlay.list_objects(prefix, offset=offset)
                if not self._hidden(i.path)
            ),
            key=lambda i: i.path,
        )
        gone = {
            i.path[len(TOMBSTONE_PREFIX) + 1 :]
            for i in self.overlay.list_objects(_tombstone_prefix(prefix))
        }
        yield from _merged(own, self.base.list_objects(prefix, offset=offset), gone)

    async def list_objects_async(
        self, prefix: str | None = None, *, offset: str | None = None
    ) -> AsyncIterator[ObjectInfo]:
        """Async version of `list_objects`."""
        own = sorted(
            [
                i
                async for i in self.overlay.list_objects_async(prefix, offset=offset)
                if not self._hidden(i.path)
            ],
            key=lambda i: i.path,
        )
        gone = {
            i.path[len(TOMBSTONE_PREFIX) + 1 :]
            async for i in self.overlay.list_objects_async(_tombstone_prefix(prefix))
        }
        seen = {i.path for i in own}
        pending = list(own)
        async for info in self.base.list_objects_async(prefix, offset=offset):
            if info.path in gone or info.path in seen:
                continue
            while pending and pending[0].path < info.path:
                yield pending.pop(0)
            yield info
        for info in pending:
            yield info

    # -- signing ------------------------------------------------------------------------------
    def sign(  # type: ignore[override]
        self,
        paths: str | Sequence[str],
        *,
        method: HttpMethod = "GET",
        expires_in: int | float | timedelta = 3600,
    ) -> str | list[str]:
        """Sign with the store holding each object; PUT and DELETE always with the overlay.

        (A signed write is never made for the base.)
        """
        batch = _paths(paths)
        signed = [
            (self._where(p) if method in _READS else self.overlay).sign(
                p, method=method, expires_in=expires_in
            )
            for p in batch
        ]
        return signed[0] if isinstance(paths, str) else signed

    async def sign_async(  # type: ignore[override]
        self,
        paths: str | Sequence[str],
        *,
        method: HttpMethod = "GET",
        expires_in: int | float | timedelta = 3600,
    ) -> str | list[str]:
        """Async version of [`sign`][sqlalchemy_obstore.composite.OverlayBackend.sign]."""
        signed = []
        for p in _paths(paths):
            holder = await self._where_async(p) if method in _READS else self.overlay
            signed.append(await holder.sign_async(p, method=method, expires_in=expires_in))
        return signed[0] if isinstance(paths, str) else signed


def _tombstone_prefix(prefix: str | None) -> str:
    return f"{TOMBSTONE_PREFIX}/{prefix.strip('/')}" if prefix else TOMBSTONE_PREFIX


def _attributes_of(info: ObjectInfo) -> dict[str, str] | None:
    attributes = dict(info.attributes)
    if info.content_type:
        attributes["Content-Type"] = info.content_type
    return attributes or None


def _merged(
    own: list[ObjectInfo], base: Iterator[ObjectInfo], gone: set[str]
) -> Iterator[ObjectInfo]:
    seen = {i.path for i in own}
    visible = (i for i in base if i.path not in gone and i.path not in seen)
    yield from heapq.merge(own, visible, key=lambda i: i.path)
