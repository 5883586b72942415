"""The document library: a Litestar app storing uploads with sqlalchemy-obstore.

Configuration (environment variables, all optional):

* `DATABASE_URL`: SQLAlchemy async URL; default SQLite (aiosqlite) in `LIBRARY_DATA_DIR`.
* `STORAGE_URL`: where files go (`s3://bucket/`, `gs://...`, `az://...`, `file:///...`);
  default local files in `LIBRARY_DATA_DIR/files`. obstore reads credentials from the
  usual variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
  `AWS_ENDPOINT`, ...).
* `STORAGE_SIGNING_SECRET`: at least 32 characters; signs the download URLs of stores that
  cannot sign themselves (local files) and the direct-upload tickets. Without it a random
  one is generated at startup (with a warning), so links die with the process.
* `LIBRARY_DATA_DIR`: default data directory (`./var/document-library`).
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
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, TypeAlias

from litestar import Litestar, MediaType, Request, Response, delete, get, post
from litestar.datastructures import State, UploadFile
from litestar.di import Provide
from litestar.enums import RequestEncodingType
from litestar.exceptions import NotFoundException
from litestar.params import Body
from litestar.response import Redirect
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from sqlalchemy_obstore import ConfigurationError, FileObject, ObstoreBackend, ValidationError
from sqlalchemy_obstore.contrib.litestar import (
    ObstoreConfig,
    ObstorePlugin,
    file_response,
    signed_redirect,
)
from sqlalchemy_obstore.tickets import UploadTickets
from sqlalchemy_obstore.validation import SNIFF_BYTES, detect_content_type

from .models import (
    BACKEND,
    DOCUMENT_TYPES,
    MAX_UPLOAD_SIZE,
    MIB,
    MULTIPART_THRESHOLD,
    Base,
    Document,
)
from .page import render_page

logger = logging.getLogger("document_library")

SIGNED_URL_LIFETIME = timedelta(minutes=5)

try:  # Litestar >= 2.23 wants injected and path parameters marked as such
    from litestar.di import NamedDependency
    from litestar.params import FromPath

    DB: TypeAlias = NamedDependency[AsyncSession]
    DocId: TypeAlias = FromPath[int]
except ImportError:  # older Litestar infers them from the names
    DB: TypeAlias = AsyncSession  # type: ignore[no-redef,misc]
    DocId: TypeAlias = int  # type: ignore[no-redef,misc]


@dataclass(frozen=True)
class Settings:
    """Where the library keeps its rows and files."""

    database_url: str
    storage_url: str
    signing_secret: str | None = field(default=None, repr=False)
    storage_prefix: str = "documents"
    direct_uploads: bool = True

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from environment variables (see the module docstring)."""
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


def _derive(secret: str, purpose: str) -> str:
    """A separate key per use of the one configured secret."""
    return hmac.new(secret.encode(), purpose.encode(), hashlib.sha256).hexdigest()


# -- wiring ------------------------------------------------------------------------------------
async def provide_db(state: State) -> AsyncIterator[AsyncSession]:
    """One session per request."""
    async with state.sessionmaker() as session:
        yield session


async def _load(db: AsyncSession, doc_id: int) -> Document:
    doc = await db.get(Document, doc_id)
    if doc is None:
        raise NotFoundException(f"No document {doc_id}.")
    return doc


async def _list(db: AsyncSession) -> Sequence[Document]:
    return (await db.scalars(select(Document).order_by(Document.id.desc()))).all()


async def _add(db: AsyncSession, doc: Document, stored: FileObject, *, image: bool) -> Document:
    """Insert a document; the upload happens in the flush, before the INSERT."""
    if image:
        doc.image = stored
    else:
        doc.file = stored
    db.add(doc)
    try:
        await db.commit()  # a refused upload raises here: nothing stored, no row
    except BaseException:
        await db.rollback()
        raise
    return doc


async def add_upload(db: AsyncSession, upload: UploadFile, title: str) -> Document:
    """Store an uploaded file in the column its bytes belong to (image or document)."""
    head = await upload.read(SNIFF_BYTES)
    await upload.seek(0)
    image = (detect_content_type(head) or "").startswith("image/")
    doc = Document(title=title.strip() or upload.filename or "untitled")
    return await _add(db, doc, FileObject.from_upload(upload), image=image)


