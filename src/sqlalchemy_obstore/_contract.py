"""The backend contract: the `Backend` interface and the values its operations exchange.

Everything here is public through [`sqlalchemy_obstore.backends`][sqlalchemy_obstore.backends]
(import it from there): the abstract [`Backend`][sqlalchemy_obstore.backends.Backend]
every backend implements, what its operations take and return
([`ObjectInfo`][sqlalchemy_obstore.backends.ObjectInfo],
[`WriteResult`][sqlalchemy_obstore.backends.WriteResult],
[`SignedURL`][sqlalchemy_obstore.backends.SignedURL], `UploadBody`, `HttpMethod`), the
[`UrlSigner`][sqlalchemy_obstore.backends.UrlSigner] protocol and the default part size
and concurrency. It knows nothing of obstore: `ObstoreBackend` implements it in
`backends`, wrappers (composite, delegating, fault-injecting) implement it on top.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, NamedTuple, Protocol, TypeAlias, overload
from urllib.parse import quote

from ._errors import (
    InvalidExpiryError,
    ObjectNotFoundError,
    UnsupportedOperationError,
    redact_url,
)
from ._keys import KeyFunction
from ._validation import UploadPolicy

__all__ = (
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_MAX_CONCURRENCY",
    "Backend",
    "HttpMethod",
    "ObjectInfo",
    "SignedURL",
    "UploadBody",
    "UrlSigner",
    "WriteResult",
)

DEFAULT_CHUNK_SIZE = 5 * 1024 * 1024
"""Default multipart part size and streaming read size (5 MiB, the S3 minimum part)."""
DEFAULT_MAX_CONCURRENCY = 4
"""Default number of multipart parts uploaded at once.

Each part in flight is held in memory (`chunk_size`, 5 MiB by default), so this bounds a
streamed upload's memory: 4 parts keep it near 20 MiB whatever the file's size (obstore's
own default of 12 costs about 60 MiB). Raise it per save or column for more throughput
on high-latency links.
"""
HttpMethod: TypeAlias = Literal["GET", "PUT", "HEAD", "DELETE"]
UploadBody: TypeAlias = "bytes | bytearray | memoryview | Iterator[Any] | AsyncIterator[Any]"
"""What a backend `put` accepts: a buffer, or a (sync or async) iterator of buffers."""

_SIGNING_STORES = "S3 (and S3-compatible), GCS and Azure"
_ATTRIBUTE_KEYS = frozenset(
    {
        "Content-Type",
        "Content-Disposition",
        "Content-Encoding",
        "Content-Language",
        "Cache-Control",
        "Storage-Class",
    }
)


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a store knows about one object.

    Attributes:
        path: The object key.
        size: Size in bytes.
        last_modified: When the store last wrote the object.
        etag: The store's entity tag, if it reports one.
        version: The store's version id, if versioning is on.
        content_type: The stored `Content-Type`, when the store keeps attributes and the
            information was requested (`head` does; `list_objects` does not).
        attributes: Every other stored attribute and user metadata entry.
    """

    path: str
    size: int
    last_modified: datetime
    etag: str | None = None
    version: str | None = None
    content_type: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)

    @property
    def metadata(self) -> dict[str, str]:
        """User metadata: the attributes that are not standard HTTP object attributes."""
        return {k: v for k, v in self.attributes.items() if k not in _ATTRIBUTE_KEYS}


class WriteResult(NamedTuple):
    """The outcome of a successful put (immutable; a named tuple, cheap to build per put).

    Attributes:
        etag: The entity tag the store assigned, if any.
        version: The version id the store assigned, if any.
    """

    etag: str | None
    version: str | None


