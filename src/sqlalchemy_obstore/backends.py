"""Storage backends: named obstore stores with every operation, sync and async.

A backend is the only place that talks to obstore. It knows its key (what columns store),
the store behind it (S3, GCS, Azure, local files, memory), an optional key prefix and
public base URL, and what the store can do. Every operation exists as a pair: `put` /
`put_async`, `get_bytes` / `get_bytes_async`, ... The sync twin uses obstore's native
sync call, the async twin obstore's native async call; neither runs an event loop or a
thread pool. obstore's errors are translated into this package's
[errors][sqlalchemy_obstore.errors] at this boundary, with the original as `__cause__`.

This module is the public home of the backend API. `ObstoreBackend` is defined here;
the contract it implements (`Backend` and the values its operations exchange) lives in
`_contract`, store construction from a URL and keywords in `_stores`, the translation
of obstore's errors in `_store_errors`, and the upload and download body helpers in
`_streams`; import every public name from here.

Example:
    >>> from sqlalchemy_obstore import ObstoreBackend
    >>> backend = ObstoreBackend("uploads", "memory://")
    >>> backend.put("docs/a.txt", b"hello").etag is not None
    True
    >>> backend.get_bytes("docs/a.txt")
    b'hello'
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Coroutine,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import suppress
from datetime import timedelta
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Any,
    Concatenate,
    ParamSpec,
    TypeAlias,
    cast,
    overload,
)

from obstore import exceptions as obs_errors

from ._body import (
    PART_LIMITS,
    PartCount,
    PartLimits,
    SizedBody,
    close_body,
    known_length,
    part_size,
)
from ._contract import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MAX_CONCURRENCY,
    Backend,
    ObjectInfo,
    SignedURL,
    UploadBody,
    UrlSigner,
    WriteResult,
)
from ._contract import HttpMethod as HttpMethod  # public here too, as before
from ._fork import obs  # obstore's functions; refused in a forked child
from ._local import LocalRoot, inode_of
from ._logging import library_logger
from ._prefixes import check_within, managed_prefix
from ._store_errors import translate, translated
from ._stores import (
    has_static_credentials,
    open_store,
    signing_obstacle,
    signs_natively,
    store_config,
    store_kind,
    store_repr,
)
from ._streams import (
    ABORT_WAIT_SECONDS,
    AS_THEY_COME,
    Abortable,
    Pieces,
    PulledInAThread,
    async_chunks,
    drained,
    multipart_possible,
    retrieve,
    unchanged,
)
from ._telemetry import COUNT, EXPIRES_IN, METHOD, SIZE, Facts, traced
from ._url_signer import development_signer
from .errors import (
    ConfigurationError,
    InvalidExpiryError,
    InvalidObjectPathError,
    ObjectNotFoundError,
    TooManyPartsError,
    UnsupportedOperationError,
)
from .keys import KeyFunction, join_key
from .validation import UploadPolicy

if TYPE_CHECKING:
    from obstore import Attributes, GetOptions, ObjectMeta, SignCapableStore
    from obstore.store import ObjectStore

__all__ = (
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_MAX_CONCURRENCY",
    "PART_LIMITS",
    "Backend",
    "ObjectInfo",
    "ObstoreBackend",
    "PartLimits",
    "SignedURL",
    "SizedBody",
    "UploadBody",
    "UrlSigner",
    "WriteResult",
    "part_size",
)

_logger = library_logger("sqlalchemy_obstore.backends")
_OBSTORE_CHUNK_SIZE = 5 * 1024 * 1024  # obstore's own defaults for put
_OBSTORE_MAX_CONCURRENCY = 12


def _info(meta: ObjectMeta, attributes: Mapping[str, str] | None = None) -> ObjectInfo:
    attrs = dict(attributes or {})
    content_type = attrs.pop("Content-Type", None)
    return ObjectInfo(
        path=meta["path"],
        size=meta["size"],
        last_modified=meta["last_modified"],
        etag=meta.get("e_tag"),
        version=meta.get("version"),
        content_type=content_type,
        attributes=attrs,
    )


_READ_METHODS = frozenset({"GET", "HEAD"})
"""The methods a backend's `read_signer` signs."""


def _signer_limit(signer: UrlSigner) -> timedelta | None:
    """The longest lifetime `signer` gives a URL, when it says (its `max_expires_in`)."""
    limit = getattr(signer, "max_expires_in", None)
    return limit if isinstance(limit, timedelta) else None


_SEVEN_DAYS = timedelta(days=7)


_STAGING_NAME = re.compile(r"#\d+$")
"""obstore's local staging files (`<key>#<n>`, an upload in progress): not objects."""
_VANISHED = (FileNotFoundError, obs_errors.NotFoundError, ValueError)
"""A listed file deleted meanwhile, or named so that obstore maps it to no key."""


def _upload_facts(
    backend: ObstoreBackend, path: str, body: object, *args: Any, **kwargs: Any
) -> tuple[Facts, str]:
    """A `put`'s span attributes: the size, when known before the upload."""
    size = known_length(body)
    return ({} if size is None else {SIZE: size}), path


def _delete_facts(backend: ObstoreBackend, paths: str | Sequence[str]) -> tuple[Facts, str | None]:
    if isinstance(paths, str):
        return {COUNT: 1}, paths
    return {COUNT: len(paths)}, paths[0] if len(paths) == 1 else None


def _sign_facts(
    backend: ObstoreBackend,
    paths: str | Sequence[str],
    *,
    method: str = "GET",
    expires_in: int | float | timedelta = 3600,
) -> tuple[Facts, str | None]:
    facts, path = _delete_facts(backend, paths)
    seconds = expires_in.total_seconds() if isinstance(expires_in, timedelta) else expires_in
    return {**facts, METHOD: method, EXPIRES_IN: seconds}, path


def _sign_download_facts(
    backend: ObstoreBackend, path: str, expires_in: int | float | timedelta
) -> tuple[Facts, str | None]:
    return _sign_facts(backend, path, expires_in=expires_in)


_P = ParamSpec("_P")
_new_tuple = tuple.__new__
_Write: TypeAlias = "Callable[Concatenate[ObstoreBackend, str, _P], WriteResult]"
_AsyncWrite: TypeAlias = (
    "Callable[Concatenate[ObstoreBackend, str, _P], Coroutine[Any, Any, WriteResult]]"
)


