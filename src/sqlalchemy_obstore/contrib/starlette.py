"""Starlette and FastAPI integration: the extension, lifespan, signed-URL routes, downloads.

* [`StorageExtension`][sqlalchemy_obstore.contrib.starlette.StorageExtension]: what the
  Litestar plugin does, for a Starlette or FastAPI application, in one
  `init_app(app)`: registers the backends for the application's lifetime around its
  own lifespan (and attaches an
  [`HmacUrlSigner`][sqlalchemy_obstore.signing.HmacUrlSigner] to those that cannot sign
  natively), mounts the route serving those signed URLs, answers the errors a client
  causes with their HTTP status, and keeps itself in `app.state` for the
  [FastAPI dependencies][sqlalchemy_obstore.contrib.fastapi] and the command line.
* [`storage_lifespan`][sqlalchemy_obstore.contrib.starlette.storage_lifespan]: the
  lifespan part alone, an async context manager to enter in the application's
  lifespan; registers backends and unregisters them at shutdown.
* [`storage_routes`][sqlalchemy_obstore.contrib.starlette.storage_routes]: the route
  part alone, a `Router` serving signed URLs (`GET`/`HEAD` with ranges, `PUT` streaming
  into the backend); mount it where the signer's `base_url` points (`"/_storage"`).
* [`install_error_handlers`][sqlalchemy_obstore.contrib.starlette.install_error_handlers]:
  the error part alone.
* [`file_response`][sqlalchemy_obstore.contrib.starlette.file_response] streams a file
  with `Content-Type`, `Content-Length`, `ETag`, `Last-Modified`,
  `Content-Disposition` and `Range` support;
  [`signed_redirect`][sqlalchemy_obstore.contrib.starlette.signed_redirect] sends the
  client to a short-lived signed URL instead.

FastAPI is Starlette underneath: use the same functions, and
[`sqlalchemy_obstore.contrib.fastapi`][sqlalchemy_obstore.contrib.fastapi] for
`Depends`-ready providers and signed URLs in Pydantic responses. Needs the `starlette`
extra (or FastAPI installed).

Example:
    ```python
    from fastapi import FastAPI
    from sqlalchemy_obstore import ObstoreBackend
    from sqlalchemy_obstore.contrib.starlette import StorageExtension

    storage = StorageExtension(
        [ObstoreBackend("uploads", "file:///srv/app", prefix="uploads")],
        signing_secret=os.environ["STORAGE_SIGNING_SECRET"],
    )
    app = FastAPI(lifespan=lifespan)  # your own lifespan, if any
    storage.init_app(app)
    ```
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

try:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
    from starlette.routing import Mount, Route, Router
    from starlette.types import Receive, Scope, Send
except ImportError as exc:  # pragma: no cover - depends on the environment
    from .._errors import MissingDependencyError

    raise MissingDependencyError("starlette", "starlette") from exc

from .._errors import ConfigurationError
from .._file_object import FileObject
from .._registry import BackendRegistry, storages
from .._signing import DEFAULT_BASE_URL, HmacUrlSigner, attach_signer, detach_signer
from ..backends import Backend
from ._asgi import DEFAULT_HTTP_CHUNK_SIZE, FileDownload, SignedStorageRoute
from ._errors import error_body, error_classes_to_handle
from ._http import Disposition

if TYPE_CHECKING:
    from .._tickets import UploadTickets

__all__ = (
    "STATE_KEY",
    "FileStreamingResponse",
    "StorageExtension",
    "file_response",
    "install_error_handlers",
    "signed_redirect",
    "storage_lifespan",
    "storage_routes",
)

STATE_KEY = "sqlalchemy_obstore"
"""The `app.state` attribute holding the application's `StorageExtension`."""


