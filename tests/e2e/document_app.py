"""A small document app, as an application developer writes it, in Litestar and in FastAPI.

Both register their *production* backend when they start (the Litestar `ObstorePlugin`,
a FastAPI lifespan with `storage_lifespan`): local files under `storage_dir`, prefix
`docs`, a policy of 1 KiB plain-text files, HMAC-signed URLs served by the app. The
tests in `test_pytest_plugin_apps.py` run them in their test clients with the pytest
plugin's fixtures, which keep every byte in memory.

Endpoints (the same in both):

* `POST /documents` — multipart form with `title` and `file` → 201 and the document.
* `GET /documents/{id}` — the document: `{"id", "title", "file": {...column format,
  "url": signed GET URL}}`.

Refused uploads answer with `error_status()` (413 for too large, 415 for a wrong type) and
`{"error": name}`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Form, UploadFile
from fastapi import Request as FastAPIRequest
from fastapi.responses import JSONResponse
from litestar import Litestar, Request, Response, get, post
from litestar.datastructures import State
from litestar.datastructures import UploadFile as LitestarUploadFile
from litestar.di import NamedDependency, Provide
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath
from sqlalchemy import String
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sqlalchemy_obstore import FileObject, ObstoreBackend, StorageError, StoredObject
from sqlalchemy_obstore.contrib.litestar import ObstoreConfig, ObstorePlugin
from sqlalchemy_obstore.contrib.starlette import storage_lifespan, storage_routes
from sqlalchemy_obstore.uploads import error_status
from sqlalchemy_obstore.validation import UploadPolicy

SIGNING_SECRET = "document-app-signing-secret-0123456789abcdef"
POLICY = UploadPolicy(max_size=1024, allowed_content_types=("text/plain",))


class Base(DeclarativeBase):
    pass


class Document(Base):
    __tablename__ = "app_documents"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    file: Mapped[FileObject] = mapped_column(StoredObject("uploads"))


def production_backend(storage_dir: Path) -> ObstoreBackend:
    """The backend the app registers at start-up."""
    return ObstoreBackend("uploads", storage_dir, prefix="docs", policy=POLICY)


def _error(exc: StorageError) -> tuple[int, dict[str, str]]:
    return error_status(exc) or 500, {"error": type(exc).__name__}


# -- Litestar --------------------------------------------------------------------------------------
async def provide_db(state: State) -> AsyncIterator[AsyncSession]:
    async with state.sessions() as session:
        yield session


@post("/documents")
async def litestar_upload(
    data: Annotated[dict[str, Any], Body(media_type=RequestEncodingType.MULTI_PART)],
    db: NamedDependency[AsyncSession],
) -> dict[str, Any]:
    upload = data["file"]
    assert isinstance(upload, LitestarUploadFile)
    doc = Document(title=data["title"], file=FileObject.from_upload(upload))
    db.add(doc)
    await db.commit()
    return {"id": doc.id, "title": doc.title, "file": doc.file}


@get("/documents/{doc_id:int}")
async def litestar_document(
    doc_id: FromPath[int], db: NamedDependency[AsyncSession]
) -> dict[str, Any]:
    doc = await db.get_one(Document, doc_id)
    return {"id": doc.id, "title": doc.title, "file": doc.file}


def _litestar_error(request: Request[Any, Any, Any], exc: StorageError) -> Response[Any]:
    status, body = _error(exc)
    return Response(body, status_code=status)


def create_litestar_app(sessions: async_sessionmaker[AsyncSession], storage_dir: Path) -> Litestar:
    """The Litestar app: the plugin registers the production backend at start-up."""
    config = ObstoreConfig(
        backends=[production_backend(storage_dir)],
        signing_secret=SIGNING_SECRET,
        signed_url_expires_in=300,
    )
    return Litestar(
        route_handlers=[litestar_upload, litestar_document],
        plugins=[ObstorePlugin(config)],
        dependencies={"db": Provide(provide_db)},
        exception_handlers={StorageError: _litestar_error},
        state=State({"sessions": sessions}),
    )


# -- FastAPI ---------------------------------------------------------------------------------------
async def fastapi_db(request: FastAPIRequest) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessions() as session:
        yield session


Db = Annotated[AsyncSession, Depends(fastapi_db)]


def create_fastapi_app(sessions: async_sessionmaker[AsyncSession], storage_dir: Path) -> FastAPI:
    """The FastAPI app: its lifespan registers the production backend at start-up."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with storage_lifespan(
            [production_backend(storage_dir)], signing_secret=SIGNING_SECRET
        ):
            yield

    app = FastAPI(lifespan=lifespan)
    app.state.sessions = sessions
    app.mount("/_storage", storage_routes(signing_secret=SIGNING_SECRET))

    async def as_json(doc: Document) -> dict[str, Any]:
        url = await doc.file.sign_async(expires_in=300)
        return {"id": doc.id, "title": doc.title, "file": {**doc.file.to_dict(), "url": url}}

    @app.post("/documents", status_code=201)
    async def upload(title: Annotated[str, Form()], file: UploadFile, session: Db) -> Any:
        doc = Document(title=title, file=FileObject.from_upload(file))
        session.add(doc)
        await session.commit()
        return await as_json(doc)

    @app.get("/documents/{doc_id}")
    async def document(doc_id: int, session: Db) -> Any:
        return await as_json(await session.get_one(Document, doc_id))

    @app.exception_handler(StorageError)
    async def storage_error(request: FastAPIRequest, exc: StorageError) -> JSONResponse:
        status, body = _error(exc)
        return JSONResponse(body, status_code=status)

    return app
