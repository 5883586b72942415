"""A backend that wraps another and forwards every capability and operation to it.

The base of the wrappers: [`MirrorBackend`][sqlalchemy_obstore.composite.MirrorBackend],
[`OverlayBackend`][sqlalchemy_obstore.composite.OverlayBackend] and
[`FaultInjectingBackend`][sqlalchemy_obstore.testing.FaultInjectingBackend]. Each keeps
only what it does differently; everything else goes to the wrapped backend, `inner`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any, Literal, TypeAlias

from .backends import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MAX_CONCURRENCY,
    Backend,
    HttpMethod,
    ObjectInfo,
    UploadBody,
    WriteResult,
)

__all__ = ("Call", "DelegatingBackend", "put_kwargs")

Call: TypeAlias = Literal["put", "copy", "delete", "head", "get", "list", "sign"]
"""The kinds of call a `DelegatingBackend` routes (`get` covers every read of content)."""


def put_kwargs(
    attributes: Mapping[str, str] | None,
    create_only: bool,
    use_multipart: bool | None,
    chunk_size: int,
    max_concurrency: int,
) -> dict[str, Any]:
    """A put's keyword arguments, to pass on to another backend's put."""
    return {
        "attributes": attributes,
        "create_only": create_only,
        "use_multipart": use_multipart,
        "chunk_size": chunk_size,
        "max_concurrency": max_concurrency,
    }


def _single(paths: str | Sequence[str]) -> str | None:
    return paths if isinstance(paths, str) else None


class DelegatingBackend(Backend):
    """Wraps one backend, `inner`, and forwards every capability and operation to it.

    The key layout, prefix, public base URL, checksum algorithm, policy and URL signer
    are the inner backend's, taken once at construction. Every operation asks `_route`
    for the backend that serves it (`inner` unless a subclass decides otherwise) when it
    is called: the coroutines ask `_route_async`, the async iterators `_route`. A put's
    body passes through `_wrap_body`; `put_buffer` is routed as a `"put"` and its buffer
    passed on as it is. `exists` is answered by `head`, as for every backend.

    Args:
        key: The key columns store.
        inner: The wrapped backend.
    """

    def __init__(self, key: str, inner: Backend) -> None:
        self.key = key
        self.inner = inner
        self.prefix = inner.prefix
        self.public_base_url = inner.public_base_url
        self.key_function = inner.key_function
        self.checksum_algorithm = inner.checksum_algorithm
        self.policy = inner.policy
        self.url_signer = inner.url_signer

    # -- hooks ------------------------------------------------------------------------------------
    def _route(self, call: Call, path: str | None) -> Backend:
        """The backend that serves `call` on `path` (a single path, else `None`)."""
        return self.inner

    async def _route_async(self, call: Call, path: str | None) -> Backend:
        """Async version of `_route`, for the async operations."""
        return self._route(call, path)

    def _wrap_body(self, body: UploadBody, path: str) -> UploadBody:
        """The body handed to the routed backend's put."""
        return body

    # -- capabilities -----------------------------------------------------------------------------
    @property
    def supports_signing(self) -> bool:
        """Whether the inner backend can sign URLs."""
        return self.inner.supports_signing

    @property
    def supports_native_signing(self) -> bool:
        """Whether the inner backend's store signs URLs itself."""
        return self.inner.supports_native_signing

    @property
    def supports_attributes(self) -> bool:
        """Whether the inner backend keeps object attributes."""
        return self.inner.supports_attributes

    @property
    def max_sign_expiry(self) -> timedelta | None:
        """The inner backend's longest signed-URL lifetime."""
        return self.inner.max_sign_expiry

    @property
    def never_waits(self) -> bool:
        """Whether the inner backend never waits for I/O."""
        return self.inner.never_waits

    @property
    def upload_headers(self) -> Mapping[str, str]:
        """The inner backend's headers for signed PUTs."""
        return self.inner.upload_headers

    def describe(self) -> str:
        """The inner backend's description, without secrets."""
        return self.inner.describe()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(key={self.key!r}, inner={self.inner!r})"

    # -- writes -----------------------------------------------------------------------------------
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
        """Write with the inner backend."""
        options = put_kwargs(attributes, create_only, use_multipart, chunk_size, max_concurrency)
        return self._route("put", path).put(path, self._wrap_body(body, path), **options)

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
        """Async version of `put`."""
        options = put_kwargs(attributes, create_only, use_multipart, chunk_size, max_concurrency)
        backend = await self._route_async("put", path)
        return await backend.put_async(path, self._wrap_body(body, path), **options)

    def put_buffer(
        self,
        path: str,
        data: bytes | bytearray,
        attributes: Mapping[str, str] | None = None,
        use_multipart: bool | None = None,
    ) -> WriteResult:
        """Write a buffer with the inner backend's `put_buffer` (routed as a `put`)."""
        return self._route("put", path).put_buffer(path, data, attributes, use_multipart)

    async def put_buffer_async(
        self,
        path: str,
        data: bytes | bytearray,
        attributes: Mapping[str, str] | None = None,
        use_multipart: bool | None = None,
    ) -> WriteResult:
        """Async version of `put_buffer`."""
        backend = await self._route_async("put", path)
        return await backend.put_buffer_async(path, data, attributes, use_multipart)

    def copy(self, source: str, destination: str, *, overwrite: bool = False) -> None:
        """Copy inside the inner backend."""
        self._route("copy", source).copy(source, destination, overwrite=overwrite)

    async def copy_async(self, source: str, destination: str, *, overwrite: bool = False) -> None:
        """Async version of `copy`."""
        backend = await self._route_async("copy", source)
        await backend.copy_async(source, destination, overwrite=overwrite)

    def delete(self, paths: str | Sequence[str]) -> None:
        """Delete from the inner backend."""
        self._route("delete", _single(paths)).delete(paths)

    async def delete_async(self, paths: str | Sequence[str]) -> None:
        """Async version of `delete`."""
        await (await self._route_async("delete", _single(paths))).delete_async(paths)

    # -- reads ------------------------------------------------------------------------------------
    def head(self, path: str) -> ObjectInfo:
        """The inner backend's `head`."""
        return self._route("head", path).head(path)

    async def head_async(self, path: str) -> ObjectInfo:
        """Async version of `head`."""
        return await (await self._route_async("head", path)).head_async(path)

    def get_bytes(self, path: str) -> bytes:
        """Read from the inner backend."""
        return self._route("get", path).get_bytes(path)

    async def get_bytes_async(self, path: str) -> bytes:
        """Async version of `get_bytes`."""
        return await (await self._route_async("get", path)).get_bytes_async(path)

    def get_range(self, path: str, start: int, length: int) -> bytes:
        """Read a range from the inner backend."""
        return self._route("get", path).get_range(path, start, length)

    async def get_range_async(self, path: str, start: int, length: int) -> bytes:
        """Async version of `get_range`."""
        return await (await self._route_async("get", path)).get_range_async(path, start, length)

    def iter_chunks(self, path: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
        """Stream from the inner backend (routed when called, not when first iterated)."""
        return self._route("get", path).iter_chunks(path, chunk_size=chunk_size)

    def iter_chunks_async(
        self, path: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> AsyncIterator[bytes]:
        """Async version of `iter_chunks` (routed with the sync `_route`, when called)."""
        return self._route("get", path).iter_chunks_async(path, chunk_size=chunk_size)

    def list_objects(
        self, prefix: str | None = None, *, offset: str | None = None
    ) -> Iterator[ObjectInfo]:
        """List the inner backend."""
        return self._route("list", prefix).list_objects(prefix, offset=offset)

    def list_objects_async(
        self, prefix: str | None = None, *, offset: str | None = None
    ) -> AsyncIterator[ObjectInfo]:
        """Async version of `list_objects` (routed with the sync `_route`, when called)."""
        return self._route("list", prefix).list_objects_async(prefix, offset=offset)

    # -- signing ----------------------------------------------------------------------------------
    def sign(  # type: ignore[override]
        self,
        paths: str | Sequence[str],
        *,
        method: HttpMethod = "GET",
        expires_in: int | float | timedelta = 3600,
    ) -> str | list[str]:
        """Sign with the inner backend."""
        backend = self._route("sign", _single(paths))
        return backend.sign(paths, method=method, expires_in=expires_in)

    async def sign_async(  # type: ignore[override]
        self,
        paths: str | Sequence[str],
        *,
        method: HttpMethod = "GET",
        expires_in: int | float | timedelta = 3600,
    ) -> str | list[str]:
        """Async version of `sign`."""
        backend = await self._route_async("sign", _single(paths))
        return await backend.sign_async(paths, method=method, expires_in=expires_in)

    def sign_download(self, path: str, expires_in: int | float | timedelta) -> tuple[str, float]:
        """Sign one download with the inner backend (routed as `sign`)."""
        return self._route("sign", path).sign_download(path, expires_in)

    async def sign_download_async(
        self, path: str, expires_in: int | float | timedelta
    ) -> tuple[str, float]:
        """Async version of `sign_download`."""
        backend = await self._route_async("sign", path)
        return await backend.sign_download_async(path, expires_in)