def _signer(
    signer: HmacUrlSigner | None,
    signing_secret: str | bytes | None,
    base_url: str,
    previous_signing_secrets: Sequence[str | bytes],
) -> HmacUrlSigner | None:
    if signer is not None and signing_secret is not None:
        raise ConfigurationError("Pass either signer= or signing_secret=, not both.")
    if signer is not None:
        return signer
    if signing_secret is None:
        return None
    return HmacUrlSigner(
        signing_secret, base_url=base_url, previous_secrets=previous_signing_secrets
    )


@asynccontextmanager
async def storage_lifespan(
    backends: Sequence[Backend] = (),
    *,
    registry: BackendRegistry = storages,
    signing_secret: str | bytes | None = None,
    base_url: str = DEFAULT_BASE_URL,
    signer: HmacUrlSigner | None = None,
    previous_signing_secrets: Sequence[str | bytes] = (),
) -> AsyncIterator[BackendRegistry]:
    """Register `backends` for the application's lifetime; yield the registry.

    With a `signing_secret` (or a ready `signer`), every registered backend that cannot
    sign natively (local files, memory) signs URLs under `base_url`, where
    [`storage_routes`][sqlalchemy_obstore.contrib.starlette.storage_routes] must be
    mounted with the same secret. Everything is undone on exit, also when start-up
    fails half-way.

    Args:
        backends: Backends to register (their keys must be free).
        registry: The registry to use (default `storages`).
        signing_secret: At least 32 bytes; the same in every instance. Never logged.
        base_url: How signed URLs start: the mount path, or an absolute URL.
        signer: A ready signer instead of `signing_secret`.
        previous_signing_secrets: Old secrets still accepted (rotation).

    Raises:
        BackendAlreadyRegisteredError: If a backend's key is taken.
        ConfigurationError: For a secret shorter than 32 bytes.

    Example:
        ```python
        @asynccontextmanager
        async def lifespan(app):
            async with storage_lifespan(backends, signing_secret=SECRET):
                yield
        ```
    """
    active = _signer(signer, signing_secret, base_url, previous_signing_secrets)
    registered: list[Backend] = []
    try:
        for backend in backends:
            registry.register_backend(backend)
            registered.append(backend)
        if active is not None:
            attach_signer(registry, active)
        yield registry
    finally:
        if active is not None:
            detach_signer(registry, active)
        for backend in reversed(registered):
            if registry.backends.get(backend.key) is backend:
                registry.unregister_backend(backend.key)


class _SignedEndpoint:
    """The ASGI endpoint behind `storage_routes` (Starlette calls it for matched paths)."""

    def __init__(self, route: SignedStorageRoute) -> None:
        self._route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        params = scope.get("path_params", {})
        await self._route(
            scope,
            receive,
            send,
            str(params.get("backend", "")),
            str(params.get("path", "")),
        )


