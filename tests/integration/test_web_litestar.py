"""The Litestar integration through Litestar's own test client, on real backends.

Memory and local-file backends sign through the plugin's HMAC route; S3 (moto) signs
natively, and its redirect target is fetched from the S3 server itself. The last test
runs the plugin next to advanced-alchemy's `SQLAlchemyPlugin` with a real SQLite file.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar, Request, Response, delete, get, post, route
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Redirect
from litestar.testing import AsyncTestClient
from sqlalchemy import String
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import NullPool

from sqlalchemy_obstore import (
    BackendAlreadyRegisteredError,
    BackendRegistry,
    ConfigurationError,
    FileObject,
    ObstoreBackend,
    StorageError,
    StoredObject,
    UnsupportedOperationError,
    ValidationError,
    storages,
)
from sqlalchemy_obstore.contrib.litestar import (
    FileResponse,
    ObstoreConfig,
    ObstorePlugin,
    file_response,
    signed_redirect,
)
from sqlalchemy_obstore.signing import HmacUrlSigner
from sqlalchemy_obstore.tickets import UploadTickets
from tests.conftest import PG_SERVER
from tests.docs_snippets import run_in_process
from tests.integration.backends import s3_backend
from tests.integration.web_apps import ERRORS
from tests.integration.web_scenarios import (
    DATA,
    FILES,
    SECRET,
    asgi_lifespan,
    check_active_content_is_attachment,
    check_attachment,
    check_bad_request_headers_are_not_errors,
    check_download,
    check_every_download_path,
    check_not_modified,
    check_put_limits,
    check_put_never_overwrites,
    check_ranges,
    check_redirect,
    check_signed_get,
    check_signed_put,
    check_signed_refusals,
    check_store_serves_the_rule,
    check_ticket_uploads_enforce_limits,
    check_ticket_urls_need_the_tickets,
    check_vanished_object_is_404,
    make_backend,
    query_of,
    relative,
)
from tests.servers import MotoServer

BASE = "http://testserver.local"


def file_handlers() -> list[Any]:
    """Fresh handlers for every application (Litestar caches resolved encoders on them)."""

    @route("/files/{name:str}", http_method=["GET", "HEAD"])
    async def download(name: FromPath[str]) -> FileResponse:
        return file_response(FILES[name])

    @get("/files/{name:str}/attachment")
    async def download_attachment(
        name: FromPath[str], request: Request[Any, Any, Any]
    ) -> FileResponse:
        return file_response(
            FILES[name], request=request, disposition="attachment", filename="renamed.bin"
        )

    @get("/files/{name:str}/link")
    async def link(name: FromPath[str]) -> Redirect:
        return signed_redirect(FILES[name], expires_in=60)

    @get("/files/{name:str}/json")
    async def as_json(name: FromPath[str]) -> FileObject:
        return FILES[name]

    @get("/files/{name:str}/in-a-list")
    async def in_a_list(name: FromPath[str]) -> dict[str, list[FileObject]]:
        return {"files": [FILES[name], FILES[name]]}

    @get("/registry")
    async def registry_keys(storages: NamedDependency[BackendRegistry]) -> list[str]:
        return sorted(storages)

    return [download, download_attachment, link, as_json, in_a_list, registry_keys]


def make_app(config: ObstoreConfig, *handlers: Any, plugins: tuple[Any, ...] = ()) -> Litestar:
    return Litestar(
        route_handlers=[*file_handlers(), *handlers],
        plugins=[ObstorePlugin(config), *plugins],
        debug=False,
    )


@pytest.fixture(autouse=True)
def _no_files() -> Iterator[None]:
    FILES.clear()
    yield
    FILES.clear()


@pytest.fixture(params=["memory", "local"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def save(backend: str, filename: str, data: bytes = DATA) -> FileObject:
    return await FileObject(filename=filename, content=data, backend=backend).save_async()


def contains(error: BaseException, kind: type[BaseException]) -> bool:
    """Whether `error` is, or (in exception groups) holds, an error of `kind`."""
    if isinstance(error, kind):
        return True
    return any(contains(e, kind) for e in getattr(error, "exceptions", ()))


# -- plugin: lifespan and dependency injection ---------------------------------------------------
async def test_lifespan_registers_attaches_and_releases(tmp_path: Path) -> None:
    memory = make_backend("memory", tmp_path)
    local = make_backend("local", tmp_path)
    elsewhere = ObstoreBackend("registered-elsewhere", "memory://")
    storages.register_backend(elsewhere)
    config = ObstoreConfig(backends=[memory, local], signing_secret=SECRET)
    assert "memory" not in storages

    async with AsyncTestClient(make_app(config), base_url=BASE) as client:
        assert storages.get_backend("memory") is memory
        assert storages.get_backend("local") is local
        assert memory.url_signer is config.signer
        assert local.url_signer is config.signer
        assert elsewhere.url_signer is config.signer
        response = await client.get("/registry")
        assert response.json() == ["local", "memory", "registered-elsewhere"]

    assert "memory" not in storages
    assert "local" not in storages
    assert storages.get_backend("registered-elsewhere") is elsewhere  # not ours to remove
    assert memory.url_signer is None
    assert elsewhere.url_signer is None


async def test_failed_startup_leaves_nothing_registered(tmp_path: Path) -> None:
    storages.register_backend(ObstoreBackend("local", "memory://"))
    memory = make_backend("memory", tmp_path)
    config = ObstoreConfig(backends=[memory, make_backend("local", tmp_path)])
    with pytest.raises(BaseException) as caught:  # the test client wraps it in a group
        async with AsyncTestClient(make_app(config), base_url=BASE):
            pass
    assert contains(caught.value, BackendAlreadyRegisteredError)
    assert "memory" not in storages
    assert storages.get_backend("local").key == "local"


async def test_dependency_provides_a_custom_registry(tmp_path: Path) -> None:
    registry = BackendRegistry()
    config = ObstoreConfig(backends=[make_backend("memory", tmp_path)], registry=registry)
    async with AsyncTestClient(make_app(config), base_url=BASE) as client:
        assert (await client.get("/registry")).json() == ["memory"]
        assert "memory" not in storages
    assert "memory" not in registry


def test_config_validation_and_repr() -> None:
    with pytest.raises(ConfigurationError, match="at least 32"):
        ObstoreConfig(signing_secret="too-short")
    with pytest.raises(ConfigurationError, match="route_path"):
        ObstoreConfig(route_path="storage")
    config = ObstoreConfig(signing_secret=SECRET, previous_signing_secrets=[SECRET[::-1]])
    assert SECRET not in repr(config)
    assert SECRET[::-1] not in repr(config)
    assert SECRET not in repr(ObstorePlugin(config))
    assert ObstoreConfig().signer is None


# -- downloads -----------------------------------------------------------------------------------
async def test_file_response_streams_with_headers_ranges_and_revalidation(
    kind: str, tmp_path: Path
) -> None:
    backend = make_backend(kind, tmp_path)
    async with AsyncTestClient(make_app(ObstoreConfig(backends=[backend])), base_url=BASE) as c:
        FILES["doc"] = await save(kind, "Résumé 2026.pdf")
        FILES["page"] = await save(kind, "page.html", b"<html><script>alert(1)</script></html>")
        await check_download(c, "/files/doc", FILES["doc"])
        await check_attachment(c, "/files/doc/attachment")
        await check_ranges(c, "/files/doc")
        await check_not_modified(c, "/files/doc")
        await check_active_content_is_attachment(c, "/files/page")


async def test_file_response_heads_a_file_known_only_by_path(tmp_path: Path) -> None:
    backend = make_backend("local", tmp_path)
    async with AsyncTestClient(make_app(ObstoreConfig(backends=[backend])), base_url=BASE) as c:
        saved = await save("local", "data.bin")
        FILES["bare"] = FileObject(backend="local", path=saved.path)
        response = await c.get("/files/bare", headers={"Range": "bytes=10-19"})
        assert response.status_code == 206
        assert response.content == DATA[10:20]
        assert response.headers["content-range"] == f"bytes 10-19/{len(DATA)}"
        assert response.headers["etag"]
        # The object vanishes behind the row's back: 404, not a broken stream.
        await backend.delete_async(str(saved.path))
        assert (await c.get("/files/bare")).status_code == 404


# -- issue 13 and 14: every download path --------------------------------------------------------
@asynccontextmanager
async def streaming_client(config: ObstoreConfig) -> AsyncIterator[httpx.AsyncClient]:
    """httpx's ASGI transport (request bodies really stream) around the plugin's app."""
    app = make_app(config)
    transport = httpx.ASGITransport(app=app)
    async with asgi_lifespan(app), httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        yield client


async def test_every_download_path_serves_uploads_safely(kind: str, tmp_path: Path) -> None:
    config = ObstoreConfig(backends=[make_backend(kind, tmp_path)], signing_secret=SECRET)
    async with AsyncTestClient(make_app(config), base_url=BASE) as client:
        await check_every_download_path(client, kind)
        FILES["doc"] = await save(kind, "doc.bin")
        await check_bad_request_headers_are_not_errors(client, "/files/doc")
        await check_bad_request_headers_are_not_errors(
            client, relative(await FILES["doc"].sign_async(expires_in=60))
        )


async def test_a_vanished_object_is_404(kind: str, tmp_path: Path) -> None:
    config = ObstoreConfig(backends=[make_backend(kind, tmp_path)], signing_secret=SECRET)
    async with AsyncTestClient(make_app(config), base_url=BASE) as client:
        await check_vanished_object_is_404(client, kind)


async def test_ticket_uploads_are_limited_while_streaming_and_end_at_redeem(
    kind: str, tmp_path: Path
) -> None:
    tickets = UploadTickets(SECRET)
    backend = make_backend(kind, tmp_path)
    config = ObstoreConfig(backends=[backend], signing_secret=SECRET, tickets=tickets)
    async with streaming_client(config) as client:
        await check_ticket_uploads_enforce_limits(client, backend, tickets)
    other = make_backend(kind, tmp_path, key="other")
    async with streaming_client(ObstoreConfig(backends=[other], signing_secret=SECRET)) as client:
        await check_ticket_urls_need_the_tickets(client, other, tickets)


# -- signed URLs on local and memory ------------------------------------------------------------
async def test_signed_get_and_put_through_the_mounted_route(kind: str, tmp_path: Path) -> None:
    backend = make_backend(kind, tmp_path)
    limited = make_backend(kind, tmp_path, key=f"{kind}-limited", limited=True)
    config = ObstoreConfig(backends=[backend, limited], signing_secret=SECRET)
    assert config.signer is not None
    # httpx's ASGI transport streams request bodies chunk by chunk (Litestar's test
    # client reads them whole first), so the PUTs below really stream into the backend.
    app = make_app(config)
    transport = httpx.ASGITransport(app=app)
    async with asgi_lifespan(app), httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        await check_signed_get(client, await save(kind, "report.pdf"))
        await check_signed_put(client, backend)
        await check_signed_refusals(client, backend, config.signer)
        await check_put_limits(client, limited)
        await check_put_never_overwrites(client, backend, config.signer)


async def test_route_limit_applies_without_a_policy(tmp_path: Path) -> None:
    backend = make_backend("memory", tmp_path)
    config = ObstoreConfig(backends=[backend], signing_secret=SECRET, max_upload_size=10)
    async with AsyncTestClient(make_app(config), base_url=BASE) as client:
        file = FileObject(filename="a.bin", backend="memory")
        url = relative((await file.sign_upload_async()).url)
        assert (await client.put(url, content=b"x" * 11)).status_code == 413
        assert not await backend.exists_async(str(file.path))
        assert (await client.put(url, content=b"x" * 10)).status_code == 200


async def test_signed_redirect_on_local_and_memory(kind: str, tmp_path: Path) -> None:
    backend = make_backend(kind, tmp_path)
    config = ObstoreConfig(backends=[backend], signing_secret=SECRET)
    async with AsyncTestClient(make_app(config), base_url=BASE) as client:
        FILES["doc"] = await save(kind, "doc.txt")
        location = await check_redirect(
            client, "/files/doc/link", location_prefix=f"/_storage/{kind}/"
        )
        assert int(query_of(location)["expires"]) <= time.time() + 61
        followed = await client.get("/files/doc/link", follow_redirects=True)
        assert followed.status_code == 200
        assert followed.content == DATA


async def test_custom_route_path_and_absolute_base_url(tmp_path: Path) -> None:
    backend = make_backend("local", tmp_path)
    config = ObstoreConfig(
        backends=[backend],
        signing_secret=SECRET,
        route_path="/signed-files/",
        base_url=f"{BASE}/signed-files",
        signed_url_expires_in=120,
    )
    async with AsyncTestClient(make_app(config), base_url=BASE) as client:
        FILES["doc"] = await save("local", "doc.txt")
        url = (await client.get("/files/doc/json")).json()["url"]
        assert url.startswith(f"{BASE}/signed-files/local/")
        response = await client.get(url)
        assert response.status_code == 200
        assert response.content == DATA
        assert (
            await client.get(relative(url).replace("/signed-files", "/_storage"))
        ).status_code == 404


async def test_without_a_secret_nothing_is_mounted_and_local_cannot_sign(tmp_path: Path) -> None:
    backend = make_backend("local", tmp_path)
    config = ObstoreConfig(backends=[backend], signed_url_expires_in=60)
    async with AsyncTestClient(make_app(config), base_url=BASE) as client:
        FILES["doc"] = await save("local", "doc.txt")
        assert (await client.get("/files/doc/json")).json()["url"] is None
        signer = HmacUrlSigner(SECRET)
        url = signer.url_for("local", str(FILES["doc"].path), method="GET", expires=2**31)
        assert (await client.get(url)).status_code == 404
        assert (await client.get("/files/doc/link")).status_code == 500  # cannot sign


# -- encoding ------------------------------------------------------------------------------------
async def test_encoder_writes_the_column_shape_with_and_without_url(tmp_path: Path) -> None:
    backend = make_backend("memory", tmp_path)
    plain = ObstoreConfig(backends=[backend])
    async with AsyncTestClient(make_app(plain), base_url=BASE) as client:
        FILES["doc"] = await save("memory", "doc.txt")
        body = (await client.get("/files/doc/json")).json()
        assert body == FILES["doc"].to_dict()
        assert "url" not in body
        listed = (await client.get("/files/doc/in-a-list")).json()
        assert listed == {"files": [FILES["doc"].to_dict()] * 2}
        FILES["pending"] = FileObject(filename="p.txt", content=b"not saved", backend="memory")
        assert (await client.get("/files/pending/json")).status_code == 500

    signing = ObstoreConfig(backends=[backend], signing_secret=SECRET, signed_url_expires_in=90)
    async with AsyncTestClient(make_app(signing), base_url=BASE) as client:
        body = (await client.get("/files/doc/json")).json()
        url = body.pop("url")
        assert body == FILES["doc"].to_dict()
        assert url.startswith("/_storage/memory/")
        assert time.time() + 80 < int(query_of(url)["expires"]) <= time.time() + 91
        assert (await client.get(url)).content == DATA


async def test_openapi_documents_the_file_shape(tmp_path: Path) -> None:
    config = ObstoreConfig(backends=[make_backend("memory", tmp_path)], signed_url_expires_in=60)
    async with AsyncTestClient(make_app(config), base_url=BASE) as client:
        schema = (await client.get("/schema/openapi.json")).json()
    operation = schema["paths"]["/files/{name}/json"]["get"]
    file_schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert file_schema["title"] == "FileObject"
    assert file_schema["required"] == ["path"]
    assert {"backend", "filename", "size", "etag", "metadata", "url"} <= set(
        file_schema["properties"]
    )


# -- S3: native signing, redirect fetched from the S3 server ----------------------------------
async def test_redirect_to_s3_and_stream_from_s3(moto_server: MotoServer) -> None:
    backend = s3_backend(moto_server, key="s3", prefix=f"web-{time.time_ns()}")
    config = ObstoreConfig(backends=[backend], signing_secret=SECRET, signed_url_expires_in=60)
    async with AsyncTestClient(make_app(config), base_url=BASE) as client:
        assert backend.url_signer is None  # S3 signs natively
        FILES["doc"] = await save("s3", "report.pdf")
        location = await check_redirect(
            client, "/files/doc/link", location_prefix=moto_server.endpoint
        )
        async with httpx.AsyncClient(trust_env=False, timeout=10) as s3_client:
            fetched = await s3_client.get(location)
        assert fetched.status_code == 200
        assert fetched.content == DATA
        assert (await client.get("/files/doc/json")).json()["url"].startswith(moto_server.endpoint)
        await check_download(client, "/files/doc", FILES["doc"])
        await check_ranges(client, "/files/doc")
        await check_not_modified(client, "/files/doc")
        await check_store_serves_the_rule(client, "s3")
        await check_every_download_path(client, "s3", signed=False)
        await check_vanished_object_is_404(client, "s3", signed=False)


# -- next to advanced-alchemy's SQLAlchemyPlugin -----------------------------------------------
class Base(DeclarativeBase):
    pass


class Document(Base):
    __tablename__ = "web_documents"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(100))
    file: Mapped[FileObject] = mapped_column(StoredObject(backend="docs"))


def document_handlers() -> list[Any]:
    """Fresh handlers of a small document API using advanced-alchemy's `db_session`."""

    @post("/documents/{title:str}")
    async def create_document(
        title: FromPath[str],
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
    ) -> dict[str, Any]:
        async def body() -> AsyncIterator[bytes]:
            async for chunk in request.stream():
                yield chunk

        document = Document(title=title, file=FileObject(filename=f"{title}.bin", content=body()))
        db_session.add(document)
        await db_session.commit()
        return {"id": document.id, "title": document.title, "file": document.file}

    @get("/documents/{doc_id:int}")
    async def read_document(
        doc_id: FromPath[int], db_session: NamedDependency[AsyncSession]
    ) -> dict[str, Any]:
        document = await db_session.get_one(Document, doc_id)
        return {"id": document.id, "title": document.title, "file": document.file}

    @get("/documents/{doc_id:int}/download")
    async def download_document(
        doc_id: FromPath[int], db_session: NamedDependency[AsyncSession]
    ) -> FileResponse:
        document = await db_session.get_one(Document, doc_id)
        return file_response(document.file, disposition="attachment")

    @post("/documents/{doc_id:int}/replace", status_code=200)
    async def replace_document(
        doc_id: FromPath[int],
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
    ) -> dict[str, Any]:
        document = await db_session.get_one(Document, doc_id)
        document.file = FileObject(filename="replaced.bin", content=await request.body())
        await db_session.commit()
        return {"id": document.id, "file": document.file}

    @delete("/documents/{doc_id:int}")
    async def delete_document(
        doc_id: FromPath[int], db_session: NamedDependency[AsyncSession]
    ) -> None:
        await db_session.delete(await db_session.get_one(Document, doc_id))
        await db_session.commit()

    return [create_document, read_document, download_document, replace_document, delete_document]


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
    database = request.getfixturevalue("pg_database")
    return f"postgresql+asyncpg://{PG_SERVER}/{database}"


