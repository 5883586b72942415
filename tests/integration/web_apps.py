"""Small Litestar and Starlette apps that receive uploads the way users write them.

Shared by `test_uploads.py` / `test_tickets.py` (through the frameworks' test clients)
and by the bounded-memory test, which runs them under a real uvicorn in a subprocess
(`python -m uvicorn tests.integration.web_apps:<factory> --factory`, configured by the
`W2_*` environment variables below).

Endpoints (the same in every app; the FastAPI one has the form and raw routes):

* `POST /documents` — multipart form with a `file` field (FastAPI: `file: UploadFile`) →
  `FileObject.from_upload` → a `Document` row (no limits); `POST /scans` the same into
  `Scan` (PDF only, 1 MiB).
* `PUT /raw/documents/{name}` and `PUT /raw/scans/{name}` — the bare body streamed with
  `file_from_stream(request.stream(), ...)`.
* `POST /tickets/{kind}` `{"filename": ...}` → an upload grant for `Document.file` or
  `Scan.file`; `POST /tickets/{kind}/complete` `{"ticket": ...}` → the row.

Refused uploads answer with `error_status()` (413, 415, 409, ...) and `{"error": name}`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI
from fastapi import UploadFile as FastAPIUploadFile
from litestar import Litestar, Request, Response, post, put
from litestar.datastructures import UploadFile as LitestarUploadFile
from litestar.enums import RequestEncodingType
from litestar.params import Body
from sqlalchemy import String
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse
from starlette.routing import Route

from sqlalchemy_obstore import (
    ExpiredUploadTicketError,
    FileObject,
    FileTooLargeError,
    InvalidContentTypeError,
    ObjectNotFoundError,
    ObstoreBackend,
    StorageError,
    StoredObject,
    ValidationError,
    storages,
)
from sqlalchemy_obstore.errors import (
    InvalidFilenameError,
    InvalidUploadTicketError,
    ReplayedUploadTicketError,
    UntrustedReferenceError,
)
from sqlalchemy_obstore.tickets import UploadTickets
from sqlalchemy_obstore.uploads import error_status, file_from_stream
from sqlalchemy_obstore.validation import UploadPolicy

BACKEND = "uploads"
SCAN_LIMIT = 1024 * 1024
SECRET = "test-secret-for-upload-tickets-0123456789"


class Base(DeclarativeBase):
    pass


class Document(Base):
    __tablename__ = "documents"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    file: Mapped[FileObject] = mapped_column(StoredObject(BACKEND, key_prefix="docs"))


class Scan(Base):
    __tablename__ = "scans"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    file: Mapped[FileObject] = mapped_column(
        StoredObject(
            BACKEND,
            key_prefix="scans",
            policy=UploadPolicy(max_size=SCAN_LIMIT, allowed_content_types=("application/pdf",)),
        )
    )


MODELS: dict[str, type[Document] | type[Scan]] = {"documents": Document, "scans": Scan}


class Store:
    """What the handlers need: a session factory and the ticket issuer."""

    def __init__(self, engine: AsyncEngine, tickets: UploadTickets) -> None:
        self.engine = engine
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        self.tickets = tickets

    async def create_tables(self) -> None:
        async with self.engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)

    async def add(self, kind: str, file: FileObject) -> dict[str, Any]:
        model = MODELS[kind]
        async with self.sessions() as session:
            row = model(name=file.filename, file=file)
            session.add(row)
            await session.commit()
            return {"id": row.id, "kind": kind, "file": row.file.to_dict()}


def _declared_size(headers: Any) -> int | None:
    value = headers.get("content-length")
    return int(value) if value and value.isdigit() else None


def _error_body(exc: StorageError) -> tuple[int, dict[str, str]]:
    return error_status(exc) or 500, {"error": type(exc).__name__}


# -- Litestar -------------------------------------------------------------------------------------
def _store(request: Request[Any, Any, Any]) -> Store:
    store: Store = request.app.state.store
    return store


@post("/documents", request_max_body_size=None)
async def litestar_document(
    request: Request[Any, Any, Any],
    data: Annotated[dict[str, Any], Body(media_type=RequestEncodingType.MULTI_PART)],
) -> Response[Any]:
    return await _litestar_form(request, "documents", data)


@post("/scans", request_max_body_size=None)
async def litestar_scan(
    request: Request[Any, Any, Any],
    data: Annotated[dict[str, Any], Body(media_type=RequestEncodingType.MULTI_PART)],
) -> Response[Any]:
    return await _litestar_form(request, "scans", data)


@post("/default-limit/documents")
async def litestar_default_limit(
    request: Request[Any, Any, Any],
    data: Annotated[dict[str, Any], Body(media_type=RequestEncodingType.MULTI_PART)],
) -> Response[Any]:
    """Like `/documents`, with Litestar's default `request_max_body_size` (10 MB)."""
    return await _litestar_form(request, "documents", data)