def storage_routes(
    *,
    registry: BackendRegistry = storages,
    signing_secret: str | bytes | None = None,
    signer: HmacUrlSigner | None = None,
    previous_signing_secrets: Sequence[str | bytes] = (),
    max_upload_size: int | None = None,
    chunk_size: int = DEFAULT_HTTP_CHUNK_SIZE,
    tickets: UploadTickets | None = None,
) -> Router:
    """A router serving HMAC-signed URLs of local and memory backends.

    Mount it at the signer's `base_url` (`app.mount("/_storage", storage_routes(...))`).
    `GET`/`HEAD` stream the object with `Range` and conditional-request support, inline
    only for passive types (raster images, audio, video, plain text), always with
    `X-Content-Type-Options: nosniff` and `Content-Security-Policy: sandbox`; `PUT`
    streams the body into the backend, refuses to replace an existing object (`409`)
    and bodies over `max_upload_size`, the backend policy's `max_size` or an upload
    ticket's `max_size` (`413`, nothing stored). A tampered, foreign, expired or
    non-canonically spelled signature gets `403` and no data.

    Args:
        registry: Resolves the backend keys in the URLs.
        signing_secret: The secret the URLs were signed with (see `storage_lifespan`).
        signer: A ready signer instead of `signing_secret`.
        previous_signing_secrets: Old secrets still accepted (rotation).
        max_upload_size: Largest `PUT` body in bytes.
        chunk_size: Read size of downloads.
        tickets: The [`UploadTickets`][sqlalchemy_obstore.tickets.UploadTickets] whose
            tickets' upload URLs this route serves: needed to refuse uploads once a
            ticket is redeemed (without it, such uploads are refused with `403`).

    Raises:
        ConfigurationError: Without a secret or signer, or with both.

    Example:
        ```python
        app.mount("/_storage", storage_routes(signing_secret=SECRET, max_upload_size=50 * 2**20))
        ```
    """
    active = _signer(signer, signing_secret, DEFAULT_BASE_URL, previous_signing_secrets)
    if active is None:
        raise ConfigurationError(
            "storage_routes needs the signing_secret (or signer) the URLs are signed with."
        )
    endpoint = _SignedEndpoint(
        SignedStorageRoute(
            registry,
            active,
            chunk_size=chunk_size,
            max_upload_size=max_upload_size,
            tickets=tickets,
        )
    )
    return Router(
        routes=[
            Route(
                "/{backend}/{path:path}",
                endpoint,
                methods=["GET", "HEAD", "PUT"],
                name="sqlalchemy_obstore.signed_url",
            )
        ]
    )