@dataclass(frozen=True, slots=True)
class SignedURL:
    """A signed URL together with what a client must send along with it.

    `str()` is the URL itself (to hand to the client); `repr()` shows it with its
    signature, credential and token values redacted, so logging the object leaks nothing.

    Attributes:
        url: The signed URL.
        method: The HTTP method the URL is valid for.
        headers: Headers the client must send (for example Azure's `x-ms-blob-type` on
            a signed PUT).
        expires_at: When the signature stops being accepted.

    Example:
        >>> from datetime import datetime, timezone
        >>> signed = SignedURL(
        ...     "https://b.s3.amazonaws.com/k?X-Amz-Signature=abc", "PUT", {},
        ...     datetime(2030, 1, 1, tzinfo=timezone.utc),
        ... )
        >>> signed
        SignedURL(method='PUT', url='https://b.s3.amazonaws.com/k?X-Amz-Signature=<redacted>', expires_at='2030-01-01T00:00:00+00:00')
    """  # noqa: E501

    url: str
    method: str
    headers: Mapping[str, str]
    expires_at: datetime

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        # Every query value goes (signature, credential, security token, SAS fields): the
        # URL is a bearer credential until it expires.
        return (
            f"SignedURL(method={self.method!r}, url={redact_url(self.url)!r}, "
            f"expires_at={self.expires_at.isoformat()!r})"
        )


class UrlSigner(Protocol):
    """Signs URLs in place of a backend's store.

    [`ObstoreBackend`][sqlalchemy_obstore.ObstoreBackend] takes two: its `url_signer`
    signs every URL of a store that cannot sign itself (local files, memory); S3, GCS and
    Azure sign natively and never ask it. Its `read_signer` signs the download (`GET`
    and `HEAD`) URLs of any store, such as a
    [`CloudFrontSigner`][sqlalchemy_obstore.cloudfront.CloudFrontSigner] that sends
    downloads through a CDN while uploads stay signed by the store. The web integrations
    provide an HMAC implementation together with the route that serves the signed URLs,
    so that development setups sign exactly like production.

    A signer that limits the lifetime of its URLs says so in a `max_expires_in`
    attribute (a `timedelta`), as both of the library's signers do; the backend then
    refuses a longer lifetime before asking it.
    """

    def sign_url(self, backend: str, path: str, *, method: str, expires_in: timedelta) -> str:
        """Return a URL that lets its holder do `method` on `path` until it expires."""
        ...


def _expiry_seconds(expires_in: int | float | timedelta) -> float:
    seconds = expires_in.total_seconds() if isinstance(expires_in, timedelta) else expires_in
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise InvalidExpiryError(
            f"expires_in must be seconds or a timedelta, not {type(expires_in).__name__}."
        )
    if seconds <= 0:
        raise InvalidExpiryError(f"expires_in must be positive, got {seconds:g} seconds.")
    return float(seconds)


def _one_part(
    data: bytes | bytearray, attributes: Mapping[str, str] | None, use_multipart: bool | None
) -> dict[str, Any]:
    """The `put` keywords of a `put_buffer`: `data` as one create-only part."""
    return {
        "attributes": attributes,
        "create_only": True,
        "use_multipart": use_multipart,
        "chunk_size": max(len(data), DEFAULT_CHUNK_SIZE),
    }


_SIGNING_METHODS = ("sign", "sign_async", "check_expiry")
"""What `Backend.sign_download` is built on: overriding one resets it to the default."""
_SHORTCUTS = (
    ("put_buffer", ("put",)),
    ("put_buffer_async", ("put_async",)),
    ("sign_download", _SIGNING_METHODS),
    ("sign_download_async", _SIGNING_METHODS),
)
"""Each shortcut of the backend contract, and the methods whose override resets it."""


