"""The document library's JSON API on FastAPI, with sqlalchemy-obstore.

The same API as the Litestar example (`examples/litestar_app`), in one file. The
storage is wired in by `StorageExtension` (backends for the app's lifetime, the signed-URL
route for local files, HTTP statuses for refused uploads); `Signed` fields carry a
signed download URL in every JSON document:

    GET    /api/documents               list (newest first)
    POST   /api/documents               multipart upload: `file`, optional `title`
    GET    /api/documents/{id}          one document
    DELETE /api/documents/{id}          delete the row; the files go after the commit
    GET    /documents/{id}/download     stream the file (Range, ETag, 304)
    GET    /documents/{id}/thumbnail    stream an image's thumbnail
    GET    /documents/{id}/signed       302 to a short-lived signed URL

Run it from the repository root (same environment variables as the Litestar app:
`DATABASE_URL`, `STORAGE_URL`, `STORAGE_SIGNING_SECRET`, `LIBRARY_DATA_DIR`, `AWS_*`):

    python examples/fastapi_app.py            # or
    uvicorn --factory examples.fastapi_app:create_app

and operate its files with the command line, which runs the app's startup to find the
backend and the database:

    sqlalchemy-obstore backends --app examples.fastapi_app:create_app
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Form, HTTPException, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy import DateTime, String, TypeDecorator, select
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sqlalchemy_obstore import (
    Backend,
    ConfigurationError,
    FileObject,
    ObstoreBackend,
    StoredObject,
    UploadPolicy,
)
from sqlalchemy_obstore.contrib.fastapi import (
    Signed,
    StorageExtension,
    Storages,
    file_response,
    presign_async,
    provide_backend,
    signed_redirect,
)
from sqlalchemy_obstore.processing import ImagePolicy, Rendition
from sqlalchemy_obstore.validation import SNIFF_BYTES, detect_content_type

logger = logging.getLogger("document_library")

BACKEND = "library"
MIB = 1024 * 1024
MAX_UPLOAD_SIZE = 20 * MIB
SIGNED_URL_LIFETIME = timedelta(minutes=5)

DOCUMENTS = UploadPolicy(
    max_size=MAX_UPLOAD_SIZE,
    allowed_content_types=(
        "application/pdf",
        "text/plain",
        "text/csv",
        "text/markdown",
        "application/json",
        "application/zip",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.oasis.opendocument.text",
    ),
)
IMAGES = UploadPolicy(
    max_size=MAX_UPLOAD_SIZE,
    allowed_content_types=("image/png", "image/jpeg", "image/webp"),
    image=ImagePolicy(renditions=(Rendition("thumb", 256, 256, format="WEBP"),)),
)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always read back as aware UTC (SQLite stores no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return value.astimezone(timezone.utc) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    pass


class Document(Base):
    """One uploaded document: exactly one of `file` and `image` is set."""

    __tablename__ = "library_documents"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=lambda: datetime.now(timezone.utc)
    )
    file: Mapped[FileObject | None] = mapped_column(StoredObject(BACKEND, policy=DOCUMENTS))
    image: Mapped[FileObject | None] = mapped_column(StoredObject(BACKEND, policy=IMAGES))

    @property
    def attachment(self) -> FileObject:
        stored = self.image if self.image is not None else self.file
        assert stored is not None, "a document always has a file or an image"
        return stored

    @property
    def thumbnail(self) -> FileObject | None:
        return self.image.renditions.get("thumb") if self.image is not None else None


SignedLink = Annotated[FileObject, Signed(expires_in=SIGNED_URL_LIFETIME)]
"""A file in JSON, with a `url` to download it from (the store, or the app's route)."""


class DocumentOut(BaseModel):
    """A document in the JSON API; each file carries a signed download `url`."""

    id: int
    title: str
    created_at: datetime
    kind: str
    file: SignedLink
    thumbnail: SignedLink | None
    links: dict[str, str]

    @classmethod
    def of(cls, doc: Document) -> DocumentOut:
        links = {
            "self": f"/api/documents/{doc.id}",
            "download": f"/documents/{doc.id}/download",
            "signed": f"/documents/{doc.id}/signed",
        }
        if doc.thumbnail is not None:
            links["thumbnail"] = f"/documents/{doc.id}/thumbnail"
        return cls(
            id=doc.id,
            title=doc.title,
            created_at=doc.created_at,
            kind="image" if doc.image is not None else "document",
            file=doc.attachment,
            thumbnail=doc.thumbnail,
            links=links,
        )


@dataclass(frozen=True)
class Settings:
    """Where the library keeps its rows and files."""

    database_url: str
    storage_url: str
    signing_secret: str | None = field(default=None, repr=False)
    storage_prefix: str = "documents"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        data_dir = Path(env.get("LIBRARY_DATA_DIR") or "var/document-library").resolve()
        database_url = env.get("DATABASE_URL")
        if not database_url:
            data_dir.mkdir(parents=True, exist_ok=True)
            database_url = f"sqlite+aiosqlite:///{data_dir / 'library.db'}"
        return cls(
            database_url=database_url,
            storage_url=env.get("STORAGE_URL") or (data_dir / "files").as_uri(),
            signing_secret=env.get("STORAGE_SIGNING_SECRET") or None,
        )


# -- dependencies ---------------------------------------------------------------------------------
async def get_db(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessionmaker() as session:
        yield session


DB = Annotated[AsyncSession, Depends(get_db)]


async def load(db: AsyncSession, doc_id: int) -> Document:
    doc = await db.get(Document, doc_id)
    if doc is None:
        raise HTTPException(404, f"No document {doc_id}.")
    return doc


async def list_all(db: AsyncSession) -> Sequence[Document]:
    return (await db.scalars(select(Document).order_by(Document.id.desc()))).all()


Library = Annotated[Backend, Depends(provide_backend(BACKEND))]


# -- routes ---------------------------------------------------------------------------------------
async def list_documents(db: DB) -> list[DocumentOut]:
    # every URL of the page in one signing batch, before FastAPI serialises it
    return await presign_async([DocumentOut.of(doc) for doc in await list_all(db)])


async def create_document(
    db: DB, file: UploadFile, title: Annotated[str, Form()] = ""
) -> DocumentOut:
    head = await file.read(SNIFF_BYTES)
    await file.seek(0)
    doc = Document(title=title.strip() or file.filename or "untitled")
    stored = FileObject.from_upload(file)  # streams from the spooled upload at flush
    if (detect_content_type(head) or "").startswith("image/"):
        doc.image = stored
    else:
        doc.file = stored
    db.add(doc)
    try:
        await db.commit()  # a refused upload raises here: nothing stored, no row
    except BaseException:
        await db.rollback()
        raise
    return DocumentOut.of(doc)


async def get_document(db: DB, doc_id: int) -> DocumentOut:
    return DocumentOut.of(await load(db, doc_id))


async def delete_document(db: DB, doc_id: int) -> Response:
    await db.delete(await load(db, doc_id))
    await db.commit()
    return Response(status_code=204)


async def download(request: Request, db: DB, doc_id: int) -> Response:
    doc = await load(db, doc_id)
    return file_response(doc.attachment, request, disposition="attachment")


async def thumbnail(request: Request, db: DB, doc_id: int) -> Response:
    doc = await load(db, doc_id)
    if doc.thumbnail is None:
        raise HTTPException(404, f"Document {doc_id} has no thumbnail.")
    return file_response(doc.thumbnail, request, disposition="inline")


async def signed(db: DB, doc_id: int) -> Response:
    doc = await load(db, doc_id)
    return signed_redirect(doc.attachment, expires_in=SIGNED_URL_LIFETIME)


async def storage_info(storages: Storages, library: Library) -> dict[str, Any]:
    """Where the files go (the registry and the backend, injected)."""
    return {"backends": sorted(storages), "library": library.describe()}


# -- the app --------------------------------------------------------------------------------------
def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; `settings` default to the environment (`Settings.from_env()`)."""
    settings = settings or Settings.from_env()
    secret = settings.signing_secret
    if secret is not None and len(secret.encode()) < 32:
        raise ConfigurationError(
            "STORAGE_SIGNING_SECRET must be at least 32 bytes; generate one with "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`."
        )
    if secret is None:
        secret = secrets.token_urlsafe(32)
        logger.warning(
            "STORAGE_SIGNING_SECRET is not set: using a random secret for this process "
            "(signed links stop working at restart). Set it in production."
        )
    url_secret = hmac.new(secret.encode(), b"signed-urls", hashlib.sha256).hexdigest()
    backend = ObstoreBackend(BACKEND, settings.storage_url, prefix=settings.storage_prefix)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_async_engine(settings.database_url)
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        app.state.sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
        try:
            yield
        finally:
            await engine.dispose()

    app = FastAPI(title="Document library", lifespan=lifespan)
    # the backend (and a URL signer for local files) for the app's lifetime, the route
    # serving those URLs at /_storage, and 413/415/422/404 for refused uploads
    StorageExtension([backend], signing_secret=url_secret).init_app(app)
    api: list[tuple[str, Any, str, int | None]] = [
        ("/api/documents", list_documents, "GET", None),
        ("/api/documents", create_document, "POST", 201),
        ("/api/documents/{doc_id}", get_document, "GET", None),
        ("/api/documents/{doc_id}", delete_document, "DELETE", 204),
        ("/documents/{doc_id}/download", download, "GET", None),
        ("/documents/{doc_id}/thumbnail", thumbnail, "GET", None),
        ("/documents/{doc_id}/signed", signed, "GET", 302),
        ("/api/storage", storage_info, "GET", None),
    ]
    for path, endpoint, method, status in api:
        app.add_api_route(path, endpoint, methods=[method], status_code=status)
    return app


if __name__ == "__main__":
    import time

    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    port = int(os.environ.get("PORT", "8000"))
    application = create_app()
    print(f"Document library API on http://127.0.0.1:{port}/docs (Ctrl+C to stop)", flush=True)
    try:
        uvicorn.run(application, host="127.0.0.1", port=port, log_level="warning")
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl+C after a graceful shutdown
        print("Stopped.", flush=True)
    time.sleep(0.3)  # let obstore's runtime threads settle before the interpreter exits