class FileStreamingResponse(StreamingResponse):
    """A `StreamingResponse` that streams a stored file; build it with `file_response`.

    Status and headers are decided when the response is sent, from the request's
    `Range` and conditional headers.
    """

    def __init__(self, download: FileDownload) -> None:
        super().__init__(content=iter(()))
        self.download = download

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the file (ASGI)."""
        await self.download(scope, receive, send)
        if self.background is not None:
            await self.background()


def file_response(
    file: FileObject,
    request: Request | None = None,
    *,
    disposition: Disposition | None = None,
    filename: str | None = None,
    cache_control: str | None = None,
    chunk_size: int = DEFAULT_HTTP_CHUNK_SIZE,
) -> FileStreamingResponse:
    """Stream a stored file as the response, with HTTP caching and `Range` support.

    Sends `Content-Type`, `Content-Length`, `ETag`, `Last-Modified`,
    `Content-Disposition` with a sanitised filename (inline only for raster images,
    audio, video and plain text; every other type, such as HTML, SVG, XML or PDF, as an
    `attachment`), `Accept-Ranges`, `X-Content-Type-Options: nosniff`,
    `Content-Security-Policy: sandbox` and `Cache-Control`; answers `Range` with
    `206`/`416` and `If-None-Match` with `304`; memory stays bounded by `chunk_size`
    whatever the file's size. The object is opened before the response starts: one
    that has gone from the store is answered `404`.

    Args:
        file: A saved `FileObject`.
        request: The request (optional: its headers are read from the ASGI scope when
            the response is sent).
        disposition: `"inline"` or `"attachment"`; by default inline when the type
            allows it (`"inline"` never makes another type inline).
        filename: The download name (default: `file.filename`); sanitised.
        cache_control: `Cache-Control` value; default `private, no-cache` (clients
            revalidate with the `ETag`). A column's `cache_control` is stored with the
            object and governs downloads straight from the store (signed URLs); pass
            the same value here for streamed ones.
        chunk_size: Bytes read from the store at a time.

    Raises:
        NoContentError: If the file has not been saved.
        BackendNotFoundError: If its backend is not registered.

    Example:
        ```python
        @app.get("/documents/{doc_id}/download")
        async def download(doc_id: int, request: Request):
            doc = await load_document(doc_id)
            return file_response(doc.file, request, disposition="attachment")
        ```
    """
    return FileStreamingResponse(
        FileDownload(
            file,
            disposition=disposition,
            filename=filename,
            cache_control=cache_control,
            chunk_size=chunk_size,
        )
    )


def signed_redirect(
    file: FileObject, *, expires_in: int | timedelta = 300, status_code: int = 302
) -> RedirectResponse:
    """Redirect the client to a short-lived signed URL of `file`.

    Works on S3, GCS and Azure natively, and on local and memory backends equipped by
    `storage_lifespan(..., signing_secret=...)`. With credentials fetched at run time,
    `await file.sign_async(expires_in=...)` first: the cached URL is reused here.

    Args:
        file: A saved `FileObject`.
        expires_in: Lifetime of the URL (seconds or a timedelta).
        status_code: 302 (default), 303 or 307.

    Raises:
        UnsupportedOperationError: If the backend cannot sign.

    Example:
        ```python
        @app.get("/documents/{doc_id}/link")
        async def link(doc_id: int):
            return signed_redirect((await load_document(doc_id)).file, expires_in=60)
        ```
    """
    url = file.sign(expires_in=expires_in)
    return RedirectResponse(url, status_code=status_code, headers={"cache-control": "no-store"})


# -- the extension: everything at once ----------------------------------------------------------
async def _client_error(request: Request, exc: Exception) -> Response:
    status, body = error_body(exc)
    return JSONResponse(body, status_code=status)


def install_error_handlers(app: Starlette) -> None:
    """Answer the errors a client causes with their HTTP status, as JSON.

    A refused upload (`FileTooLargeError` 413, `InvalidContentTypeError` 415, other
    `ValidationError`s 422), a forged, expired or replayed upload ticket (400, 410,
    409), an object that is not there (`ObjectNotFoundError` 404: a direct upload
    completed before its `PUT`), a request naming an object its row does not hold
    (`UntrustedReferenceError` 403): see
    [`error_status`][sqlalchemy_obstore.uploads.error_status]. The body is
    `{"status_code", "detail", "error"}`. A handler the application registered for one
    of these classes, or for a library class above it (`StorageError`), is kept; every
    other error stays a `500`. `StorageExtension.init_app` calls this.

    Call it while building the application: Starlette reads its handlers when it
    starts.

    Raises:
        ConfigurationError: If the application has already started.

    Example:
        ```python
        app = FastAPI()
        install_error_handlers(app)
        ```
    """
    if getattr(app, "middleware_stack", None) is not None:
        raise ConfigurationError(
            "install_error_handlers() must be called before the application starts "
            "(Starlette reads its exception handlers once)."
        )
    for error in error_classes_to_handle(app.exception_handlers):
        app.add_exception_handler(error, _client_error)


class StorageExtension:
    """What the Litestar plugin does, for a Starlette or FastAPI application.

    [`init_app`][sqlalchemy_obstore.contrib.starlette.StorageExtension.init_app] wires
    it in: the backends are registered (and, with a signing secret, the signer
    attached) around the application's own lifespan, so its startup code can already
    use them and its shutdown code still can; the signed-URL route is mounted at
    `route_path`; the errors a client causes get their HTTP status; and the extension
    is kept in `app.state` (as `STATE_KEY`), where the
    [FastAPI dependencies][sqlalchemy_obstore.contrib.fastapi] and the
    `sqlalchemy-obstore --app module:app` command line find its registry.

    Args:
        backends: Backends to register at start-up and unregister at shutdown.
        registry: The registry to register them in (default `storages`).
        signing_secret: Turns on HMAC-signed URLs for backends that cannot sign natively
            (local files, memory) and mounts the route serving them. At least 32 bytes;
            every instance of the application needs the same one. Never logged.
        signer: A ready signer instead of `signing_secret`.
        previous_signing_secrets: Old secrets still accepted (rotation).
        route_path: Where the signed-URL route is mounted.
        base_url: How signed URLs start; defaults to `route_path`. Give an absolute URL
            when the URLs leave the browser (e-mails, other services).
        max_upload_size: Largest signed `PUT` body, in bytes.
        chunk_size: Read size of the route's downloads.
        tickets: The [`UploadTickets`][sqlalchemy_obstore.tickets.UploadTickets] whose
            tickets' upload URLs the route serves.
        error_handlers: Answer the errors a client causes with their status (see
            `install_error_handlers`).

    Raises:
        ConfigurationError: For a secret shorter than 32 bytes, both a secret and a
            signer, or a malformed route path.

    Example:
        >>> from sqlalchemy_obstore import ObstoreBackend
        >>> uploads = ObstoreBackend("uploads", "memory://", prefix="uploads")
        >>> StorageExtension([uploads], signing_secret="s" * 32)
        StorageExtension(backends=['uploads'], route_path='/_storage', signing=True)
    """

    def __init__(
        self,
        backends: Sequence[Backend] = (),
        *,
        registry: BackendRegistry = storages,
        signing_secret: str | bytes | None = None,
        signer: HmacUrlSigner | None = None,
        previous_signing_secrets: Sequence[str | bytes] = (),
        route_path: str = DEFAULT_BASE_URL,
        base_url: str | None = None,
        max_upload_size: int | None = None,
        chunk_size: int = DEFAULT_HTTP_CHUNK_SIZE,
        tickets: UploadTickets | None = None,
        error_handlers: bool = True,
    ) -> None:
        if not route_path.startswith("/") or route_path == "/":
            raise ConfigurationError(
                f"route_path must be an absolute path below the root, such as "
                f"{DEFAULT_BASE_URL!r}; got {route_path!r}."
            )
        self.backends = tuple(backends)
        self.registry = registry
        self.route_path = route_path.rstrip("/")
        self.signer = _signer(
            signer, signing_secret, base_url or self.route_path, previous_signing_secrets
        )
        self.max_upload_size = max_upload_size
        self.chunk_size = chunk_size
        self.tickets = tickets
        self.error_handlers = error_handlers

    def __repr__(self) -> str:
        keys = [b.key for b in self.backends]
        return (
            f"StorageExtension(backends={keys!r}, route_path={self.route_path!r}, "
            f"signing={self.signer is not None})"
        )

    def lifespan(self) -> Any:
        """The lifespan part alone: an async context manager yielding the registry.

        `init_app` enters it around the application's lifespan; enter it yourself
        instead when you do not call `init_app`.
        """
        return storage_lifespan(self.backends, registry=self.registry, signer=self.signer)

    def routes(self) -> Router:
        """The signed-URL route alone (`init_app` mounts it at `route_path`).

        Raises:
            ConfigurationError: Without a signing secret or signer.
        """
        return storage_routes(
            registry=self.registry,
            signer=self.signer,
            max_upload_size=self.max_upload_size,
            chunk_size=self.chunk_size,
            tickets=self.tickets,
        )

    def init_app(self, app: Starlette) -> None:
        """Wire the extension into a Starlette or FastAPI application (before it starts).

        Composes with the application's own lifespan (the `lifespan=` it was built
        with): the backends are registered before it starts and unregistered after it
        ends, also when its start-up fails half-way.

        Raises:
            ConfigurationError: If the application already has an extension, or has
                started.

        Example:
            ```python
            app = FastAPI(lifespan=lifespan)
            StorageExtension([ObstoreBackend("uploads", url, prefix="uploads")]).init_app(app)
            ```
        """
        if getattr(app.state, STATE_KEY, None) is not None:
            raise ConfigurationError("This application already has a StorageExtension.")
        if self.error_handlers:
            install_error_handlers(app)
        setattr(app.state, STATE_KEY, self)
        router = app.router
        inner = router.lifespan_context

        @asynccontextmanager
        async def lifespan(application: Any) -> AsyncIterator[Any]:
            async with self.lifespan(), inner(application) as state:
                yield state

        router.lifespan_context = lifespan
        if self.signer is not None:
            mount = Mount(self.route_path, app=self.routes(), name="sqlalchemy_obstore")
            router.routes.insert(0, mount)
