"""Litestar integration: a plugin, streaming downloads and signed-URL redirects.

[`ObstorePlugin`][sqlalchemy_obstore.contrib.litestar.ObstorePlugin] wires the library
into an application:

* **lifespan**: registers the configured backends when the application starts and
  unregisters them when it stops;
* **dependency injection**: the registry is available to handlers as `storages`;
* **serialisation**: `FileObject` values in responses are encoded in the documented
  [column format](../concepts/stored-object.md#the-column-format), optionally with a
  short-lived signed `url`; OpenAPI documents them with the same schema;
* **signed URLs for local and memory backends**: with a `signing_secret`, backends that
  cannot sign natively get an
  [`HmacUrlSigner`][sqlalchemy_obstore.signing.HmacUrlSigner] and a route mounted at
  `route_path` serves its URLs (`GET` with ranges, `PUT` streaming into the backend), so
  the same code signs on S3 in production and on local files in development;
* **error statuses**: the errors a client causes (a refused upload: `413`, `415`,
  `422`; a forged, expired or replayed upload ticket: `400`, `410`, `409`; a direct
  upload completed before its object arrived: `404`) are answered with their status
  ([`error_status`][sqlalchemy_obstore.uploads.error_status]) and a JSON body, unless
  the application handles them itself (`error_handlers=False` turns this off);
* **command line**: `litestar storage gc|verify|migrate|backends` runs the
  [`sqlalchemy-obstore`](../reference/cli.md) commands on this application, after its
  startup (so the plugin's backends are registered and the engine it holds is used).

[`file_response`][sqlalchemy_obstore.contrib.litestar.file_response] streams a file
with `Content-Type`, `Content-Length`, `ETag`, `Last-Modified`, `Content-Disposition`
and `Range` support; [`signed_redirect`][sqlalchemy_obstore.contrib.litestar.signed_redirect]
sends the client to a short-lived signed URL instead.

It works alongside advanced-alchemy's `SQLAlchemyPlugin` (list both in `plugins`), which
provides the `db_session` the examples use. Needs the `litestar` extra:
`pip install 'sqlalchemy-obstore[litestar]'`.

Example:
    ```python
    from litestar import Litestar, route
    from litestar.di import NamedDependency
    from litestar.params import FromPath
    from sqlalchemy_obstore import ObstoreBackend
    from sqlalchemy_obstore.contrib.litestar import (
        FileResponse, ObstoreConfig, ObstorePlugin, file_response,
    )

    storage = ObstorePlugin(
        ObstoreConfig(
            backends=[ObstoreBackend("uploads", "file:///var/lib/app", prefix="uploads")],
            signing_secret=os.environ["STORAGE_SIGNING_SECRET"],
            signed_url_expires_in=300,
        )
    )

    @route("/documents/{doc_id:int}/download", http_method=["GET", "HEAD"])
    async def download(
        doc_id: FromPath[int], db_session: NamedDependency[AsyncSession]
    ) -> FileResponse:
        doc = await db_session.get_one(Document, doc_id)
        return file_response(doc.file, disposition="attachment")

    app = Litestar([download], plugins=[storage, alchemy])
    ```
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

try:
    from litestar import Litestar, Request
    from litestar.config.app import AppConfig
    from litestar.datastructures import Cookie
    from litestar.di import Provide
    from litestar.handlers import asgi
    from litestar.openapi.spec import OpenAPIType, Schema
    from litestar.plugins import CLIPluginProtocol, InitPlugin, OpenAPISchemaPlugin
    from litestar.response import Redirect, Response
    from litestar.response.base import ASGIResponse
    from litestar.types import Receive, Scope, Send
except ImportError as exc:  # pragma: no cover - depends on the environment
    from .._errors import MissingDependencyError

    raise MissingDependencyError("litestar", "litestar") from exc

from .._column import column_value
from .._errors import ConfigurationError, StorageError
from .._file_object import FileObject, FileObjectList, column_json_schema
from .._registry import BackendRegistry, storages
from .._signing import DEFAULT_BASE_URL, HmacUrlSigner, attach_signer, detach_signer
from ..backends import Backend
from ._asgi import DEFAULT_HTTP_CHUNK_SIZE, FileDownload, SignedStorageRoute
from ._errors import error_body, error_classes_to_handle
from ._http import Disposition, Message

if TYPE_CHECKING:
    from click import Group

    from .._tickets import UploadTickets

__all__ = (
    "FileResponse",
    "ObstoreConfig",
    "ObstorePlugin",
    "file_response",
    "signed_redirect",
)


@dataclass
class ObstoreConfig:
    """Configuration of [`ObstorePlugin`][sqlalchemy_obstore.contrib.litestar.ObstorePlugin].

    Args:
        backends: Backends to register at start-up and unregister at shutdown.
        registry: The registry to register them in and to inject (default `storages`).
        signing_secret: Turns on HMAC-signed URLs for backends that cannot sign natively
            (local files, memory) and mounts the route serving them. At least 32 bytes;
            every instance of the application needs the same one. Never shown in reprs.
        route_path: Where the signed-URL route is mounted.
        base_url: How signed URLs start; defaults to `route_path` (URLs relative to the
            application). Give an absolute URL (`https://app.example.com/_storage`) when
            the URLs leave the browser (e-mails, other services).
        signed_url_expires_in: When set, encoded `FileObject`s carry a `"url"` field with
            a signed GET URL of this lifetime (seconds or a timedelta); `None` when the
            backend cannot sign.
        max_upload_size: Largest body, in bytes, a signed `PUT` may send (the backend
            policy's `max_size` and an upload ticket's `max_size` apply too; the
            smallest wins).
        tickets: The [`UploadTickets`][sqlalchemy_obstore.tickets.UploadTickets] whose
            tickets' upload URLs the route serves: needed to refuse uploads through a
            ticket's URL once it is redeemed (without it, they are refused with `403`).
        dependency_key: The name under which handlers receive the registry.
        chunk_size: Read size of streamed downloads.
        previous_signing_secrets: Old secrets still accepted when verifying (rotation).
        error_handlers: Answer the errors a client causes with their HTTP status (see
            the module documentation); a handler the application registers for one of
            these classes, or for a library class above it, is kept.

    Raises:
        ConfigurationError: For a secret shorter than 32 bytes or a malformed route path.

    Example:
        >>> from sqlalchemy_obstore import ObstoreBackend
        >>> backend = ObstoreBackend("uploads", "memory://", prefix="uploads")
        >>> ObstoreConfig(backends=[backend], signing_secret="s" * 32)
        ObstoreConfig(backends=['uploads'], route_path='/_storage', signing=True)
    """

    backends: Sequence[Backend] = ()
    registry: BackendRegistry = field(default_factory=lambda: storages)
    signing_secret: str | bytes | None = field(default=None, repr=False)
    route_path: str = DEFAULT_BASE_URL
    base_url: str | None = None
    signed_url_expires_in: int | float | timedelta | None = None
    max_upload_size: int | None = None
    dependency_key: str = "storages"
    chunk_size: int = DEFAULT_HTTP_CHUNK_SIZE
    previous_signing_secrets: Sequence[str | bytes] = field(default=(), repr=False)
    tickets: UploadTickets | None = field(default=None, repr=False)
    error_handlers: bool = True
    signer: HmacUrlSigner | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.route_path.startswith("/") or self.route_path == "/":
            raise ConfigurationError(
                f"route_path must be an absolute path below the root, such as "
                f"{DEFAULT_BASE_URL!r}; got {self.route_path!r}."
            )
        self.route_path = self.route_path.rstrip("/")
        if self.signing_secret is not None:
            self.signer = HmacUrlSigner(
                self.signing_secret,
                base_url=self.base_url or self.route_path,
                previous_secrets=self.previous_signing_secrets,
            )

    def __repr__(self) -> str:
        keys = [b.key for b in self.backends]
        return (
            f"ObstoreConfig(backends={keys!r}, route_path={self.route_path!r}, "
            f"signing={self.signer is not None})"
        )


class _FileASGIResponse(ASGIResponse):
    """Runs a [`FileDownload`][] with the headers and cookies Litestar adds."""

    def __init__(
        self,
        download: FileDownload,
        *,
        headers: Mapping[str, Any],
        cookies: Iterable[Cookie],
        background: Any,
    ) -> None:
        super().__init__(headers=dict(headers), cookies=cookies, background=background)
        self._download = download

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        extra = [
            (name, value)
            for name, value in self.encode_headers()
            if name not in {b"content-type", b"content-length"}
        ]

        async def send_with_extra(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name for name, _ in message["headers"]}
                message["headers"] = [
                    *message["headers"],
                    *((n, v) for n, v in extra if n not in present or n == b"set-cookie"),
                ]
            await send(message)  # type: ignore[arg-type]

        await self._download(scope, receive, send_with_extra)  # type: ignore[arg-type]
        await self.after_response()


class FileResponse(Response[None]):
    """A Litestar response streaming a stored file; build it with `file_response`."""

    def __init__(self, download: FileDownload, **kwargs: Any) -> None:
        super().__init__(content=None, **kwargs)
        self.download = download

    def to_asgi_response(
        self,
        app: Litestar | None,
        request: Request[Any, Any, Any],
        *,
        background: Any = None,
        cookies: Iterable[Cookie] | None = None,
        encoded_headers: Iterable[tuple[bytes, bytes]] | None = None,
        headers: dict[str, str] | None = None,
        is_head_response: bool = False,
        media_type: Any = None,
        status_code: int | None = None,
        type_encoders: Any = None,
    ) -> ASGIResponse:
        """Build the ASGI response (called by Litestar)."""
        return _FileASGIResponse(
            self.download,
            headers={**(headers or {}), **self.headers},
            cookies=itertools.chain(self.cookies, cookies or ()),
            background=self.background or background,
        )


def file_response(
    file: FileObject,
    *,
    request: Request[Any, Any, Any] | None = None,
    disposition: Disposition | None = None,
    filename: str | None = None,
    cache_control: str | None = None,
    chunk_size: int = DEFAULT_HTTP_CHUNK_SIZE,
) -> FileResponse:
    """Stream a stored file as the response, with HTTP caching and `Range` support.

    Sends `Content-Type`, `Content-Length`, `ETag`, `Last-Modified`,
    `Content-Disposition` with a sanitised filename (inline only for raster images,
    audio, video and plain text; every other type, such as HTML, SVG, XML or PDF, as an
    `attachment`), `Accept-Ranges`, `X-Content-Type-Options: nosniff`,
    `Content-Security-Policy: sandbox` and `Cache-Control`. Answers `Range` with `206`
    and `Content-Range` (`416` when unsatisfiable), `If-None-Match` with `304`, and
    streams in `chunk_size` pieces: memory stays bounded whatever the file's size. The
    request's headers are read when the response is sent, and the object is opened
    before the response starts: one that has gone from the store is answered `404`.

    Args:
        file: A saved `FileObject`.
        request: Accepted for symmetry with the Starlette helper; not needed.
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
        @route("/files/{doc_id:int}", http_method=["GET", "HEAD"])
        async def download(
            doc_id: FromPath[int], db_session: NamedDependency[AsyncSession]
        ) -> FileResponse:
            doc = await db_session.get_one(Document, doc_id)
            return file_response(doc.file, disposition="attachment")
        ```
    """
    download = FileDownload(
        file,
        disposition=disposition,
        filename=filename,
        cache_control=cache_control,
        chunk_size=chunk_size,
    )
    return FileResponse(download)


def signed_redirect(
    file: FileObject, *, expires_in: int | timedelta = 300, status_code: int = 302
) -> Redirect:
    """Redirect the client to a short-lived signed URL of `file`.

    Works on every backend that can sign: S3, GCS and Azure natively, local files and
    memory through the plugin's signed-URL route. The signature needs no request with
    static credentials; with credentials fetched at run time (instance roles), call
    `await file.sign_async(expires_in=...)` first: the URL is cached on the file and
    reused here.

    Args:
        file: A saved `FileObject`.
        expires_in: Lifetime of the URL (seconds or a timedelta).
        status_code: 302 (default), 303 or 307.

    Raises:
        UnsupportedOperationError: If the backend cannot sign (a local or memory backend
            without the plugin's `signing_secret`).

    Example:
        ```python
        @get("/files/{doc_id:int}/link")
        async def link(
            doc_id: FromPath[int], db_session: NamedDependency[AsyncSession]
        ) -> Redirect:
            doc = await db_session.get_one(Document, doc_id)
            return signed_redirect(doc.file, expires_in=60)
        ```
    """
    url = file.sign(expires_in=expires_in)
    return Redirect(
        url,
        status_code=status_code,  # type: ignore[arg-type]
        headers={"cache-control": "no-store"},
    )


def _json_schema_to_openapi(schema: Mapping[str, Any]) -> Schema:
    if "anyOf" in schema:
        return Schema(one_of=[_json_schema_to_openapi(s) for s in schema["anyOf"]])
    kind = schema.get("type")
    properties = schema.get("properties")
    extra = schema.get("additionalProperties")
    return Schema(
        type=OpenAPIType(kind) if isinstance(kind, str) else None,
        title=schema.get("title"),
        description=schema.get("description"),
        properties=(
            {k: _json_schema_to_openapi(v) for k, v in properties.items()} if properties else None
        ),
        required=schema.get("required"),
        additional_properties=(
            _json_schema_to_openapi(extra) if isinstance(extra, Mapping) else None
        ),
        const=schema.get("const"),
        min_length=schema.get("minLength"),
        format=None,
    )


def _client_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Answer an error the client caused with its status (installed by `ObstorePlugin`)."""
    status, body = error_body(exc)
    return Response(body, status_code=status)


class ObstorePlugin(InitPlugin, OpenAPISchemaPlugin, CLIPluginProtocol):
    """The Litestar plugin: lifespan, DI, encoding, signed-URL route, error statuses, CLI.

    Args:
        config: What to register and how to sign; defaults to `ObstoreConfig()` (the
            default registry, no backends registered, no signing).

    Example:
        ```python
        from litestar import Litestar
        from sqlalchemy_obstore import ObstoreBackend
        from sqlalchemy_obstore.contrib.litestar import ObstoreConfig, ObstorePlugin

        app = Litestar(
            route_handlers=[...],
            plugins=[
                ObstorePlugin(
                    ObstoreConfig(
                        backends=[
                            ObstoreBackend("uploads", "file:///srv/app", prefix="uploads")
                        ],
                        signing_secret=os.environ["STORAGE_SIGNING_SECRET"],
                    )
                )
            ],
        )
        ```
    """

    def __init__(self, config: ObstoreConfig | None = None) -> None:
        self.config = config or ObstoreConfig()

    def __repr__(self) -> str:
        return f"ObstorePlugin({self.config!r})"

    # -- Litestar hooks ----------------------------------------------------------------------
    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        """Add the lifespan, the `storages` dependency, the encoder, the route, the handlers."""
        config = self.config
        app_config.lifespan.append(self.lifespan)
        app_config.dependencies[config.dependency_key] = Provide(
            self._provide_registry, sync_to_thread=False
        )
        app_config.type_encoders = {
            **(app_config.type_encoders or {}),
            FileObject: self.encode,
            FileObjectList: list,
        }
        app_config.signature_namespace.setdefault("BackendRegistry", BackendRegistry)
        if config.signer is not None:
            app_config.route_handlers.append(self._signed_route(config.signer))
        if config.error_handlers:
            handlers = dict(app_config.exception_handlers or {})
            for error in error_classes_to_handle(handlers):
                handlers[error] = _client_error
            app_config.exception_handlers = handlers
        return app_config

    def on_cli_init(self, cli: Group) -> None:
        """Add `litestar storage gc|verify|migrate|backends` to Litestar's CLI.

        The command hands its arguments to the
        [`sqlalchemy-obstore`](../reference/cli.md) command line with this application:
        its startup runs first, so the plugin's backends are registered and an engine the
        application holds (advanced-alchemy's, or one in `app.state`) is used. Options
        and help are the command line's own (`litestar storage gc --help`).
        """
        import click

        if "storage" in getattr(cli, "commands", {}):
            return

        @cli.command(
            "storage",
            add_help_option=False,
            context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
            help="Garbage collection, verification, migration and backend checks of "
            "sqlalchemy-obstore file columns (see `litestar storage --help`).",
        )
        @click.argument("arguments", nargs=-1, type=click.UNPROCESSED)
        def storage(app: Litestar, arguments: tuple[str, ...]) -> None:
            from ..cli import main

            main(list(arguments), app=app, prog="litestar storage")

    @staticmethod
    def is_plugin_supported_type(value: Any) -> bool:
        """OpenAPI: whether this plugin documents `value` (`FileObject` and subclasses)."""
        return isinstance(value, type) and issubclass(value, FileObject)

    def to_openapi_schema(self, field_definition: Any, schema_creator: Any) -> Schema:
        """OpenAPI: the schema of the encoded column format (plus `url` when signing)."""
        schema = _json_schema_to_openapi(column_json_schema())
        if self.config.signed_url_expires_in is not None and schema.properties is not None:
            schema.properties["url"] = Schema(
                one_of=[Schema(type=OpenAPIType.STRING), Schema(type=OpenAPIType.NULL)],
                description="A short-lived signed GET URL of the file.",
            )
        return schema

    # -- pieces ------------------------------------------------------------------------------
    def _provide_registry(self) -> BackendRegistry:
        return self.config.registry

    @asynccontextmanager
    async def lifespan(self, app: Litestar) -> AsyncIterator[None]:
        """Register the backends (and attach the signer) for the application's lifetime.

        Backends are unregistered, and the signer detached, when the application stops,
        also when start-up fails half-way.
        """
        config = self.config
        registry = config.registry
        registered: list[Backend] = []
        try:
            for backend in config.backends:
                registry.register_backend(backend)
                registered.append(backend)
            if config.signer is not None:
                attach_signer(registry, config.signer)
            yield
        finally:
            if config.signer is not None:
                detach_signer(registry, config.signer)
            for backend in reversed(registered):
                if registry.backends.get(backend.key) is backend:
                    registry.unregister_backend(backend.key)

    def encode(self, file: FileObject) -> dict[str, Any]:
        """Encode a saved file in the column format, plus `url` when configured.

        Raises:
            InvalidFileObjectError: If the file is not saved.
        """
        data = column_value(file)
        expires_in = self.config.signed_url_expires_in
        if expires_in is not None:
            try:
                can_sign = file._backend().supports_signing
            except StorageError:  # no backend, or not registered: nothing to sign with
                can_sign = False
            data["url"] = file.sign(expires_in=expires_in) if can_sign else None  # type: ignore[arg-type]
        return data

    def _signed_route(self, signer: HmacUrlSigner) -> Any:
        config = self.config
        route = SignedStorageRoute(
            config.registry,
            signer,
            chunk_size=config.chunk_size,
            max_upload_size=config.max_upload_size,
            tickets=config.tickets,
        )

        async def serve_signed_url(scope: Scope, receive: Receive, send: Send) -> None:
            # A mount receives the path below `route_path`; Litestar appends a "/".
            relative = str(scope["path"])
            raw = scope.get("raw_path") or b""
            if relative.endswith("/") and not raw.split(b"?", 1)[0].endswith(b"/"):
                relative = relative[:-1]
            backend_key, _, path = relative.lstrip("/").partition("/")
            await route(scope, receive, send, backend_key, path)  # type: ignore[arg-type]

        return asgi(
            config.route_path,
            is_mount=True,
            copy_scope=True,
            name="sqlalchemy_obstore.signed_url",
            opt={"exclude_from_auth": True, "exclude_from_csrf": True},
        )(serve_signed_url)