async def test_alongside_advanced_alchemy_sqlalchemy_plugin(
    tmp_path: Path, database_url: str
) -> None:
    from advanced_alchemy.extensions.litestar import (
        AsyncSessionConfig,
        EngineConfig,
        SQLAlchemyAsyncConfig,
        SQLAlchemyPlugin,
    )

    database = SQLAlchemyAsyncConfig(
        connection_string=database_url,
        # No pool: the test client runs the app in its own event loop, and a pooled
        # connection checked in after the shutdown would outlive that loop.
        engine_config=EngineConfig(poolclass=NullPool),
        metadata=Base.metadata,
        create_all=True,
        session_config=AsyncSessionConfig(expire_on_commit=False),
    )
    alchemy = SQLAlchemyPlugin(config=database)
    docs = make_backend("local", tmp_path, key="docs")
    config = ObstoreConfig(backends=[docs], signing_secret=SECRET, signed_url_expires_in=60)
    app = make_app(config, *document_handlers(), plugins=(alchemy,))
    async with AsyncTestClient(app, base_url=BASE) as client:
        created = await client.post("/documents/q3", content=DATA)
        assert created.status_code == 201, created.text
        doc_id = created.json()["id"]
        stored = created.json()["file"]
        assert stored["backend"] == "docs"
        assert stored["size"] == len(DATA)
        assert stored["filename"] == "q3.bin"

        read = (await client.get(f"/documents/{doc_id}")).json()
        url = read["file"].pop("url")
        stored.pop("url")
        assert read["file"] == stored
        assert (await client.get(url)).content == DATA

        response = await client.get(f"/documents/{doc_id}/download", headers={"Range": "bytes=0-3"})
        assert response.status_code == 206
        assert response.content == DATA[:4]
        disposition = response.headers["content-disposition"]
        assert disposition.startswith('attachment; filename="q3.bin"')

        # The session lifecycle runs inside the plugin's sessions: a replaced file is
        # deleted after the commit, and so is the file of a deleted row.
        replaced = await client.post(f"/documents/{doc_id}/replace", content=b"new")
        assert replaced.status_code == 200, replaced.text
        new_path = replaced.json()["file"]["path"]
        assert not await docs.exists_async(stored["path"])
        assert await docs.get_bytes_async(new_path) == b"new"
        assert (await client.delete(f"/documents/{doc_id}")).status_code == 204
        assert not await docs.exists_async(new_path)