@dataclass
class DocumentOut:
    """A document in the JSON API; `FileObject`s are encoded by the plugin."""

    id: int
    title: str
    created_at: datetime
    kind: str
    file: FileObject
    thumbnail: FileObject | None
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


@dataclass
class UploadForm:
    """The multipart body of an upload (page form and JSON API alike)."""

    file: UploadFile
    title: str = ""


Multipart = Annotated[UploadForm, Body(media_type=RequestEncodingType.MULTI_PART)]


# -- HTML page -----------------------------------------------------------------------------------
def _page(request: Request[Any, Any, Any], documents: Sequence[Document], **kw: Any) -> str:
    return render_page(
        documents,
        storage=request.app.state.storage_description,
        direct_uploads=request.app.state.tickets is not None,
        **kw,
    )


@get("/", media_type=MediaType.HTML)
async def index(request: Request[Any, Any, Any], db: DB) -> str:
    """The library page."""
    return _page(request, await _list(db))


@post("/documents", media_type=MediaType.HTML)
async def upload_form(request: Request[Any, Any, Any], db: DB, data: Multipart) -> Response[Any]:
    """The page's upload form; back to the page (303), or the page with the error (422)."""
    try:
        await add_upload(db, data.file, data.title)
    except ValidationError as exc:
        html = _page(request, await _list(db), error=f"Upload refused: {exc}")
        return Response(html, status_code=422, media_type=MediaType.HTML)
    return Redirect("/", status_code=303)


@post("/documents/{doc_id:int}/delete")
async def delete_form(db: DB, doc_id: DocId) -> Redirect:
    """The page's delete button; the files go after the commit."""
    await db.delete(await _load(db, doc_id))
    await db.commit()
    return Redirect("/", status_code=303)


# -- downloads ------------------------------------------------------------------------------------
@get("/documents/{doc_id:int}/download")
async def download(request: Request[Any, Any, Any], db: DB, doc_id: DocId) -> Response[Any]:
    """Stream the file through the app (Range requests, ETag, 304)."""
    doc = await _load(db, doc_id)
    return file_response(doc.attachment, request=request, disposition="attachment")


@get("/documents/{doc_id:int}/thumbnail")
async def thumbnail(request: Request[Any, Any, Any], db: DB, doc_id: DocId) -> Response[Any]:
    """Stream an image's thumbnail rendition."""
    doc = await _load(db, doc_id)
    if doc.thumbnail is None:
        raise NotFoundException(f"Document {doc_id} has no thumbnail.")
    return file_response(doc.thumbnail, request=request, disposition="inline")


@get("/documents/{doc_id:int}/signed", status_code=302)
async def signed(db: DB, doc_id: DocId) -> Redirect:
    """Redirect to a short-lived signed URL: the storage (or the plugin's route) serves it."""
    doc = await _load(db, doc_id)
    return signed_redirect(doc.attachment, expires_in=SIGNED_URL_LIFETIME)


# -- JSON API -------------------------------------------------------------------------------------
@get("/api/documents")
async def list_documents(db: DB) -> list[DocumentOut]:
    """Every document, newest first."""
    return [DocumentOut.of(doc) for doc in await _list(db)]


@post("/api/documents")
async def create_document(db: DB, data: Multipart) -> DocumentOut:
    """Upload a document (multipart `file`, optional `title`); 413/415/422 when refused."""
    return DocumentOut.of(await add_upload(db, data.file, data.title))


@get("/api/documents/{doc_id:int}")
async def get_document(db: DB, doc_id: DocId) -> DocumentOut:
    """One document."""
    return DocumentOut.of(await _load(db, doc_id))


@delete("/api/documents/{doc_id:int}")
async def delete_document(db: DB, doc_id: DocId) -> None:
    """Delete the row; its file and thumbnail are deleted after the commit."""
    await db.delete(await _load(db, doc_id))
    await db.commit()


# -- direct-to-storage uploads (upload ticket + signed PUT, POST form or multipart) --------------
@dataclass
class UploadRequest:
    filename: str
    size: int | None = None
    content_type: str | None = None


@dataclass
class UploadDone:
    ticket: str
    title: str = ""


@dataclass
class PartsRequest:
    ticket: str
    parts: list[int] = field(default_factory=list)


@dataclass
class TicketOnly:
    ticket: str


JSONBody = Body(media_type=RequestEncodingType.JSON)


