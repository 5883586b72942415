"""The implementation of `sqlalchemy_obstore.composite`, documented and imported there."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any

from ._body import close_body
from ._copy import copying
from ._delegating import Call as Routed
from ._delegating import DelegatingBackend, put_kwargs
from ._errors import (
    ConfigurationError,
    InvalidObjectPathError,
    ObjectExistsError,
    ObjectNotFoundError,
    StorageError,
)
from ._io import Call, Collect, Gather, Plan, as_call, run_async, run_sync
from ._logging import library_logger
from ._prefixes import require_contains, require_managed
from .backends import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MAX_CONCURRENCY,
    Backend,
    HttpMethod,
    ObjectInfo,
    UploadBody,
    WriteResult,
)

__all__ = ("TOMBSTONE_PREFIX", "MirrorBackend", "OverlayBackend")

logger = library_logger("sqlalchemy_obstore.composite")

TOMBSTONE_PREFIX = ".overlay-tombstones"
"""Where an `OverlayBackend` records, in the overlay store, the base objects it deleted
(below the overlay backend's prefix when it has one)."""

_BUFFERS = (bytes, bytearray, memoryview)
_READS = frozenset({"GET", "HEAD"})
_LOOKUPS: frozenset[Routed] = frozenset({"head", "get"})


def _paths(paths: str | Sequence[str]) -> list[str]:
    return [paths] if isinstance(paths, str) else list(paths)


def _confined(
    backend: Backend, paths: str | Sequence[str], action: str, body: object = None
) -> list[str]:
    """`paths`, refused before any I/O when one lies outside `backend`'s prefix.

    A wrapper's writes and deletes stay under its own prefix, as an `ObstoreBackend`'s
    do, even where they reach backends of a wider prefix (mirrors, an overlay with a
    wider prefix than the base): see `require_managed`. A refused put's `body` is
    closed, as the backend it was meant for would close it.
    """
    batch = _paths(paths)
    try:
        for path in batch:
            require_managed(backend, path, action)
    except InvalidObjectPathError:
        close_body(body)
        raise
    return batch


# -- mirror -----------------------------------------------------------------------------------
class MirrorBackend(DelegatingBackend):
    """Writes to a primary backend and every mirror; reads from the primary.

    Puts (a `put_buffer` too: it is a create-only `put`) and copies go to the primary
    and then to each mirror (concurrently in async code); deletes go to all of them;
    reads, `head`, listing and signing use the primary only (a URL signed for PUT
    writes to the primary only). With `strict=True` (the default) a failed mirror
    write fails the put and removes what was written, so the session lifecycle's
    guarantees hold for every store: a committed row's object exists in all of them.
    With `strict=False` a mirror failure is logged and counted in `mirror_failures`,
    and the put succeeds.

    Capabilities, prefix, key layout, checksum algorithm, policy and URL signer are the
    primary's. Each mirror's prefix must be the primary's or contain it (or the mirror
    has none): a mirror gets every object at the primary's path, and a backend writes
    and deletes only under its prefix. A write or delete of a path outside the
    primary's prefix raises `InvalidObjectPathError` before any store is touched.

    Args:
        key: The key columns store (usually the key the primary had).
        primary: The backend that serves reads.
        mirrors: Backends that receive a copy of every write.
        strict: Fail writes when a mirror fails (see above).

    Raises:
        ConfigurationError: Without mirrors, or for a mirror whose prefix does not
            contain the primary's.

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
        for mirror in mirrors:
            require_contains(mirror, primary, "a mirror receives each write at the same path")
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

    @property
    def never_waits(self) -> bool:
        """Whether neither the primary nor any mirror waits for I/O."""
        return self.primary.never_waits and all(m.never_waits for m in self.mirrors)

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

    def _undoing(self, written: Sequence[Backend], path: str) -> Plan[None]:
        """Remove `path` from the stores written so far (best effort: failures are logged)."""
        deletes = [Call(b.delete, b.delete_async, path) for b in written]
        outcomes = yield Gather(deletes, fail_fast=False)
        for backend, outcome in zip(written, outcomes, strict=True):
            if isinstance(outcome, StorageError):
                logger.warning("Could not remove %r from %r: %s", path, backend.key, outcome)
            elif isinstance(outcome, BaseException):
                raise outcome

    def _settling(self, outcomes: Sequence[Any], path: str) -> Plan[None]:
        """After the mirrors' writes: undo everything and raise, or log lenient failures."""
        if not any(isinstance(o, BaseException) for o in outcomes):
            return
        failed = [
            (m, o)
            for m, o in zip(self.mirrors, outcomes, strict=True)
            if isinstance(o, BaseException)
        ]
        fatal = [e for _, e in failed if self.strict or not _storage(e)]
        if fatal:
            # Remove what was written, so that no store keeps an object of a failed write.
            yield from self._undoing([self.primary, *_succeeded(self.mirrors, outcomes)], path)
            raise fatal[0]
        for mirror, exc in failed:
            self._mirror_failed(mirror, path, exc)

    # -- writes -------------------------------------------------------------------------------
    def _putting(self, path: str, body: UploadBody, options: dict[str, Any]) -> Plan[WriteResult]:
        """A buffer goes to every store at once; a stream to the primary, then from it to
        each mirror (sync code: one store after another)."""
        _confined(self, path, "write", body)
        primary, mirrors = self.primary, self.mirrors
        mirror_options = {**options, "create_only": False}
        buffer = isinstance(body, _BUFFERS)
        if buffer and not options["create_only"]:
            puts = [Call(primary.put, primary.put_async, path, body, **options)]
            puts += [Call(m.put, m.put_async, path, body, **mirror_options) for m in mirrors]
            outcomes = yield Gather(puts, fail_fast=self.strict)
            result, mirror_outcomes = outcomes[0], outcomes[1:]
            if isinstance(result, BaseException):
                yield from self._undoing(_succeeded(mirrors, mirror_outcomes), path)
                raise result
        else:  # the primary first: it may refuse (create_only), or it consumes the body
            result = yield Call(primary.put, primary.put_async, path, body, **options)
            copies: list[Call[Any]]
            if buffer:
                copies = [Call(m.put, m.put_async, path, body, **mirror_options) for m in mirrors]
            else:  # the body is consumed: stream the stored object across
                stored = yield Call(primary.head, primary.head_async, path)
                chunk_size = options["chunk_size"]
                attributes = options["attributes"]
                copies = [
                    as_call(
                        copying(
                            primary,
                            m,
                            path,
                            size=stored.size,
                            attributes=attributes,
                            chunk_size=chunk_size,
                        )
                    )
                    for m in mirrors
                ]
            mirror_outcomes = yield Gather(copies, fail_fast=self.strict)
        yield from self._settling(mirror_outcomes, path)
        assert isinstance(result, WriteResult)
        return result

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
        return run_sync(self._putting(path, body, options))

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
        return await run_async(self._putting(path, body, options))

    def _copying(self, source: str, destination: str, overwrite: bool) -> Plan[None]:
        _confined(self, destination, "copy to")
        primary = self.primary
        yield Call(primary.copy, primary.copy_async, source, destination, overwrite=overwrite)
        copies = [
            Call(m.copy, m.copy_async, source, destination, overwrite=True) for m in self.mirrors
        ]
        outcomes = yield Gather(copies, fail_fast=self.strict)
        yield from self._settling(outcomes, destination)

    def copy(self, source: str, destination: str, *, overwrite: bool = False) -> None:
        """Copy inside the primary and inside each mirror."""
        run_sync(self._copying(source, destination, overwrite))

    async def copy_async(self, source: str, destination: str, *, overwrite: bool = False) -> None:
        """Async version of [`copy`][sqlalchemy_obstore.composite.MirrorBackend.copy]."""
        await run_async(self._copying(source, destination, overwrite))

    def _deleting(self, paths: str | Sequence[str]) -> Plan[None]:
        """Every store is tried; then the primary's error is raised, or a mirror's when
        the mirror is strict (a lenient mirror's is logged and counted)."""
        _confined(self, paths, "delete")
        backends = [self.primary, *self.mirrors]
        deletes = [Call(b.delete, b.delete_async, paths) for b in backends]
        outcomes = yield Gather(deletes, fail_fast=False)
        errors = [(b, o) for b, o in zip(backends, outcomes, strict=True) if o is not None]
        for backend, exc in errors:
            if backend is self.primary or self.strict or not _storage(exc):
                raise exc
        for backend, exc in errors:
            self._mirror_failed(backend, paths if isinstance(paths, str) else "...", exc)

    def delete(self, paths: str | Sequence[str]) -> None:
        """Delete from every store.

        Every store is tried; then the primary's error is raised, or a mirror's when
        the mirror is strict (a lenient mirror's is logged and counted).
        """
        run_sync(self._deleting(paths))

    async def delete_async(self, paths: str | Sequence[str]) -> None:
        """Async version of [`delete`][sqlalchemy_obstore.composite.MirrorBackend.delete]."""
        await run_async(self._deleting(paths))


def _succeeded(backends: Sequence[Backend], outcomes: Sequence[Any]) -> list[Backend]:
    return [b for b, o in zip(backends, outcomes, strict=True) if not isinstance(o, BaseException)]


def _storage(exc: BaseException) -> bool:
    return isinstance(exc, StorageError)


# -- overlay ----------------------------------------------------------------------------------
class OverlayBackend(DelegatingBackend):
    """Reads through to a read-only base backend; writes and deletes go to an overlay.

    An object written through the overlay hides the base object at the same path. A
    deleted base object is recorded as a *tombstone*, a small object at
    `.overlay-tombstones/<path>` in the overlay store (below the overlay's prefix when it
    has one, `<prefix>/.overlay-tombstones/<path>`, so that the overlay only ever writes
    and deletes under its prefix): from then on `head` and the reads
    raise `ObjectNotFoundError` and listings skip it, also after a restart (the
    tombstones live in the store). Writing the path again removes its tombstone. The
    base backend is never written to (a `put_buffer` is a create-only `put` to the
    overlay). Reads come from the overlay when it holds the object, else from the base.

    New keys are made with the overlay's prefix, key layout and checksum algorithm. The
    overlay's prefix must be the base's or contain it (or the overlay has none): the
    overlay writes and deletes the base's paths, and a backend writes and deletes only
    under its prefix (a path outside the overlay's raises `InvalidObjectPathError`
    before any store is touched).

    Args:
        key: The key columns store (usually the production key).
        base: The read-only backend (for example production's bucket, with read-only
            credentials).
        overlay: The backend that receives every write and delete.

    Raises:
        ConfigurationError: If the overlay's prefix does not contain the base's.

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
        require_contains(
            overlay, base, "the overlay writes and deletes the base's objects at their paths"
        )
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
    def never_waits(self) -> bool:
        """Whether neither store waits for I/O."""
        return self.base.never_waits and self.overlay.never_waits

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
    @property
    def _tombstones(self) -> str:
        """Where the tombstones live: below the overlay's prefix (a backend with a prefix
        deletes only under it), else at the store's root."""
        prefix = (self.overlay.prefix or "").strip("/")
        return f"{prefix}/{TOMBSTONE_PREFIX}" if prefix else TOMBSTONE_PREFIX

    def _tombstone(self, path: str) -> str:
        return f"{self._tombstones}/{path}"

    def _hidden(self, path: str) -> bool:
        return path.startswith(self._tombstones + "/")

    def _locating(self, path: str) -> Plan[Backend]:
        """The backend holding `path` (raises ObjectNotFoundError when it is deleted)."""
        overlay = self.overlay
        if (yield Call(overlay.exists, overlay.exists_async, path)):
            return overlay
        if (yield Call(overlay.exists, overlay.exists_async, self._tombstone(path))):
            raise ObjectNotFoundError(
                f"No object at {path!r} in backend {self.key!r} (deleted in the overlay).",
                backend=self.key,
                path=path,
            )
        return self.base

    def _route(self, call: Routed, path: str | None) -> Backend:
        """Reads: the backend holding `path`; everything else: the overlay."""
        if call in _LOOKUPS and path is not None:
            return run_sync(self._locating(path))
        return self.overlay

    async def _route_async(self, call: Routed, path: str | None) -> Backend:
        if call in _LOOKUPS and path is not None:
            return await run_async(self._locating(path))
        return self.overlay

    # -- writes -------------------------------------------------------------------------------
    def _putting(self, path: str, body: UploadBody, options: dict[str, Any]) -> Plan[WriteResult]:
        _confined(self, path, "write", body)
        overlay = self.overlay
        if options["create_only"]:
            exists = yield Call(self.exists, self.exists_async, path)
            self._refuse_existing(path, False, exists)
        result = yield Call(overlay.put, overlay.put_async, path, body, **options)
        yield Call(overlay.delete, overlay.delete_async, self._tombstone(path))
        return result  # type: ignore[no-any-return]

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
        return run_sync(self._putting(path, body, options))

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
        return await run_async(self._putting(path, body, options))

    def _refuse_existing(self, destination: str, overwrite: bool, exists: bool) -> None:
        if exists and not overwrite:
            raise ObjectExistsError(
                f"An object already exists at {destination!r} in backend {self.key!r}; "
                "it was not overwritten.",
                backend=self.key,
                path=destination,
            )

    def _copying(self, source: str, destination: str, overwrite: bool) -> Plan[None]:
        _confined(self, destination, "copy to")
        overlay = self.overlay
        holder = yield from self._locating(source)
        if holder is overlay:
            yield Call(overlay.copy, overlay.copy_async, source, destination, overwrite=overwrite)
        else:  # a base object is streamed across
            exists = yield Call(self.exists, self.exists_async, destination)
            self._refuse_existing(destination, overwrite, exists)
            info = yield Call(self.base.head, self.base.head_async, source)
            yield from copying(
                self.base,
                overlay,
                source,
                size=info.size,
                attributes=_attributes_of(info),
                chunk_size=DEFAULT_CHUNK_SIZE,
                destination_path=destination,
            )
        yield Call(overlay.delete, overlay.delete_async, self._tombstone(destination))

    def copy(self, source: str, destination: str, *, overwrite: bool = False) -> None:
        """Copy into the overlay (a base object is streamed across)."""
        run_sync(self._copying(source, destination, overwrite))

    async def copy_async(self, source: str, destination: str, *, overwrite: bool = False) -> None:
        """Async version of [`copy`][sqlalchemy_obstore.composite.OverlayBackend.copy]."""
        await run_async(self._copying(source, destination, overwrite))

    def _deleting(self, paths: str | Sequence[str]) -> Plan[None]:
        overlay, batch = self.overlay, _confined(self, paths, "delete")
        yield Call(overlay.delete, overlay.delete_async, batch)
        for path in batch:
            if (yield Call(self.base.exists, self.base.exists_async, path)):
                tombstone = self._tombstone(path)
                yield Call(overlay.put, overlay.put_async, tombstone, b"", use_multipart=False)

    def delete(self, paths: str | Sequence[str]) -> None:
        """Delete from the overlay; base objects get a tombstone instead."""
        run_sync(self._deleting(paths))

    async def delete_async(self, paths: str | Sequence[str]) -> None:
        """Async version of [`delete`][sqlalchemy_obstore.composite.OverlayBackend.delete]."""
        await run_async(self._deleting(paths))

    # -- reads --------------------------------------------------------------------------------
    def iter_chunks(self, path: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
        """Stream from the overlay, else from the base unless deleted."""
        yield from self._route("get", path).iter_chunks(path, chunk_size=chunk_size)

    async def iter_chunks_async(
        self, path: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> AsyncIterator[bytes]:
        """Async version of `iter_chunks`."""
        holder = await self._route_async("get", path)
        async for chunk in holder.iter_chunks_async(path, chunk_size=chunk_size):
            yield chunk

    def _listing(self, prefix: str | None, offset: str | None) -> Plan[_Merge]:
        """The overlay's objects and tombstones under `prefix`, ready to merge with the base.

        (They are held in memory: an overlay is a sandbox's changes; the base streams.)
        """
        overlay = self.overlay
        own = yield Collect(overlay.list_objects, overlay.list_objects_async, prefix, offset=offset)
        root = self._tombstones
        tombstones = f"{root}/{prefix.strip('/')}" if prefix else root
        dead = yield Collect(overlay.list_objects, overlay.list_objects_async, tombstones)
        visible = sorted((i for i in own if not self._hidden(i.path)), key=_path_of)
        return _Merge(visible, {i.path[len(root) + 1 :] for i in dead})

    def list_objects(
        self, prefix: str | None = None, *, offset: str | None = None
    ) -> Iterator[ObjectInfo]:
        """Both stores merged by path, overlay first, deleted base objects left out.

        The overlay's objects and tombstones under `prefix` are held in memory (an
        overlay is a sandbox's changes); the base is streamed. The result is in key
        order when the base lists in key order.
        """
        merge = run_sync(self._listing(prefix, offset))
        for info in self.base.list_objects(prefix, offset=offset):
            yield from merge.feed(info)
        yield from merge.rest()

    async def list_objects_async(
        self, prefix: str | None = None, *, offset: str | None = None
    ) -> AsyncIterator[ObjectInfo]:
        """Async version of `list_objects`."""
        merge = await run_async(self._listing(prefix, offset))
        async for info in self.base.list_objects_async(prefix, offset=offset):
            for item in merge.feed(info):
                yield item
        for item in merge.rest():
            yield item

    # -- signing ------------------------------------------------------------------------------
    def _signing(
        self, paths: str | Sequence[str], method: HttpMethod, expires_in: int | float | timedelta
    ) -> Plan[str | list[str]]:
        """Each URL from the store holding its object; PUT and DELETE from the overlay."""
        signed: list[str] = []
        for path in _paths(paths):
            holder = (yield from self._locating(path)) if method in _READS else self.overlay
            url = yield Call(
                holder.sign, holder.sign_async, path, method=method, expires_in=expires_in
            )
            signed.append(url)
        return signed[0] if isinstance(paths, str) else signed

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
        return run_sync(self._signing(paths, method, expires_in))

    async def sign_async(  # type: ignore[override]
        self,
        paths: str | Sequence[str],
        *,
        method: HttpMethod = "GET",
        expires_in: int | float | timedelta = 3600,
    ) -> str | list[str]:
        """Async version of [`sign`][sqlalchemy_obstore.composite.OverlayBackend.sign]."""
        return await run_async(self._signing(paths, method, expires_in))

    def _signing_download(
        self, path: str, expires_in: int | float | timedelta
    ) -> Plan[tuple[str, float]]:
        lifetime = self.check_expiry(expires_in)  # (within both stores' limits, as `sign`)
        holder = yield from self._locating(path)
        signed = yield Call(holder.sign_download, holder.sign_download_async, path, lifetime)
        return signed  # type: ignore[no-any-return]

    def sign_download(self, path: str, expires_in: int | float | timedelta) -> tuple[str, float]:
        """Sign one download with the store holding the object, as `sign` does."""
        return run_sync(self._signing_download(path, expires_in))

    async def sign_download_async(
        self, path: str, expires_in: int | float | timedelta
    ) -> tuple[str, float]:
        """Async version of
        [`sign_download`][sqlalchemy_obstore.composite.OverlayBackend.sign_download].
        """
        return await run_async(self._signing_download(path, expires_in))


def _attributes_of(info: ObjectInfo) -> dict[str, str] | None:
    attributes = dict(info.attributes)
    if info.content_type:
        attributes["Content-Type"] = info.content_type
    return attributes or None


def _path_of(info: ObjectInfo) -> str:
    return info.path


class _Merge:
    """Merges the overlay's objects (sorted, in memory) into the base's listing, as it
    streams by: overlay objects hide base objects at the same path, tombstones hide
    deleted base objects. The result is in key order when the base lists in key order."""

    def __init__(self, own: list[ObjectInfo], gone: set[str]) -> None:
        self._pending = deque(own)
        self._seen = {info.path for info in own}
        self._gone = gone

    def feed(self, info: ObjectInfo) -> list[ObjectInfo]:
        """What to yield now that the base listed `info`."""
        if info.path in self._gone or info.path in self._seen:
            return []
        out = []
        pending = self._pending
        while pending and pending[0].path < info.path:
            out.append(pending.popleft())
        out.append(info)
        return out

    def rest(self) -> list[ObjectInfo]:
        """The overlay's objects after the base's last."""
        rest, self._pending = list(self._pending), deque()
        return rest