# -- the documented application (docs/how-to/web-litestar.md) ---------------------------------
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 8 + b"\n%%EOF\n"


async def test_the_documented_application(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every block of the page, run in order as written: the application with
    advanced-alchemy's SQLAlchemyPlugin and ObstorePlugin together, warning-free
    (filterwarnings=error); then its variant without advanced-alchemy, with the page's
    other handlers (the registry, a download, a redirect) registered on it."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("STORAGE_URL", (tmp_path / "files").as_uri())
    monkeypatch.setenv("STORAGE_SIGNING_SECRET", SECRET)
    page_name = "how-to/web-litestar.md"
    page = run_in_process(page_name, until="## Without advanced-alchemy")
    # In this event loop (not the test client's thread): the engine the plugin creates at
    # startup and disposes at shutdown lives and dies in one loop.
    try:
        async with asgi_lifespan(page.app), in_process(page.app) as client:
            await check_documented_app(client, tmp_path)
    finally:
        # advanced-alchemy disposes its engine at shutdown only under the state key it
        # started with; a second config in one process gets another key (db_engine_1)
        await page.alchemy.config[0].get_engine().dispose()

    run_in_process(page_name, page)  # the rest of the page
    for handler in (page.backends, page.link):
        page.app.register(handler)
    async with page.engine.begin() as connection:
        await connection.run_sync(page.Base.metadata.drop_all)
        await connection.run_sync(page.Base.metadata.create_all)
    try:  # (the module-level engine's connections live in this loop too)
        async with asgi_lifespan(page.app), in_process(page.app) as client:
            assert (await client.get("/backends")).json() == ["uploads"]
            created = await client.post("/documents", files={"file": ("a.pdf", PDF)})
            link = await client.get(f"/documents/{created.json()['id']}/link")
            assert link.status_code == 302, link.text
            assert (await client.get(link.headers["location"])).content == PDF
            assert (await client.delete(f"/documents/{created.json()['id']}")).status_code == 204
            await check_documented_app(client, tmp_path)
    finally:
        await page.engine.dispose()


def in_process(app: Litestar) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)