@post("/api/uploads")
async def start_upload(
    request: Request[Any, Any, Any], data: Annotated[UploadRequest, JSONBody]
) -> dict[str, Any]:
    """Issue a ticket for one document and say how the browser uploads it itself.

    On S3 the grant is a POST form whose policy the store enforces (size, type, key), or,
    above `MULTIPART_THRESHOLD`, a multipart upload; elsewhere a signed PUT URL.
    Documents only: the image column's policy decodes images and makes thumbnails, which
    needs the bytes to pass through the app (use the form for images).
    """
    tickets: UploadTickets = request.app.state.tickets
    grant = await tickets.issue_async(
        Document.file,
        data.filename,
        max_size=MAX_UPLOAD_SIZE,
        content_types=DOCUMENT_TYPES,
        size=data.size,
        content_type=data.content_type or None,
    )
    return grant.as_dict()


@post("/api/uploads/parts")
async def upload_parts(
    request: Request[Any, Any, Any], data: Annotated[PartsRequest, JSONBody]
) -> dict[str, Any]:
    """Signed URLs for parts of a multipart upload (asked for in batches)."""
    tickets: UploadTickets = request.app.state.tickets
    urls = await tickets.part_urls_async(data.ticket, data.parts or None)
    return {"urls": {str(number): url for number, url in urls.items()}}


@post("/api/uploads/multipart", status_code=204)
async def finish_multipart(
    request: Request[Any, Any, Any], data: Annotated[TicketOnly, JSONBody]
) -> None:
    """Complete a multipart upload once every part is there (checked against the plan)."""
    tickets: UploadTickets = request.app.state.tickets
    await tickets.complete_async(data.ticket)


@post("/api/uploads/abort", status_code=204)
async def abort_multipart(
    request: Request[Any, Any, Any], data: Annotated[TicketOnly, JSONBody]
) -> None:
    """Drop a multipart upload the browser gave up on."""
    tickets: UploadTickets = request.app.state.tickets
    await tickets.abort_async(data.ticket)


@post("/api/uploads/complete")
async def complete_upload(
    request: Request[Any, Any, Any],
    db: DB,
    data: Annotated[UploadDone, JSONBody],
) -> DocumentOut:
    """Turn a ticket into a document once the object is checked (size, sniffed type)."""
    tickets: UploadTickets = request.app.state.tickets
    stored = await tickets.redeem_async(data.ticket)  # refused: the object is deleted
    doc = Document(title=data.title.strip() or stored.filename)
    return DocumentOut.of(await _add(db, doc, stored, image=False))


# -- the app --------------------------------------------------------------------------------------
def create_app(settings: Settings | None = None) -> Litestar:
    """Build the app; `settings` default to the environment (`Settings.from_env()`).

    Example:
        >>> app = create_app(Settings("sqlite+aiosqlite://", "memory://", "x" * 32))
        >>> sorted(r.path for r in app.routes if r.path.startswith("/api/documents"))[:1]
        ['/api/documents']
    """
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
            "(signed links and upload tickets stop working at restart). Set it in production."
        )
    backend = ObstoreBackend(BACKEND, settings.storage_url, prefix=settings.storage_prefix)
    tickets = (
        UploadTickets(_derive(secret, "upload-tickets"), multipart_threshold=MULTIPART_THRESHOLD)
        if settings.direct_uploads
        else None
    )

    @asynccontextmanager
    async def database(app: Litestar) -> AsyncIterator[None]:
        engine = create_async_engine(settings.database_url)
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        app.state.sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
        try:
            yield
        finally:
            await engine.dispose()

    plugin = ObstorePlugin(
        ObstoreConfig(
            backends=[backend],
            signing_secret=_derive(secret, "signed-urls"),
            signed_url_expires_in=SIGNED_URL_LIFETIME,
            tickets=tickets,  # the route refuses uploads through a redeemed ticket's URL
        )
    )
    return Litestar(
        route_handlers=[
            index,
            upload_form,
            delete_form,
            download,
            thumbnail,
            signed,
            list_documents,
            create_document,
            get_document,
            delete_document,
            *(
                [start_upload, upload_parts, finish_multipart, abort_multipart, complete_upload]
                if tickets is not None
                else []
            ),
        ],
        dependencies={"db": Provide(provide_db)},
        plugins=[plugin],  # also answers refused uploads: 413, 415, 422, 404, 409...
        lifespan=[database],
        request_max_body_size=MAX_UPLOAD_SIZE + MIB,
        state=State({"tickets": tickets, "storage_description": backend.describe()}),
    )