class Backend(ABC):
    """The interface of every backend; see [`ObstoreBackend`][sqlalchemy_obstore.ObstoreBackend].

    Subclasses implement the abstract operations; the non-abstract methods here are
    shared conveniences built on them. Custom backends (mirrors, overlays, wrappers
    for fault injection) subclass this.

    Attributes:
        key: The name columns store to find this backend.
        prefix: Key prefix under which this backend creates new objects. It bounds
            what the backend writes and deletes (`ObstoreBackend` refuses any other
            path with `InvalidObjectPathError`); reads may name any path.
        public_base_url: Base URL under which objects are publicly readable, if any.
        key_function: How new keys are laid out below the prefix.
        checksum_algorithm: `hashlib` algorithm for content checksums, or `None`.
        policy: The default upload policy of this backend (columns and `save(policy=)`
            layer theirs on top, field by field), or `None`.
        url_signer: Signs URLs where the store cannot (local files, memory), or `None`.
    """

    key: str
    prefix: str | None
    public_base_url: str | None
    key_function: KeyFunction | None
    checksum_algorithm: str | None
    policy: UploadPolicy | None = None
    url_signer: UrlSigner | None = None

    # -- capabilities -------------------------------------------------------------------
    @property
    @abstractmethod
    def supports_signing(self) -> bool:
        """Whether the store can create signed URLs."""

    @property
    def supports_native_signing(self) -> bool:
        """Whether the store itself signs URLs (S3, GCS, Azure); else a URL signer does."""
        return False

    @property
    @abstractmethod
    def supports_attributes(self) -> bool:
        """Whether the store keeps content type, disposition and user metadata."""

    @property
    def max_sign_expiry(self) -> timedelta | None:
        """The longest lifetime a signed URL may have, or `None` for no limit."""
        return None

    @property
    def never_waits(self) -> bool:
        """Whether every operation completes without waiting for I/O (an in-process store).

        The library then makes several of this backend's operations one after another
        rather than as concurrent tasks (a flush's uploads, say), which costs less and
        changes nothing else. `False` unless the backend knows better (a memory store);
        a wrapper answers for the backends it wraps.
        """
        return False

    @property
    def upload_headers(self) -> Mapping[str, str]:
        """Headers a client must send with a signed PUT request."""
        return {}

    def describe(self) -> str:
        """A one-line, secret-free description of the store (for logs and CLIs)."""
        return type(self).__name__

    def public_url(self, path: str) -> str | None:
        """The public URL of `path`, when `public_base_url` is set; else `None`."""
        if not self.public_base_url:
            return None
        return self.public_base_url.rstrip("/") + "/" + quote(path, safe="/~")

    def check_expiry(self, expires_in: int | float | timedelta) -> timedelta:
        """Validate a signed-URL lifetime against this store's limit.

        Raises:
            InvalidExpiryError: If it is not positive or exceeds `max_sign_expiry`.
        """
        seconds = _expiry_seconds(expires_in)
        limit = self.max_sign_expiry
        if limit is not None and seconds > limit.total_seconds():
            raise InvalidExpiryError(
                f"A signed URL of backend {self.key!r} may live at most "
                f"{int(limit.total_seconds())} seconds ({limit}); {seconds:g} seconds were "
                "requested. Sign again when the URL is about to expire instead.",
                backend=self.key,
            )
        return timedelta(seconds=seconds)

    def unsupported(self, operation: str, path: str | None = None) -> UnsupportedOperationError:
        """Build the error for an operation this store cannot do."""
        hint = ""
        if operation == "Signing URLs":
            hint = (
                " Local files sign through an HmacUrlSigner served by the library's route: "
                "give the web integration a signing_secret (Litestar ObstoreConfig, "
                "Starlette storage_routes), or pass url_signer=HmacUrlSigner(secret) to "
                "the backend."
            )
        return UnsupportedOperationError(
            f"{operation} is not supported by {self.describe()}; "
            f"stores that can: {_SIGNING_STORES}.{hint}",
            backend=self.key,
            path=path,
        )

    # -- writes -------------------------------------------------------------------------
    @abstractmethod
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
        """Write `body` to `path`.

        Args:
            path: The object key.
            body: A buffer, or an iterator of buffers (streamed as a multipart upload).
            attributes: Content type, disposition, cache control and user metadata;
                silently dropped where the store keeps none (local files).
            create_only: Fail with `ObjectExistsError` instead of overwriting.
            use_multipart: Force or forbid a multipart upload; by default large buffers
                and every iterator use one.
            chunk_size: Multipart part size (preferred: stores with a limit on parts
                get larger parts when the body's known length needs them, see
                [`part_size`][sqlalchemy_obstore.backends.part_size]).
            max_concurrency: Parts uploaded at once.

        Raises:
            InvalidObjectPathError: If `path` is malformed or outside the backend's
                prefix (before anything is sent).
            TooManyPartsError: If the body does not fit in one multipart upload of the
                store: before anything is sent when its length is known (a buffer, a
                [`SizedBody`][sqlalchemy_obstore.backends.SizedBody]), else when the
                stream passes the limit (the upload is aborted).
        """

    @abstractmethod
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
        """Async version of [`put`][sqlalchemy_obstore.backends.Backend.put].

        Also takes async iterators.
        """

    def put_buffer(
        self,
        path: str,
        data: bytes | bytearray,
        attributes: Mapping[str, str] | None = None,
        use_multipart: bool | None = None,
    ) -> WriteResult:
        """Write a buffer that goes up in one request to a new `path`, never overwriting.

        What `FileObject.save` calls for content of one part that needs no checks while
        it is read (no upload policy, no declared size): the same as
        `put(path, data, attributes=attributes, create_only=True, use_multipart=...)`
        with the whole buffer as one part, which is what this default does. A backend
        may do it in fewer steps (`ObstoreBackend` does). A subclass that overrides
        `put` but not `put_buffer` gets this default, so its `put` sees every write
        (and likewise for `put_async` and `put_buffer_async`).

        Args:
            path: The object key.
            data: The content, at most one part.
            attributes: As for `put`.
            use_multipart: As for `put` (a create-only put is one request anyway).

        Raises:
            ObjectExistsError: If an object exists at `path`.
        """
        return self.put(path, data, **_one_part(data, attributes, use_multipart))

    async def put_buffer_async(
        self,
        path: str,
        data: bytes | bytearray,
        attributes: Mapping[str, str] | None = None,
        use_multipart: bool | None = None,
    ) -> WriteResult:
        """Async version of [`put_buffer`][sqlalchemy_obstore.backends.Backend.put_buffer]."""
        return await self.put_async(path, data, **_one_part(data, attributes, use_multipart))

    @abstractmethod
    def copy(self, source: str, destination: str, *, overwrite: bool = False) -> None:
        """Copy an object within the store; refuses to overwrite unless told to.

        The destination lies under the backend's prefix, as for every write (the
        source may lie anywhere).
        """

    @abstractmethod
    async def copy_async(self, source: str, destination: str, *, overwrite: bool = False) -> None:
        """Async version of [`copy`][sqlalchemy_obstore.backends.Backend.copy]."""

    @abstractmethod
    def delete(self, paths: str | Sequence[str]) -> None:
        """Delete one object or many. Deleting a missing object is not an error.

        Only paths under the backend's prefix are deleted (`InvalidObjectPathError`
        for any other, before anything is deleted).
        """

    @abstractmethod
    async def delete_async(self, paths: str | Sequence[str]) -> None:
        """Async version of [`delete`][sqlalchemy_obstore.backends.Backend.delete]."""

    # -- reads --------------------------------------------------------------------------
    @abstractmethod
    def head(self, path: str) -> ObjectInfo:
        """Return the object's metadata and attributes.

        Raises:
            ObjectNotFoundError: If the object does not exist.
        """

    @abstractmethod
    async def head_async(self, path: str) -> ObjectInfo:
        """Async version of [`head`][sqlalchemy_obstore.backends.Backend.head]."""

    def exists(self, path: str) -> bool:
        """Whether an object exists at `path`."""
        try:
            self.head(path)
        except ObjectNotFoundError:
            return False
        return True

    async def exists_async(self, path: str) -> bool:
        """Async version of [`exists`][sqlalchemy_obstore.backends.Backend.exists]."""
        try:
            await self.head_async(path)
        except ObjectNotFoundError:
            return False
        return True

    @abstractmethod
    def get_bytes(self, path: str) -> bytes:
        """Read a whole object into memory."""

    @abstractmethod
    async def get_bytes_async(self, path: str) -> bytes:
        """Async version of [`get_bytes`][sqlalchemy_obstore.backends.Backend.get_bytes]."""

    @abstractmethod
    def get_range(self, path: str, start: int, length: int) -> bytes:
        """Read `length` bytes starting at `start` (fewer at the end of the object)."""

    @abstractmethod
    async def get_range_async(self, path: str, start: int, length: int) -> bytes:
        """Async version of [`get_range`][sqlalchemy_obstore.backends.Backend.get_range]."""

    @abstractmethod
    def iter_chunks(self, path: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
        """Stream an object in chunks of about `chunk_size` bytes; memory stays bounded."""

    @abstractmethod
    def iter_chunks_async(
        self, path: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> AsyncIterator[bytes]:
        """Async version of [`iter_chunks`][sqlalchemy_obstore.backends.Backend.iter_chunks]."""

    @abstractmethod
    def list_objects(
        self, prefix: str | None = None, *, offset: str | None = None
    ) -> Iterator[ObjectInfo]:
        """List objects under `prefix`, page by page, in key order where the store sorts.

        Args:
            prefix: Only keys under this prefix (a directory-like prefix; `a/b` matches
                `a/b/c` but not `a/bc`).
            offset: Only keys that sort after this one.
        """

    @abstractmethod
    def list_objects_async(
        self, prefix: str | None = None, *, offset: str | None = None
    ) -> AsyncIterator[ObjectInfo]:
        """Async version of [`list_objects`][sqlalchemy_obstore.backends.Backend.list_objects]."""

    # -- signing ------------------------------------------------------------------------
    @overload
    def sign(  # type: ignore[overload-overlap]  # a str is also a Sequence[str]
        self, paths: str, *, method: HttpMethod = ..., expires_in: int | float | timedelta = ...
    ) -> str: ...
    @overload
    def sign(
        self,
        paths: Sequence[str],
        *,
        method: HttpMethod = ...,
        expires_in: int | float | timedelta = ...,
    ) -> list[str]: ...
    def sign(
        self,
        paths: str | Sequence[str],
        *,
        method: HttpMethod = "GET",
        expires_in: int | float | timedelta = 3600,
    ) -> str | list[str]:
        """Create signed URLs for one path or many in one call.

        Raises:
            UnsupportedOperationError: If the store cannot sign (local, memory).
            InvalidExpiryError: If `expires_in` exceeds the store's limit.
        """
        raise self.unsupported("Signing URLs", paths if isinstance(paths, str) else None)

    @overload
    async def sign_async(  # type: ignore[overload-overlap]  # a str is also a Sequence[str]
        self, paths: str, *, method: HttpMethod = ..., expires_in: int | float | timedelta = ...
    ) -> str: ...
    @overload
    async def sign_async(
        self,
        paths: Sequence[str],
        *,
        method: HttpMethod = ...,
        expires_in: int | float | timedelta = ...,
    ) -> list[str]: ...
    async def sign_async(
        self,
        paths: str | Sequence[str],
        *,
        method: HttpMethod = "GET",
        expires_in: int | float | timedelta = 3600,
    ) -> str | list[str]:
        """Async version of [`sign`][sqlalchemy_obstore.backends.Backend.sign]."""
        raise self.unsupported("Signing URLs", paths if isinstance(paths, str) else None)

    def sign_download(self, path: str, expires_in: int | float | timedelta) -> tuple[str, float]:
        """Sign one download (GET) URL: the URL and its lifetime in seconds, checked.

        The per-file step of [`FileObject.sign`][sqlalchemy_obstore.file_object.FileObject.sign]
        (which caches the URL for half of that lifetime). The same URL as
        `sign(path, expires_in=check_expiry(expires_in))`, which is what this default
        does; a backend may do it with less work (`ObstoreBackend` does), and wrappers
        forward it. A subclass overriding `sign`, `sign_async` or `check_expiry` but
        neither of these two gets this default, so its own methods sign every URL.

        Raises:
            UnsupportedOperationError: If the store cannot sign (local, memory).
            InvalidExpiryError: If the lifetime is not positive or exceeds the limit.
        """
        lifetime = self.check_expiry(expires_in)
        return self.sign(path, expires_in=lifetime), lifetime.total_seconds()

    async def sign_download_async(
        self, path: str, expires_in: int | float | timedelta
    ) -> tuple[str, float]:
        """Async version of
        [`sign_download`][sqlalchemy_obstore.backends.Backend.sign_download].
        """
        lifetime = self.check_expiry(expires_in)
        return await self.sign_async(path, expires_in=lifetime), lifetime.total_seconds()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A subclass that writes, signs or checks lifetimes its own way, without saying
        # how it takes the matching shortcut (`put_buffer`, `sign_download`), takes the
        # shortcut through its own methods (not a parent's that would bypass them).
        own = cls.__dict__
        for shortcut, methods in _SHORTCUTS:
            if shortcut not in own and any(name in own for name in methods):
                setattr(cls, shortcut, getattr(Backend, shortcut))