async def check_documented_app(client: httpx.AsyncClient, tmp_path: Path) -> None:
    created = await client.post(
        "/documents", files={"file": ("q3.pdf", PDF, "application/pdf")}, data={"title": "Q3"}
    )
    assert created.status_code == 201, created.text
    doc = created.json()
    assert (doc["title"], doc["file"]["filename"], doc["file"]["size"]) == (
        "Q3",
        "q3.pdf",
        len(PDF),
    )
    assert doc["file"]["path"].startswith("uploads/")  # the backend's prefix
    assert (await client.get(doc["file"]["url"])).content == PDF  # signed, served by the route
    read = (await client.get(f"/documents/{doc['id']}")).json()
    assert read["file"]["path"] == doc["file"]["path"]
    part = await client.get(f"/documents/{doc['id']}/download", headers={"Range": "bytes=0-7"})
    assert (part.status_code, part.content) == (206, PDF[:8])

    refused = await client.post(
        "/documents", files={"file": ("page.html", b"<html><script>", "text/html")}
    )
    assert refused.status_code == 415, refused.text  # the plugin's error statuses
    assert refused.json()["error"] == "InvalidContentTypeError"

    stored = tmp_path / "files" / doc["file"]["path"]
    assert stored.read_bytes() == PDF
    assert (await client.delete(f"/documents/{doc['id']}")).status_code == 204
    assert not stored.exists()  # deleted after the commit
    assert [p for p in (tmp_path / "files").rglob("*") if p.is_file()] == []