async def _litestar_form(
    request: Request[Any, Any, Any], kind: str, data: dict[str, Any]
) -> Response[Any]:
    upload = data["file"]
    assert isinstance(upload, LitestarUploadFile)
    try:
        return Response(
            await _store(request).add(kind, FileObject.from_upload(upload)), status_code=201
        )
    finally:
        await upload.close()


@put("/raw/{kind:str}/{name:str}", request_max_body_size=None)
async def litestar_raw(request: Request[Any, Any, Any]) -> Response[Any]:
    kind = request.path_params["kind"]
    file = file_from_stream(
        request.stream(),
        filename=request.path_params["name"],
        content_type=request.headers.get("content-type"),
        size=_declared_size(request.headers),
    )
    return Response(await _store(request).add(kind, file), status_code=201)


@post("/tickets/{kind:str}")
async def litestar_issue(request: Request[Any, Any, Any]) -> Response[Any]:
    body = await request.json()
    model = MODELS[request.path_params["kind"]]
    grant = await _store(request).tickets.issue_async(model.file, body["filename"])
    return Response(grant.as_dict(), status_code=201)


@post("/tickets/{kind:str}/complete")
async def litestar_complete(request: Request[Any, Any, Any]) -> Response[Any]:
    body = await request.json()
    store = _store(request)
    file = await store.tickets.redeem_async(body["ticket"])
    return Response(await store.add(request.path_params["kind"], file), status_code=201)


def _litestar_error(request: Request[Any, Any, Any], exc: StorageError) -> Response[Any]:
    status, body = _error_body(exc)
    return Response(body, status_code=status)


def litestar_app(store: Store, *, signing_secret: str | None = None) -> Litestar:
    """The Litestar app on `store` (its tables are created at startup).

    With `signing_secret`, the `ObstorePlugin` signs URLs of local and memory backends
    and serves them at `/_storage` (so direct uploads work on those backends too).
    """
    from sqlalchemy_obstore.contrib.litestar import ObstoreConfig, ObstorePlugin

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await store.create_tables()
        yield

    app = Litestar(
        route_handlers=[
            litestar_document,
            litestar_default_limit,
            litestar_scan,
            litestar_raw,
            litestar_issue,
            litestar_complete,
        ],
        exception_handlers={StorageError: _litestar_error},
        lifespan=[lifespan],
        plugins=[ObstorePlugin(ObstoreConfig(signing_secret=signing_secret, tickets=store.tickets))]
        if signing_secret
        else [],
    )
    app.state.store = store
    return app


# -- Starlette ------------------------------------------------------------------------------------
async def _starlette_form(request: StarletteRequest) -> JSONResponse:
    kind = request.path_params["kind"]
    async with request.form() as form:  # closes the spooled files afterwards
        upload = form["file"]
        assert not isinstance(upload, str)
        return JSONResponse(
            await request.app.state.store.add(kind, FileObject.from_upload(upload)), status_code=201
        )


async def _starlette_raw(request: StarletteRequest) -> JSONResponse:
    file = file_from_stream(
        request.stream(),
        filename=request.path_params["name"],
        content_type=request.headers.get("content-type"),
        size=_declared_size(request.headers),
    )
    return JSONResponse(
        await request.app.state.store.add(request.path_params["kind"], file), status_code=201
    )