def _body_of(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> object:
    """The body of a write's arguments (after the path), to close when it is refused."""
    return args[0] if args else kwargs.get("body", kwargs.get("data"))


def _confined_write(method: _Write[_P]) -> _Write[_P]:
    """Keep a write inside the backend's prefix and, on local files, inside the root.

    Before any I/O: the key is well-formed and under the prefix (`_writable`; a
    refused body is closed). On local files (see `_local`), before: no symbolic link on
    the key's path; after: the object now at the key, reached without links, is the
    one obstore wrote.
    """

    @functools.wraps(method)
    def write(
        self: ObstoreBackend, path: str, /, *args: _P.args, **kwargs: _P.kwargs
    ) -> WriteResult:
        self._writable(path, _body_of(args, kwargs))
        local = self._local
        if local is None:
            return method(self, path, *args, **kwargs)
        with translated(self, "put", path):
            local.check(path, "put")
        result = method(self, path, *args, **kwargs)
        with translated(self, "put", path):
            local.written(path, "put", inode_of(result.etag))
        return result

    return write


def _confined_write_async(method: _AsyncWrite[_P]) -> _AsyncWrite[_P]:
    """`_confined_write` for an async write."""

    @functools.wraps(method)
    async def write(
        self: ObstoreBackend, path: str, /, *args: _P.args, **kwargs: _P.kwargs
    ) -> WriteResult:
        self._writable(path, _body_of(args, kwargs))
        local = self._local
        if local is None:
            return await method(self, path, *args, **kwargs)
        with translated(self, "put", path):
            local.check(path, "put")
        result = await method(self, path, *args, **kwargs)
        with translated(self, "put", path):
            local.written(path, "put", inode_of(result.etag))
        return result

    return write


class ObstoreBackend(Backend):
    """A backend built on an obstore store.

    Args:
        key: The name under which the backend is registered and stored in columns.
        fs: A storage URL (`s3://bucket/`, `gs://bucket/`, `az://container/` and the
            other Azure forms obstore accepts, `file:///abs/dir/`, `memory://`), a
            `pathlib.Path` to a local directory, or a ready obstore store.
        prefix: Key prefix for new objects (`uploads/` → `uploads/<uuid>/<name>`). It is
            also the prefix the garbage collector manages, and a boundary: writes
            (`put`, `put_buffer`, the destination of `copy`, URLs signed for `PUT` or
            `DELETE`) and deletes of a path outside it raise `InvalidObjectPathError`
            before any I/O. Reads (`get_bytes`, `head`, `exists`, `iter_chunks`, signed
            download URLs, ...) work for any path: rows written before the prefix
            changed keep their old paths.
        public_base_url: Base URL where objects are publicly readable (CDN, public
            bucket); enables `FileObject.url`.
        key_function: Custom layout of new keys below the prefix.
        checksum_algorithm: `hashlib` algorithm used to checksum content while it is
            uploaded (`"sha256"` by default); `None` turns checksums off.
        policy: Default [`UploadPolicy`][sqlalchemy_obstore.validation.UploadPolicy] for
            every upload to this backend. A column's or a save's policy is layered on top
            field by field (its set fields win; validators of both run).
        url_signer: Signs URLs when the store cannot sign natively (local files,
            memory): see [`UrlSigner`][sqlalchemy_obstore.backends.UrlSigner]. The
            Litestar plugin and the Starlette router set one for such backends.
        read_signer: Signs download (`GET` and `HEAD`) URLs instead of the store, on any
            store: a [`CloudFrontSigner`][sqlalchemy_obstore.cloudfront.CloudFrontSigner]
            sends downloads through the CDN. Upload URLs are still signed by the store
            (or by `url_signer` where the store cannot sign). `None` (the default): the
            same signer for every method.
        **config: Passed through to obstore: `aws_*`/`google_*`/`azure_*` keys (or their
            short forms such as `region`), `client_options`, `retry_config`,
            `credential_provider`. Unknown keys fail here, not at the first request.
            Four request knobs may also be given directly (S3, GCS, Azure): `timeout`
            and `connect_timeout` (seconds or a `timedelta`; obstore's defaults are 30 s
            and 5 s), `max_retries` (default 10) and `retry_timeout` (default 3
            minutes); they go into `client_options` / `retry_config`.

    Raises:
        UnsupportedSchemeError: If the URL scheme is not a storage scheme.
        ConfigurationError: If obstore rejects the configuration.

    Example:
        >>> from sqlalchemy_obstore import ObstoreBackend
        >>> s3 = ObstoreBackend(
        ...     "uploads", "s3://my-bucket/", region="eu-west-1",
        ...     access_key_id="AKIA...", secret_access_key="...", prefix="docs",
        ... )
        >>> s3
        ObstoreBackend(key='uploads', store=S3Store(bucket="my-bucket"), prefix='docs')
    """

    def __init__(
        self,
        key: str,
        fs: str | Path | ObjectStore,
        *,
        prefix: str | None = None,
        public_base_url: str | None = None,
        key_function: KeyFunction | None = None,
        checksum_algorithm: str | None = "sha256",
        policy: UploadPolicy | None = None,
        url_signer: UrlSigner | None = None,
        read_signer: UrlSigner | None = None,
        **config: Any,
    ) -> None:
        if not isinstance(key, str) or not key:
            raise ConfigurationError("A backend key must be a non-empty string.")
        if policy is not None and not isinstance(policy, UploadPolicy):
            raise ConfigurationError(
                f"policy must be an UploadPolicy, not {type(policy).__name__}.", backend=key
            )
        self.policy = policy
        self.url_signer = url_signer
        self.key = key
        self.prefix = join_key(prefix) or None
        self._managed_prefix = managed_prefix(self.prefix)
        self.public_base_url = public_base_url
        self.key_function = key_function
        self.checksum_algorithm = checksum_algorithm
        if checksum_algorithm is not None:
            import hashlib

            if checksum_algorithm not in hashlib.algorithms_available:
                raise ConfigurationError(
                    f"Unknown checksum algorithm {checksum_algorithm!r}.", backend=key
                )
        if isinstance(fs, (str, Path)):
            self.store: ObjectStore = open_store(key, fs, dict(config))
        else:
            if config:
                raise ConfigurationError(
                    "Configuration keys cannot be combined with a ready obstore store; "
                    "configure the store itself.",
                    backend=key,
                )
            self.store = fs
        self.kind = store_kind(self.store)
        # A local-files store is confined to its root: no symbolic link is followed.
        self._local = (
            LocalRoot(getattr(self.store, "prefix", None) or "/", key)
            if self.kind == "local"
            else None
        )
        self._static_credentials = has_static_credentials(self.kind, self.store)
        self._cannot_sign = signing_obstacle(self.kind, self.store)
        # Fixed by the store's type and configuration: computed once.
        self._keeps_attributes = self.kind in {"s3", "gcs", "azure", "memory"}
        self._never_blocks = self.kind == "memory"
        self._native_signing = signs_natively(self.kind, self.store, self._cannot_sign)
        self._store_sign_limit = _SEVEN_DAYS if self.kind in {"s3", "gcs"} else None
        # validated lifetimes: expires_in → (lifetime, half of it in seconds)
        self._expiries: dict[int | timedelta, tuple[timedelta, float]] = {}
        self.read_signer = read_signer  # (also sets _sign_limit)

    # -- description and capabilities -----------------------------------------------------
    @property
    def supports_native_signing(self) -> bool:
        """Whether the store itself can create signed URLs (S3, GCS and Azure can)."""
        return self._native_signing

    @property
    def supports_signing(self) -> bool:
        """Whether URLs can be signed: natively, or through a URL signer (see `_signer`).

        With a `read_signer` alone (on a store that cannot sign) download URLs can be
        signed, upload URLs cannot: `sign(..., method="PUT")` raises
        `UnsupportedOperationError`.
        """
        return self._native_signing or self._read_signer is not None or self._signer() is not None

    @property
    def read_signer(self) -> UrlSigner | None:
        """The signer of download (`GET` and `HEAD`) URLs in place of the store, or `None`.

        Assigning one (or `None`) takes effect at once, for lifetimes too: see
        [`max_sign_expiry`][sqlalchemy_obstore.backends.ObstoreBackend.max_sign_expiry].

        Raises:
            ConfigurationError: On assignment, if the value is not a
                [`UrlSigner`][sqlalchemy_obstore.backends.UrlSigner].
        """
        return self._read_signer

    @read_signer.setter
    def read_signer(self, signer: UrlSigner | None) -> None:
        if signer is not None and not callable(getattr(signer, "sign_url", None)):
            raise ConfigurationError(
                "read_signer must be a UrlSigner (an object with a sign_url method), such as "
                f"a CloudFrontSigner; got {type(signer).__name__}.",
                backend=self.key,
            )
        self._read_signer = signer
        limit = self._store_sign_limit
        if signer is not None:
            # Download URLs follow the read signer's limit, uploads the store's: a lifetime
            # is checked against the longer here and against its own signer's in `sign`.
            read_limit = _signer_limit(signer)
            limit = None if limit is None or read_limit is None else max(limit, read_limit)
        self._sign_limit = limit
        self._expiries.clear()  # (lifetimes validated against the former limit)

    def _signer(self) -> UrlSigner | None:
        """The signer of URLs the store cannot sign: `url_signer`, else for a memory store
        the process's development signer (a memory store lives in one process, so a
        per-process secret serves it; see `signing.development_signer`)."""
        if self.url_signer is not None or self.kind != "memory":
            return self.url_signer
        return development_signer()

    @property
    def supports_attributes(self) -> bool:
        """Whether the store keeps object attributes (all but local files and HTTP)."""
        return self._keeps_attributes

    @property
    def never_waits(self) -> bool:
        """Whether the store is in this process and never waits for I/O (memory)."""
        return self._never_blocks

    @property
    def supports_suffix_range(self) -> bool:
        """Whether ranges counted from the end of an object work (not on Azure)."""
        return self.kind != "azure"

    @property
    def max_sign_expiry(self) -> timedelta | None:
        """The longest lifetime a signed URL may have, or `None` for no fixed limit.

        Seven days on S3 (SigV4) and GCS (V4 signing); no fixed limit on Azure, local
        files and memory (a `url_signer` enforces its own). With a `read_signer`, download
        URLs follow that signer's limit (its `max_expires_in`) and upload URLs the
        store's; this is then the longer of the two, and `sign` holds each URL to the
        limit of the signer that makes it.
        """
        return self._sign_limit

    def check_expiry(self, expires_in: int | float | timedelta) -> timedelta:
        """Validate a signed-URL lifetime against this store's limit (results are cached).

        See [`Backend.check_expiry`][sqlalchemy_obstore.backends.Backend.check_expiry].

        Raises:
            InvalidExpiryError: If it is not positive or exceeds `max_sign_expiry`.
        """
        return self._lifetime(expires_in)[0]

    def _lifetime(self, expires_in: int | float | timedelta) -> tuple[timedelta, float]:
        """`check_expiry`, and the lifetime in seconds (cached for ints and timedeltas)."""
        kind = expires_in.__class__
        if kind is not int and kind is not timedelta:  # floats, bools, invalid types
            lifetime = super().check_expiry(expires_in)
            return lifetime, lifetime.total_seconds()
        known = self._expiries.get(expires_in)  # type: ignore[arg-type]
        if known is None:
            lifetime = super().check_expiry(expires_in)
            known = (lifetime, lifetime.total_seconds())
            if len(self._expiries) < 64:
                self._expiries[expires_in] = known  # type: ignore[index]
        return known

    @property
    def upload_headers(self) -> Mapping[str, str]:
        """Azure needs `x-ms-blob-type: BlockBlob` on a signed PUT."""
        return {"x-ms-blob-type": "BlockBlob"} if self.kind == "azure" else {}

    def describe(self) -> str:
        """The store type and bucket/container, never credentials."""
        return f"the {self.kind} store {store_repr(self.store, self.kind)}"

    def __repr__(self) -> str:
        parts = [f"key={self.key!r}", f"store={store_repr(self.store, self.kind)}"]
        if self.prefix:
            parts.append(f"prefix={self.prefix!r}")
        if self._read_signer is not None:
            parts.append(f"read_signer={self._read_signer!r}")
        return f"ObstoreBackend({', '.join(parts)})"

    # -- writes -------------------------------------------------------------------------
    def _put_options(
        self,
        attributes: Mapping[str, str] | None,
        create_only: bool,
        use_multipart: bool | None,
        chunk_size: int,
        max_concurrency: int,
    ) -> dict[str, Any]:
        # Only what differs from obstore's own defaults: fewer arguments to convert.
        options: dict[str, Any] = {}
        if use_multipart is not None:
            options["use_multipart"] = use_multipart
        if chunk_size != _OBSTORE_CHUNK_SIZE:
            options["chunk_size"] = chunk_size
        if max_concurrency != _OBSTORE_MAX_CONCURRENCY:
            options["max_concurrency"] = max_concurrency
        if attributes and self._keeps_attributes:
            attrs: Attributes = attributes if type(attributes) is dict else dict(attributes)
            options["attributes"] = attrs
        if create_only:
            options["mode"] = "create"
        return options

    @traced("upload", _upload_facts)
    @_confined_write
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
        """Write `body` to `path` with obstore's sync `put`.

        See [`Backend.put`][sqlalchemy_obstore.backends.Backend.put].

        Raises:
            InvalidObjectPathError: If `path` is malformed or outside the backend's
                prefix: a write never leaves the prefix (nothing is sent, the body is
                closed).
        """
        chunk_size = self._part_size(path, body, chunk_size)
        options = self._put_options(
            attributes, create_only, use_multipart, chunk_size, max_concurrency
        )
        if type(body) is not bytes and isinstance(body, Iterator):
            return self._put_iterator(path, body, options, chunk_size)
        return self._put_now(path, body, options)

    @property
    def part_limits(self) -> PartLimits | None:
        """What one multipart upload of this store may hold (`None`: no limit)."""
        return PART_LIMITS.get(self.kind)

    def _part_size(self, path: str, body: object, chunk_size: int) -> int:
        """The part size for `body`: `chunk_size`, grown when its known length needs it.

        A body that cannot fit is closed (its file, if any) before the error is raised.
        """
        try:
            return part_size(
                known_length(body), chunk_size, self.part_limits, backend=self.key, path=path
            )
        except TooManyPartsError:
            close_body(body)
            raise

    def _part_count(self, path: str, chunk_size: int) -> PartCount | None:
        """A counter for a stream of unknown length, where the store limits parts."""
        limits = self.part_limits
        return None if limits is None else PartCount(limits, chunk_size, self.key, path)

    def _put_now(self, path: str, body: UploadBody, options: dict[str, Any]) -> WriteResult:
        """obstore's sync `put`, with errors translated (the body is closed on failure)."""
        try:
            result = obs.put(self.store, path, body, **options)  # type: ignore[arg-type]
        except BaseException as exc:
            close_body(body)
            if (error := translate(self, exc, "put", path)) is not None:
                raise error from exc
            raise
        return _new_tuple(WriteResult, (result.get("e_tag"), result.get("version")))

    @traced("upload", _upload_facts)
    def put_buffer(
        self,
        path: str,
        data: bytes | bytearray,
        attributes: Mapping[str, str] | None = None,
        use_multipart: bool | None = None,
    ) -> WriteResult:
        """Write a buffer of one part to a new `path` with one create-only `put`.

        See [`Backend.put_buffer`][sqlalchemy_obstore.backends.Backend.put_buffer]. A
        create-only PUT is a single request (obstore ignores multipart settings in
        create mode), so part size and concurrency play no part.

        Raises:
            InvalidObjectPathError: If `path` is malformed or outside the backend's
                prefix (nothing is sent).
        """
        if use_multipart is None and type(attributes) is dict and self._keeps_attributes:
            # The usual save: obstore's put with explicit keywords (no options dict to
            # build and unpack), and nothing to close when it fails. A store that keeps
            # attributes is never local files: no root to confine to, but the prefix
            # holds as for every write (`_confined_write`; a buffer has nothing to close).
            check_within(path, self._managed_prefix, self.key, "write")
            try:
                result = obs.put(self.store, path, data, mode="create", attributes=attributes)
            except BaseException as exc:
                if (error := translate(self, exc, "put", path)) is not None:
                    raise error from exc
                raise
            # (the named tuple built as `_make` does, without its Python-level `__new__`)
            return _new_tuple(WriteResult, (result.get("e_tag"), result.get("version")))
        return self._put_buffer_confined(path, data, attributes, use_multipart)

    @_confined_write
    def _put_buffer_confined(
        self,
        path: str,
        data: bytes | bytearray,
        attributes: Mapping[str, str] | None,
        use_multipart: bool | None,
    ) -> WriteResult:
        """`put_buffer` in general: the options dict, and local writes confined."""
        return self._put_now(path, data, self._buffer_options(attributes, use_multipart))

    @traced("upload", _upload_facts)
    @_confined_write_async
    async def put_buffer_async(
        self,
        path: str,
        data: bytes | bytearray,
        attributes: Mapping[str, str] | None = None,
        use_multipart: bool | None = None,
    ) -> WriteResult:
        """Async version of
        [`put_buffer`][sqlalchemy_obstore.backends.ObstoreBackend.put_buffer].
        """
        if self._never_blocks:
            # A memory store never waits: its sync call is the same work without the
            # round trip through obstore's async runtime.
            return ObstoreBackend.put_buffer(self, path, data, attributes, use_multipart)
        options = self._buffer_options(attributes, use_multipart)
        try:
            result = await obs.put_async(self.store, path, data, **options)
        except BaseException as exc:
            if (error := translate(self, exc, "put", path)) is not None:
                raise error from exc
            raise
        return WriteResult(result.get("e_tag"), result.get("version"))

    def _buffer_options(
        self, attributes: Mapping[str, str] | None, use_multipart: bool | None
    ) -> dict[str, Any]:
        """obstore's `put` options of a `put_buffer`."""
        options: dict[str, Any] = {"mode": "create"}
        if attributes and self._keeps_attributes:
            options["attributes"] = attributes if type(attributes) is dict else dict(attributes)
        if use_multipart is not None:
            options["use_multipart"] = use_multipart
        return options

    def _put_iterator(
        self, path: str, body: Iterator[Any], options: dict[str, Any], chunk_size: int
    ) -> WriteResult:
        """A sync `put` of an iterator body, pulled in the calling thread.

        obstore's sync `put` would pull the iterator from inside its own runtime, where a
        body that itself makes a sync obstore call (a copy from another backend's
        `iter_chunks`) panics ("Cannot start a runtime from within a runtime"). So the
        body is always read here, in the caller's thread (and greenlet, and context):
        a body of at most `chunk_size` bytes goes up as one buffer, as does any body of a
        put that cannot be a multipart upload (`create_only`, `use_multipart=False`:
        obstore would hold it whole anyway); a longer one (a `SizedBody` says so before it
        is read) streams through obstore's buffered writer (`_put_streamed`).
        """
        whole = options.get("mode") is not None or options.get("use_multipart") is False
        count = self._part_count(path, chunk_size)
        if not whole and (known_length(body) or 0) > chunk_size:
            return self._put_streamed(path, [], body, options, count)  # longer than a part
        head: list[Any] = []
        total = 0
        try:
            for chunk in body:
                head.append(chunk)
                total += memoryview(chunk).nbytes
                if total > chunk_size and not whole:
                    break
            else:
                data = head[0] if len(head) == 1 else b"".join(head)
                return self._put_now(path, data, options)
        except BaseException:
            close_body(body)
            raise
        return self._put_streamed(path, head, body, options, count)

    def _put_streamed(
        self,
        path: str,
        head: list[Any],
        rest: Iterator[Any],
        options: dict[str, Any],
        count: PartCount | None,
    ) -> WriteResult:
        """Write `head` then `rest` through obstore's buffered writer (`open_writer`).

        The writer sends a multipart upload of `chunk_size` parts, at most
        `max_concurrency` in flight, so memory stays bounded whatever the size. Leaving
        it with an exception (a size limit, a validator, the source failing) aborts the
        multipart upload: no object, no incomplete upload is left. The writer reports no
        etag or version; a `head` of the new object does.
        """
        counted = unchanged if count is None else count.add
        writer_options: dict[str, Any] = {
            "buffer_size": options.get("chunk_size", _OBSTORE_CHUNK_SIZE),
            "max_concurrency": options.get("max_concurrency", _OBSTORE_MAX_CONCURRENCY),
        }
        if "attributes" in options:
            writer_options["attributes"] = options["attributes"]
        try:
            with translated(self, "put", path):
                writer = obs.open_writer(self.store, path, **writer_options)
            try:
                for chunk in drained(head):
                    with translated(self, "put", path):
                        writer.write(counted(chunk))
                for chunk in rest:
                    with translated(self, "put", path):
                        writer.write(counted(chunk))
            except BaseException as exc:
                self._abort(writer, path, exc)
                raise
            with translated(self, "put", path):
                writer.close()
        finally:
            close_body(rest)
        info = self.head(path)
        return WriteResult(info.etag, info.version)

    def _abort(self, writer: Any, path: str, exc: BaseException) -> None:
        """Leave `writer` with `exc`: obstore aborts its multipart upload."""
        try:
            with translated(self, "put", path):
                writer.__exit__(type(exc), exc, exc.__traceback__)
        except Exception as failure:  # the original error matters more; say what is left
            _logger.warning(
                "Could not abort the upload to %r in backend %r (%s); an incomplete "
                "multipart upload may be left: `sqlalchemy-obstore gc` aborts it",
                path,
                self.key,
                failure,
            )

    @traced("upload", _upload_facts)
    @_confined_write_async
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
        """Async version of [`put`][sqlalchemy_obstore.backends.ObstoreBackend.put].

        Uses obstore's `put_async`.
        """
        chunk_size = self._part_size(path, body, chunk_size)
        options = self._put_options(
            attributes, create_only, use_multipart, chunk_size, max_concurrency
        )
        if self._never_blocks and isinstance(body, (bytes, bytearray, memoryview)):
            # A memory store never waits: its sync call is the same work without the
            # round trip through obstore's async runtime.
            return self._put_now(path, body, options)
        source = body
        pulled = None
        if type(body) is not bytes and isinstance(body, Iterator):
            # obstore would pull a sync iterator inside its runtime, where a body that
            # makes a sync obstore call (another backend's iter_chunks) panics.
            pulled = PulledInAThread(body)
            body = pulled.chunks()
        guard: Abortable | None = None
        count: PartCount | None = None
        if multipart_possible(body, options, chunk_size):
            if not isinstance(source, (bytes, bytearray, memoryview)):
                count = self._part_count(path, chunk_size)  # streamed: count every part
            guard = Abortable(async_chunks(body, chunk_size, count))
            body = guard.chunks()
        try:
            upload = obs.put_async(self.store, path, body, **options)
            if guard is None:
                result = await upload
            else:
                result = await self._shielded(upload, guard, path)
        except BaseException as exc:
            if pulled is not None:
                pulled.close()
            for generator in (body, source):
                if isinstance(generator, AsyncGenerator):
                    with suppress(RuntimeError):  # still running in obstore's runtime
                        await generator.aclose()
            close_body(source)
            if count is not None and count.error is not None:
                raise count.error from None  # obstore may have wrapped it
            if (error := translate(self, exc, "put", path)) is not None:
                raise error from exc
            raise
        return WriteResult(result.get("e_tag"), result.get("version"))

    async def _shielded(self, upload: Any, guard: Abortable, path: str) -> Any:
        """Await obstore's multipart `put_async`; when cancelled, abort the upload first.

        Cancelling the task that awaits obstore's upload would drop it mid-way without
        an abort: the parts sent so far stay in the store, billed and invisible to
        listings, until a lifecycle rule or the garbage collector removes them. So the
        upload runs shielded; a cancellation makes its body fail instead (obstore then
        aborts the upload itself, as for any failing body), waits a bounded time for
        that, and re-raises the cancellation. An upload that completed anyway is
        deleted: the caller never learns its key.
        """
        task = asyncio.ensure_future(upload)
        task.add_done_callback(retrieve)  # an outcome nobody awaits is no "never retrieved"
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            guard.abort()
            done, _ = await asyncio.wait({task}, timeout=ABORT_WAIT_SECONDS)
            if not done:
                _logger.warning(
                    "A cancelled upload to %r in backend %r was still running after %d s; "
                    "if it is left incomplete, `sqlalchemy-obstore gc` (or a lifecycle rule) "
                    "aborts it",
                    path,
                    self.key,
                    ABORT_WAIT_SECONDS,
                )
            elif not task.cancelled() and task.exception() is None:
                with suppress(Exception):
                    await obs.delete_async(self.store, path)
            raise

    @property
    def _copy_drops_attributes(self) -> bool:
        # S3 copy-if-not-exists by "multipart" (what the library configures) builds the
        # destination with UploadPartCopy, which drops Content-Type, Content-Disposition,
        # Cache-Control and user metadata. A plain server-side copy onto the destination
        # just created restores them; the first copy already refused to overwrite.
        return (
            self.kind == "s3" and store_config(self.store).get("copy_if_not_exists") == "multipart"
        )

    def copy(self, source: str, destination: str, *, overwrite: bool = False) -> None:
        """Copy `source` to `destination` inside the store, attributes included.

        `destination` must lie under the backend's prefix, as for every write; `source`
        may lie anywhere (a row written before the prefix changed).

        Raises:
            InvalidObjectPathError: If `destination` is malformed or outside the prefix
                (nothing is copied).
            ObjectExistsError: If `destination` exists and `overwrite` is false.
            ObjectNotFoundError: If `source` does not exist.
        """
        self._within(destination, "copy to")
        with translated(self, "copy", source, destination=destination):
            checked = self._local_copy_check(source, destination)
            obs.copy(self.store, source, destination, overwrite=overwrite)
            if not overwrite and self._copy_drops_attributes:
                obs.copy(self.store, source, destination, overwrite=True)
            if self._local is not None:
                self._local.copied(source, destination, checked)

    async def copy_async(self, source: str, destination: str, *, overwrite: bool = False) -> None:
        """Async version of [`copy`][sqlalchemy_obstore.backends.ObstoreBackend.copy]."""
        self._within(destination, "copy to")
        with translated(self, "copy", source, destination=destination):
            checked = self._local_copy_check(source, destination)
            await obs.copy_async(self.store, source, destination, overwrite=overwrite)
            if not overwrite and self._copy_drops_attributes:
                await obs.copy_async(self.store, source, destination, overwrite=True)
            if self._local is not None:
                self._local.copied(source, destination, checked)

    @traced("delete", _delete_facts)
    def delete(self, paths: str | Sequence[str]) -> None:
        """Delete one object or many; missing objects are ignored on every store.

        Raises:
            InvalidObjectPathError: If a path is malformed or outside the backend's
                prefix: a delete never leaves the prefix (nothing is deleted).
        """
        self._delete_now(paths)

    def _writable(self, path: str, body: object = None) -> None:
        """Refuse a write that would leave the prefix, as `_within` does; `body` is then
        closed (a put owns its body)."""
        try:
            check_within(path, self._managed_prefix, self.key, "write")
        except InvalidObjectPathError:
            close_body(body)
            raise

    def _within(self, paths: str | Sequence[str], action: str) -> list[str]:
        """The paths of a delete or a signed write, each a well-formed key under the prefix.

        Writes and deletes never leave the backend's managed prefix, whatever a row or a
        caller names (garbage collection lists only under it, so an object outside
        could never be removed): a malformed path or one outside the prefix raises
        `InvalidObjectPathError` before any I/O. Reads are not confined.
        """
        batch = [paths] if isinstance(paths, str) else list(paths)
        within, key = self._managed_prefix, self.key
        for path in batch:
            check_within(path, within, key, action)
        return batch

    def _delete_now(self, paths: str | Sequence[str]) -> None:
        batch = self._within(paths, "delete")
        if not batch:
            return
        if self._local is not None:
            self._delete_local(batch)
            return
        try:
            with translated(self, "delete", batch[0] if len(batch) == 1 else None):
                obs.delete(self.store, batch)
        except ObjectNotFoundError:
            # Local, Azure and GCS report missing objects; S3 and memory do not. Make
            # every store idempotent by retrying one by one.
            for path in batch:
                try:
                    with translated(self, "delete", path):
                        obs.delete(self.store, path)
                except ObjectNotFoundError:
                    pass

    @traced("delete", _delete_facts)
    async def delete_async(self, paths: str | Sequence[str]) -> None:
        """Async version of [`delete`][sqlalchemy_obstore.backends.ObstoreBackend.delete]."""
        if self._never_blocks or self._local is not None:
            # A memory store never waits: no trip through the runtime. Local files are
            # deleted through directory descriptors (see `_local`): a few system calls
            # each, the work obstore's runtime would hand to a blocking thread anyway.
            self._delete_now(paths)
            return
        batch = self._within(paths, "delete")
        if not batch:
            return
        try:
            with translated(self, "delete", batch[0] if len(batch) == 1 else None):
                await obs.delete_async(self.store, batch)
        except ObjectNotFoundError:
            for path in batch:
                try:
                    with translated(self, "delete", path):
                        await obs.delete_async(self.store, path)
                except ObjectNotFoundError:
                    pass

    # -- reads --------------------------------------------------------------------------
    def head(self, path: str) -> ObjectInfo:
        """Metadata and attributes of `path` in one request (a head-style GET)."""
        with translated(self, "head", path):
            checked = self._local_check(path, "head")
            result = obs.get(self.store, path, options={"head": True})
            self._local_opened(path, "head", result.meta, checked)
            return _info(result.meta, result.attributes)

    async def head_async(self, path: str) -> ObjectInfo:
        """Async version of [`head`][sqlalchemy_obstore.backends.ObstoreBackend.head]."""
        with translated(self, "head", path):
            checked = self._local_check(path, "head")
            result = await obs.get_async(self.store, path, options={"head": True})
            self._local_opened(path, "head", result.meta, checked)
            return _info(result.meta, result.attributes)

    def get_bytes(self, path: str) -> bytes:
        """Read the whole object at `path`."""
        with translated(self, "get", path):
            checked = self._local_check(path, "get")
            result = obs.get(self.store, path)
            self._local_opened(path, "get", result.meta, checked)
            return result.bytes().to_bytes()

    async def get_bytes_async(self, path: str) -> bytes:
        """Async version of [`get_bytes`][sqlalchemy_obstore.backends.ObstoreBackend.get_bytes]."""
        with translated(self, "get", path):
            checked = self._local_check(path, "get")
            result = await obs.get_async(self.store, path)
            self._local_opened(path, "get", result.meta, checked)
            return (await result.bytes_async()).to_bytes()

    def get_range(self, path: str, start: int, length: int) -> bytes:
        """Read `length` bytes of `path` from `start`; shorter at the end of the object."""
        _check_range(start, length)
        if length == 0:
            return b""
        with translated(self, "get_range", path):
            checked = self._local_check(path, "get_range")
            try:
                result = obs.get(self.store, path, options={"range": (start, start + length)})
            except (FileNotFoundError, obs_errors.NotFoundError):
                raise
            except obs_errors.BaseError:
                # Stores refuse a range starting at or past the end; like a read at EOF,
                # that is no bytes (a missing object still raises from the head).
                if start < obs.head(self.store, path)["size"]:
                    raise
                return b""
            self._local_opened(path, "get_range", result.meta, checked)
            return result.bytes().to_bytes()

    async def get_range_async(self, path: str, start: int, length: int) -> bytes:
        """Async version of [`get_range`][sqlalchemy_obstore.backends.ObstoreBackend.get_range]."""
        _check_range(start, length)
        if length == 0:
            return b""
        with translated(self, "get_range", path):
            checked = self._local_check(path, "get_range")
            try:
                result = await obs.get_async(
                    self.store, path, options={"range": (start, start + length)}
                )
            except (FileNotFoundError, obs_errors.NotFoundError):
                raise
            except obs_errors.BaseError:
                if start < (await obs.head_async(self.store, path))["size"]:
                    raise
                return b""
            self._local_opened(path, "get_range", result.meta, checked)
            return (await result.bytes_async()).to_bytes()

    def _suffix_options(self, path: str, length: int) -> GetOptions | None:
        if length < 0:
            raise ValueError(f"A suffix range needs length >= 0, got {length}.")
        if not self.supports_suffix_range:
            raise UnsupportedOperationError(
                f"Reading the last bytes of an object is not supported by {self.describe()}: "
                "Azure has no suffix ranges. Read the size with head() and use get_range().",
                backend=self.key,
                path=path,
            )
        return {"range": {"suffix": length}} if length else None

    def get_suffix(self, path: str, length: int) -> bytes:
        """Read the last `length` bytes of `path` (all of it when it is shorter).

        Raises:
            UnsupportedOperationError: On Azure, which has no suffix ranges.
            ObjectNotFoundError: If the object does not exist.
        """
        options = self._suffix_options(path, length)
        if options is None:
            return b""
        with translated(self, "get_suffix", path):
            checked = self._local_check(path, "get_suffix")
            result = obs.get(self.store, path, options=options)
            self._local_opened(path, "get_suffix", result.meta, checked)
            return result.bytes().to_bytes()

    async def get_suffix_async(self, path: str, length: int) -> bytes:
        """Async version of
        [`get_suffix`][sqlalchemy_obstore.backends.ObstoreBackend.get_suffix].
        """
        options = self._suffix_options(path, length)
        if options is None:
            return b""
        with translated(self, "get_suffix", path):
            checked = self._local_check(path, "get_suffix")
            result = await obs.get_async(self.store, path, options=options)
            self._local_opened(path, "get_suffix", result.meta, checked)
            return (await result.bytes_async()).to_bytes()

    def iter_chunks(self, path: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
        """Stream `path` in chunks of about `chunk_size` bytes (bounded memory).

        Network stores hand over what arrived, merged to at least `chunk_size`; memory
        and local stores, which hold the whole object at once, are cut to exactly
        `chunk_size` (the last chunk shorter), so code tested against them meets chunks
        of the size it asked for.
        """
        pieces = self._pieces(chunk_size)
        with translated(self, "get", path):
            checked = self._local_check(path, "get")
            result = obs.get(self.store, path)
            self._local_opened(path, "get", result.meta, checked)
            stream = result.stream(min_chunk_size=chunk_size)
        while True:
            with translated(self, "get", path):
                chunk = next(stream, None)
            if chunk is None:
                yield from pieces.rest()
                return
            cut = pieces.cut(chunk)
            del chunk  # (obstore's buffer is not held while the caller has the pieces)
            yield from drained(cut)

    def _pieces(self, chunk_size: int) -> Pieces:
        """How chunks are handed on: cut to size for whole-object stores, else as they come."""
        return Pieces(chunk_size) if self.kind in {"memory", "local"} else AS_THEY_COME

    async def iter_chunks_async(
        self, path: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> AsyncIterator[bytes]:
        """Async version of
        [`iter_chunks`][sqlalchemy_obstore.backends.ObstoreBackend.iter_chunks].
        """
        pieces = self._pieces(chunk_size)
        with translated(self, "get", path):
            checked = self._local_check(path, "get")
            result = await obs.get_async(self.store, path)
            self._local_opened(path, "get", result.meta, checked)
            stream = result.stream(min_chunk_size=chunk_size)
        while True:
            with translated(self, "get", path):
                try:
                    chunk = await stream.__anext__()
                except StopAsyncIteration:
                    for piece in pieces.rest():
                        yield piece
                    return
            cut = pieces.cut(chunk)
            del chunk
            for piece in drained(cut):
                yield piece

    def list_objects(
        self, prefix: str | None = None, *, offset: str | None = None
    ) -> Iterator[ObjectInfo]:
        """List objects under `prefix` (pages of 1000 are fetched as needed).

        On local files the tree is walked without following symbolic links (they are
        skipped and logged; see `PathEscapeError`).
        """
        if self._local is not None:
            yield from self._list_local(prefix, offset)
            return
        with translated(self, "list", prefix):
            pages = obs.list(self.store, prefix, offset=offset, chunk_size=1000)
        while True:
            with translated(self, "list", prefix):
                page = next(pages, None)
            if page is None:
                return
            for meta in page:
                # Azurite (outside emulator mode) and fake-gcs-server ignore the offset;
                # the filter keeps every store to the contract.
                if offset is None or meta["path"] > offset:
                    yield _info(meta)

    async def list_objects_async(
        self, prefix: str | None = None, *, offset: str | None = None
    ) -> AsyncIterator[ObjectInfo]:
        """Async version of
        [`list_objects`][sqlalchemy_obstore.backends.ObstoreBackend.list_objects].
        """
        if self._local is not None:
            async for info in self._list_local_async(prefix, offset):
                yield info
            return
        with translated(self, "list", prefix):
            pages = obs.list(self.store, prefix, offset=offset, chunk_size=1000)
        while True:
            with translated(self, "list", prefix):
                try:
                    page = await pages.__anext__()
                except StopAsyncIteration:
                    return
            for meta in page:
                if offset is None or meta["path"] > offset:
                    yield _info(meta)

    # -- local files: confined to the root (see _local) --------------------------------
    def _local_check(self, path: str, operation: str) -> int | None:
        """Refuse a key of a local-files backend that leads through a symbolic link."""
        return None if self._local is None else self._local.check(path, operation)

    def _local_opened(
        self, path: str, operation: str, meta: ObjectMeta, checked: int | None
    ) -> None:
        """Refuse a read if obstore opened another file than the one inside the root."""
        if self._local is not None:
            self._local.opened(path, operation, meta.get("e_tag"), checked)

    def _local_copy_check(self, source: str, destination: str) -> int | None:
        if self._local is None:
            return None
        self._local.check(destination, "copy")
        return self._local.check(source, "copy")

    def _delete_local(self, batch: list[str]) -> None:
        local = self._local
        assert local is not None
        for path in batch:
            with translated(self, "delete", path):
                local.delete(path)

    def _local_files(self, prefix: str | None, offset: str | None) -> Iterator[tuple[str, int]]:
        """The local tree below `prefix`, walked without following links (see `_local`)."""
        local = self._local
        assert local is not None
        with translated(self, "list", prefix):
            files = local.files(prefix)
        while True:
            with translated(self, "list", prefix):
                found = next(files, None)
            if found is None:
                return
            path = found[0]
            if (offset is None or path > offset) and not _STAGING_NAME.search(path):
                yield found

    def _list_local(self, prefix: str | None, offset: str | None) -> Iterator[ObjectInfo]:
        for path, inode in self._local_files(prefix, offset):
            meta = None
            with translated(self, "list", path), suppress(*_VANISHED):
                meta = obs.head(self.store, path)
            if meta is not None and inode_of(meta.get("e_tag")) in {inode, None}:
                yield _info(meta)  # (another inode: the file was replaced meanwhile)

    async def _list_local_async(
        self, prefix: str | None, offset: str | None
    ) -> AsyncIterator[ObjectInfo]:
        for path, inode in self._local_files(prefix, offset):
            meta = None
            with translated(self, "list", path), suppress(*_VANISHED):
                meta = await obs.head_async(self.store, path)
            if meta is not None and inode_of(meta.get("e_tag")) in {inode, None}:
                yield _info(meta)

    # -- signing ------------------------------------------------------------------------
    def _sign_args(
        self, paths: str | Sequence[str], method: HttpMethod, expires_in: int | float | timedelta
    ) -> tuple[str | list[str], timedelta, UrlSigner | None]:
        """The paths, the checked lifetime and the signer of a `sign` call (`None`: the store).

        A URL that writes or deletes (`PUT`, `DELETE`) is signed only for paths under the
        prefix (`_within`); download URLs for any path.
        """
        if method.upper() not in _READ_METHODS:
            self._within(paths, f"sign a {method.upper()} URL for")
        target = paths if isinstance(paths, str) else list(paths)
        if self._native_signing and self._read_signer is None:  # the usual case
            return target, self.check_expiry(expires_in), None
        single = paths if isinstance(paths, str) else None
        signer = self._signer_for(method, single)
        lifetime = self.check_expiry(expires_in)
        if self._read_signer is not None:
            # max_sign_expiry is then the longer of two limits: hold this URL to its own.
            limit = self._store_sign_limit if signer is None else _signer_limit(signer)
            if limit is not None and lifetime > limit:
                kind = "download" if method.upper() in _READ_METHODS else "upload"
                raise InvalidExpiryError(
                    f"A signed {kind} URL of backend {self.key!r} may live at most "
                    f"{int(limit.total_seconds())} seconds ({limit}); "
                    f"{lifetime.total_seconds():g} seconds were requested. Sign again when "
                    "the URL is about to expire instead.",
                    backend=self.key,
                    path=single,
                )
        return target, lifetime, signer

    def _signer_for(self, method: str, single: str | None) -> UrlSigner | None:
        """Who signs `method` URLs: the read signer, the store (`None`) or the URL signer.

        Raises:
            UnsupportedOperationError: If no one can.
        """
        if self._read_signer is not None and method.upper() in _READ_METHODS:
            return self._read_signer
        if self._native_signing:
            return None
        signer = self._signer()
        if signer is not None:
            return signer
        if self._cannot_sign:
            raise UnsupportedOperationError(
                f"Signing URLs is not possible on backend {self.key!r}: {self._cannot_sign}",
                backend=self.key,
                path=single,
            )
        raise self.unsupported("Signing URLs", single)

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
    @traced("sign", _sign_facts)
    def sign(
        self,
        paths: str | Sequence[str],
        *,
        method: HttpMethod = "GET",
        expires_in: int | float | timedelta = 3600,
    ) -> str | list[str]:
        """Sign `paths` for `method`; one string for one path, a list for many.

        With static credentials this is pure computation (no request is made). A store
        that cannot sign natively signs through `url_signer` when one is set; `GET` and
        `HEAD` URLs go through `read_signer` when one is set, on any store.

        Raises:
            InvalidObjectPathError: For a `PUT` or `DELETE` URL, if a path is malformed
                or outside the backend's prefix (a URL that writes or deletes never
                leaves it; download URLs may name any path). Nothing is signed.
        """
        target, lifetime, signer = self._sign_args(paths, method, expires_in)
        if signer is not None:
            return self._sign_elsewhere(signer, target, method, lifetime)
        try:
            signed = obs.sign(cast("SignCapableStore", self.store), method, target, lifetime)
        except BaseException as exc:
            path = target if isinstance(target, str) else None
            if (error := translate(self, exc, "sign", path)) is not None:
                raise error from exc
            raise
        return signed if isinstance(signed, str) else list(signed)

    @traced("sign", _sign_download_facts)
    def sign_download(self, path: str, expires_in: int | float | timedelta) -> tuple[str, float]:
        """Sign one download URL: the URL and its lifetime in seconds.

        See [`Backend.sign_download`][sqlalchemy_obstore.backends.Backend.sign_download]:
        the same URL as `sign(path, expires_in=...)`, signed straight by the store when
        it signs natively and no `read_signer` is set.

        Raises:
            UnsupportedOperationError: If the store cannot sign (local, memory).
            InvalidExpiryError: If the lifetime is not positive or exceeds the limit.
        """
        kind = expires_in.__class__
        known = None
        if kind is int or kind is timedelta:  # (one lookup: FileObject.sign's hot path)
            known = self._expiries.get(expires_in)  # type: ignore[arg-type]
        lifetime, seconds = known or self._lifetime(expires_in)
        if not self._native_signing or self._read_signer is not None:
            return self.sign(path, expires_in=lifetime), seconds
        store: SignCapableStore = self.store  # type: ignore[assignment]  # (no cast() call)
        try:
            return obs.sign(store, "GET", path, lifetime), seconds
        except BaseException as exc:
            if (error := translate(self, exc, "sign", path)) is not None:
                raise error from exc
            raise

    @traced("sign", _sign_download_facts)
    async def sign_download_async(
        self, path: str, expires_in: int | float | timedelta
    ) -> tuple[str, float]:
        """Async version of
        [`sign_download`][sqlalchemy_obstore.backends.ObstoreBackend.sign_download].

        Inline (no trip through obstore's runtime) when signing needs no I/O, as in
        [`sign_async`][sqlalchemy_obstore.backends.ObstoreBackend.sign_async].
        """
        if self._static_credentials or not self._native_signing or self._read_signer is not None:
            return self.sign_download(path, expires_in)
        lifetime, seconds = self._lifetime(expires_in)
        with translated(self, "sign", path):
            url = await obs.sign_async(cast("SignCapableStore", self.store), "GET", path, lifetime)
        return url, seconds

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
    @traced("sign", _sign_facts)
    async def sign_async(
        self,
        paths: str | Sequence[str],
        *,
        method: HttpMethod = "GET",
        expires_in: int | float | timedelta = 3600,
    ) -> str | list[str]:
        """Async version of [`sign`][sqlalchemy_obstore.backends.ObstoreBackend.sign].

        With static credentials signing needs no I/O, so it runs inline without a trip
        through obstore's async runtime (much faster); otherwise obstore's async signer
        fetches credentials as needed.
        """
        if (
            self._static_credentials
            or not self._native_signing
            or (self._read_signer is not None and method.upper() in _READ_METHODS)
        ):  # (a URL signer's work is computation too)
            return self.sign(paths, method=method, expires_in=expires_in)
        target, lifetime, _ = self._sign_args(paths, method, expires_in)  # (the store signs)
        with translated(self, "sign", target if isinstance(target, str) else None):
            signed = await obs.sign_async(
                cast("SignCapableStore", self.store), method, target, lifetime
            )
        return signed if isinstance(signed, str) else list(signed)

    def _sign_elsewhere(
        self, signer: UrlSigner, target: str | list[str], method: HttpMethod, lifetime: timedelta
    ) -> str | list[str]:
        if isinstance(target, str):
            return signer.sign_url(self.key, target, method=method, expires_in=lifetime)
        return [signer.sign_url(self.key, p, method=method, expires_in=lifetime) for p in target]


def _check_range(start: int, length: int) -> None:
    if start < 0 or length < 0:
        raise ValueError(f"A range needs start >= 0 and length >= 0, got {start}, {length}.")