# -- error statuses ------------------------------------------------------------------------------
def raising_handlers() -> list[Any]:
    @get("/raise/{n:int}")
    async def raise_error(n: FromPath[int]) -> None:
        raise ERRORS[n][0]

    @get("/not-signing")
    async def not_signing() -> None:
        raise UnsupportedOperationError("this store cannot sign")

    return [raise_error, not_signing]


async def test_the_plugin_answers_client_errors_with_their_status() -> None:
    app = Litestar(raising_handlers(), plugins=[ObstorePlugin()], debug=False)
    async with AsyncTestClient(app, base_url=BASE) as client:
        for index, (error, status) in enumerate(ERRORS):
            response = await client.get(f"/raise/{index}")
            assert response.status_code == status, (error, response.text)
            assert response.json() == {
                "status_code": status,
                "detail": str(error),
                "error": type(error).__name__,
            }
        assert (await client.get("/not-signing")).status_code == 500


async def test_the_apps_own_handlers_are_kept_and_the_default_can_be_off() -> None:
    def teapot(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
        return Response({"mine": type(exc).__name__}, status_code=418)

    mine = Litestar(
        raising_handlers(),
        plugins=[ObstorePlugin()],
        exception_handlers={ValidationError: teapot},
        debug=False,
    )
    assert mine.exception_handlers[ValidationError] is teapot
    async with AsyncTestClient(mine, base_url=BASE) as client:
        assert (await client.get("/raise/0")).status_code == 418  # FileTooLargeError: theirs
        assert (await client.get("/raise/3")).status_code == 404  # ObjectNotFoundError: ours

    everything = Litestar(
        raising_handlers(),
        plugins=[ObstorePlugin()],
        exception_handlers={StorageError: teapot},
        debug=False,
    )
    async with AsyncTestClient(everything, base_url=BASE) as client:
        assert (await client.get("/raise/3")).status_code == 418

    off = Litestar(raising_handlers(), plugins=[ObstorePlugin(ObstoreConfig(error_handlers=False))])
    async with AsyncTestClient(off, base_url=BASE) as client:
        assert (await client.get("/raise/0")).status_code == 500


def test_the_plugin_extends_litestars_cli() -> None:
    from litestar.plugins import CLIPluginProtocol

    app = Litestar([], plugins=[ObstorePlugin()])
    assert any(isinstance(p, ObstorePlugin) for p in app.plugins.cli)
    assert isinstance(ObstorePlugin(), CLIPluginProtocol)
    # (the command itself runs in tests/e2e/test_cli_apps.py, through Litestar's CLI)