async def _starlette_issue(request: StarletteRequest) -> JSONResponse:
    body = await request.json()
    model = MODELS[request.path_params["kind"]]
    grant = await request.app.state.store.tickets.issue_async(model.file, body["filename"])
    return JSONResponse(grant.as_dict(), status_code=201)


async def _starlette_complete(request: StarletteRequest) -> JSONResponse:
    body = await request.json()
    store: Store = request.app.state.store
    file = await store.tickets.redeem_async(body["ticket"])
    return JSONResponse(await store.add(request.path_params["kind"], file), status_code=201)


async def _starlette_error(request: StarletteRequest, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StorageError)
    status, body = _error_body(exc)
    return JSONResponse(body, status_code=status)


def starlette_app(store: Store, *, signing_secret: str | None = None) -> Starlette:
    """The Starlette app on `store` (its tables are created at startup).

    With `signing_secret`, local and memory backends sign URLs served by
    `storage_routes` mounted at `/_storage`.
    """
    from starlette.routing import Mount

    from sqlalchemy_obstore.contrib.starlette import storage_lifespan, storage_routes

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await store.create_tables()
        if signing_secret is None:
            yield
            return
        async with storage_lifespan(signing_secret=signing_secret):
            yield

    signed = (
        [Mount("/_storage", storage_routes(signing_secret=signing_secret, tickets=store.tickets))]
        if signing_secret
        else []
    )
    app = Starlette(
        routes=[
            *signed,
            Route("/{kind:str}", _starlette_form, methods=["POST"]),
            Route("/raw/{kind:str}/{name:str}", _starlette_raw, methods=["PUT"]),
            Route("/tickets/{kind:str}", _starlette_issue, methods=["POST"]),
            Route("/tickets/{kind:str}/complete", _starlette_complete, methods=["POST"]),
        ],
        exception_handlers={StorageError: _starlette_error},
        lifespan=lifespan,
    )
    app.state.store = store
    return app


# -- FastAPI ---------------------------------------------------------------------------------------
async def _fastapi_form(kind: str, file: FastAPIUploadFile, request: StarletteRequest) -> Any:
    store: Store = request.app.state.store
    return JSONResponse(await store.add(kind, FileObject.from_upload(file)), status_code=201)


def fastapi_app(store: Store) -> FastAPI:
    """The multipart endpoints as FastAPI writes them (`file: UploadFile`)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await store.create_tables()
        yield

    app = FastAPI(lifespan=lifespan)
    app.add_api_route("/{kind}", _fastapi_form, methods=["POST"], status_code=201)
    app.add_api_route("/raw/{kind}/{name}", _starlette_raw, methods=["PUT"])
    app.add_exception_handler(StorageError, _starlette_error)
    app.state.store = store
    return app


# -- errors and their statuses ------------------------------------------------------------------
ERRORS: list[tuple[StorageError, int]] = [
    (FileTooLargeError(limit=1, size_seen=2), 413),
    (InvalidContentTypeError("text/html is not allowed"), 415),
    (ValidationError("refused by a validator"), 422),
    (ObjectNotFoundError("nothing uploaded at k/a.pdf yet"), 404),
    (InvalidUploadTicketError("forged"), 400),
    (ExpiredUploadTicketError("expired"), 410),
    (ReplayedUploadTicketError("already redeemed"), 409),
    (UntrustedReferenceError("not this row's object"), 403),
    (InvalidFilenameError("bad name"), 422),
]
"""Errors a client causes, each with the status the web integrations answer it with."""


# -- uvicorn entry points (subprocess) ------------------------------------------------------------
def _store_from_environment() -> Store:
    directory = Path(os.environ["W2_STORE_DIR"])
    storages.register_backend(ObstoreBackend(BACKEND, directory), replace=True)
    engine = create_async_engine(os.environ["W2_DATABASE_URL"])
    return Store(engine, UploadTickets(SECRET))


def uvicorn_litestar() -> Litestar:
    """`--factory` entry point: the Litestar app on a local-files backend."""
    return litestar_app(_store_from_environment())


def uvicorn_starlette() -> Starlette:
    """`--factory` entry point: the Starlette app on a local-files backend."""
    return starlette_app(_store_from_environment())
