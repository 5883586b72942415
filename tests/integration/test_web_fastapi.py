"""FastAPI at Litestar's level: `StorageExtension`, dependencies, signed URLs in Pydantic output.

The applications run their real lifespan through the ASGI lifespan protocol and are
driven with httpx's `ASGITransport`, on memory and local-file backends (HMAC-signed
through the mounted route) and on S3 (moto, signed natively).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, MutableMapping
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sqlalchemy_obstore import (
    Backend,
    BackendNotFoundError,
    BackendRegistry,
    ConfigurationError,
    FileObject,
    InvalidFileObjectError,
    ObstoreBackend,
    StorageError,
    UnsupportedOperationError,
    ValidationError,
    storages,
)
from sqlalchemy_obstore.contrib.fastapi import (
    Signed,
    SignedFile,
    StorageExtension,
    Storages,
    install_error_handlers,
    presign,
    presign_async,
    provide_backend,
)
from sqlalchemy_obstore.signing import HmacUrlSigner
from tests.integration.backends import s3_backend
from tests.integration.web_apps import ERRORS
from tests.integration.web_scenarios import DATA, SECRET, make_backend, query_of
from tests.servers import MotoServer

BASE = "http://testserver"


@asynccontextmanager
async def running(app: Callable[..., Any]) -> AsyncIterator[dict[str, Any]]:
    """Run the app's lifespan (startup, shutdown); yields the lifespan state."""
    to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    from_app: asyncio.Queue[MutableMapping[str, Any]] = asyncio.Queue()
    state: dict[str, Any] = {}

    async def send(message: MutableMapping[str, Any]) -> None:
        await from_app.put(message)

    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": state}
    task = asyncio.create_task(app(scope, to_app.get, send))
    await to_app.put({"type": "lifespan.startup"})
    started = await from_app.get()
    if started["type"] != "lifespan.startup.complete":
        await asyncio.gather(task, return_exceptions=True)
        raise RuntimeError(started.get("message", "startup failed"))
    try:
        yield state
    finally:
        await to_app.put({"type": "lifespan.shutdown"})
        stopped = await from_app.get()
        assert stopped["type"] == "lifespan.shutdown.complete", stopped
        await task


def client_of(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)


async def save(backend: str, name: str = "doc.txt", data: bytes = DATA) -> FileObject:
    return await FileObject(filename=name, content=data, backend=backend).save_async()


# -- StorageExtension: lifespan, route, state ------------------------------------------------------
@pytest.mark.parametrize("framework", ["starlette", "fastapi"])
async def test_init_app_composes_with_the_apps_own_lifespan(framework: str, tmp_path: Path) -> None:
    backend = make_backend("local", tmp_path)
    seen: list[str] = []

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        seen.append(f"startup sees {sorted(storages)}")  # already registered
        yield {"from_the_app": 1}
        seen.append(f"shutdown sees {sorted(storages)}")  # still registered

    app: Starlette = (Starlette if framework == "starlette" else FastAPI)(lifespan=lifespan)
    extension = StorageExtension([backend], signing_secret=SECRET)
    extension.init_app(app)
    assert app.state.sqlalchemy_obstore is extension
    assert "local" not in storages
    async with running(app) as state:
        assert storages.get_backend("local") is backend
        assert backend.url_signer is extension.signer
        assert state == {"from_the_app": 1}  # the app's lifespan state passes through
        file = await save("local")
        async with client_of(app) as client:  # the signed-URL route is mounted
            url = await file.sign_async(expires_in=60)
            assert url.startswith("/_storage/local/")
            assert (await client.get(url)).content == DATA
    assert seen == ["startup sees ['local']", "shutdown sees ['local']"]
    assert "local" not in storages
    assert backend.url_signer is None


async def test_a_failed_startup_of_the_app_unregisters_the_backends(tmp_path: Path) -> None:
    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        raise RuntimeError("database down")
        yield  # pragma: no cover

    app = FastAPI(lifespan=lifespan)
    StorageExtension([make_backend("memory", tmp_path)]).init_app(app)
    with pytest.raises(RuntimeError, match="database down"):
        async with running(app):
            pass
    assert "memory" not in storages


def test_extension_configuration() -> None:
    with pytest.raises(ConfigurationError, match="at least 32"):
        StorageExtension(signing_secret="short")
    with pytest.raises(ConfigurationError, match="route_path"):
        StorageExtension(route_path="storage")
    extension = StorageExtension(signing_secret=SECRET, previous_signing_secrets=[SECRET[::-1]])
    assert SECRET not in repr(extension)
    assert SECRET[::-1] not in repr(extension)
    with pytest.raises(ConfigurationError, match="needs the signing_secret"):
        StorageExtension().routes()
    app = FastAPI()
    StorageExtension().init_app(app)
    with pytest.raises(ConfigurationError, match="already has a StorageExtension"):
        StorageExtension().init_app(app)
    assert not any(getattr(r, "path", "") == "/_storage" for r in app.routes)  # no secret


async def test_custom_route_path_and_base_url(tmp_path: Path) -> None:
    backend = make_backend("memory", tmp_path)
    app = FastAPI()
    StorageExtension(
        [backend],
        signing_secret=SECRET,
        route_path="/files/signed/",
        base_url="https://app.example.com/files/signed",
    ).init_app(app)
    async with running(app), client_of(app) as client:
        file = await save("memory")
        url = await file.sign_async(expires_in=60)
        assert url.startswith("https://app.example.com/files/signed/memory/")
        assert (await client.get(url.removeprefix("https://app.example.com"))).content == DATA


# -- error statuses ----------------------------------------------------------------------------


def raising_app(framework: str, **extension: Any) -> Starlette:
    """`GET /raise/{n}` raises ERRORS[n]; `/bug` a server-side error (a 500)."""

    async def raise_error(request: Request) -> Response:
        raise ERRORS[int(request.path_params["n"])][0]

    async def bug(request: Request) -> Response:
        raise InvalidFileObjectError("encoding a file that was never saved: a server bug")

    async def cannot_sign(request: Request) -> Response:
        raise UnsupportedOperationError("this store cannot sign")

    routes = [
        Route("/raise/{n:int}", raise_error),
        Route("/bug", bug),
        Route("/cannot-sign", cannot_sign),
    ]
    app = Starlette(routes=routes) if framework == "starlette" else FastAPI(routes=routes)
    StorageExtension(**extension).init_app(app)
    return app


@pytest.mark.parametrize("framework", ["starlette", "fastapi"])
async def test_client_errors_get_their_status_by_default(framework: str) -> None:
    app = raising_app(framework)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        for index, (error, status) in enumerate(ERRORS):
            response = await client.get(f"/raise/{index}")
            assert response.status_code == status, (error, response.text)
            assert response.json() == {
                "status_code": status,
                "detail": str(error),
                "error": type(error).__name__,
            }
        assert (await client.get("/bug")).status_code == 500  # not the client's doing
        assert (await client.get("/cannot-sign")).status_code == 500


async def test_the_apps_own_handlers_are_kept_and_the_default_can_be_off() -> None:
    async def teapot(request: Request, exc: Exception) -> Response:
        return JSONResponse({"mine": type(exc).__name__}, status_code=418)

    # a handler for a class, or for a library class above it, wins; the others stay
    app = raising_app("fastapi")
    assert app.exception_handlers[ValidationError] is not teapot
    mine = FastAPI(routes=app.routes, exception_handlers={ValidationError: teapot})
    StorageExtension().init_app(mine)
    assert mine.exception_handlers[ValidationError] is teapot
    transport = httpx.ASGITransport(app=mine, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        assert (await client.get("/raise/0")).status_code == 418  # FileTooLargeError
        assert (await client.get("/raise/3")).status_code == 404  # ObjectNotFoundError

    everything = FastAPI(routes=app.routes, exception_handlers={StorageError: teapot})
    StorageExtension().init_app(everything)
    assert set(everything.exception_handlers) - {StorageError} == set(FastAPI().exception_handlers)

    off = raising_app("fastapi", error_handlers=False)
    transport = httpx.ASGITransport(app=off, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        assert (await client.get("/raise/0")).status_code == 500

    started = FastAPI()
    async with running(started):
        async with client_of(started) as client:
            await client.get("/")  # builds the middleware stack
        with pytest.raises(ConfigurationError, match="before the application starts"):
            install_error_handlers(started)


# -- dependencies -----------------------------------------------------------------------------
Memory = Annotated[Backend, Depends(provide_backend("memory"))]
Missing = Annotated[Backend, Depends(provide_backend("nope"))]


async def test_dependencies_give_the_registry_and_a_backend(tmp_path: Path) -> None:
    registry = BackendRegistry()
    backend = make_backend("memory", tmp_path)

    app = FastAPI()
    StorageExtension([backend], registry=registry).init_app(app)

    @app.get("/registry")
    async def keys(storages: Storages) -> list[str]:
        return sorted(storages)

    @app.get("/backend")
    async def one(memory: Memory) -> dict[str, Any]:
        return {"key": memory.key, "same": memory is backend}

    @app.get("/missing")
    async def missing(nope: Missing) -> None:  # pragma: no cover - never called
        raise AssertionError

    async with running(app), client_of(app) as client:
        assert (await client.get("/registry")).json() == ["memory"]
        assert (await client.get("/backend")).json() == {"key": "memory", "same": True}
        with pytest.raises(BackendNotFoundError):
            await client.get("/missing")
    assert "memory" not in registry
    assert "memory" not in storages  # the extension's registry, not the default one

    plain = FastAPI()  # no extension: the default registry

    @plain.get("/registry")
    async def default_keys(storages: Storages) -> list[str]:
        return sorted(storages)

    storages.register_backend(ObstoreBackend("default-one", "memory://"))
    async with client_of(plain) as client:
        assert (await client.get("/registry")).json() == ["default-one"]


# -- signed URLs in Pydantic output ----------------------------------------------------------------
class CountingBackend(ObstoreBackend):
    """Records each signing call: (sync or async, number of paths)."""

    calls: list[tuple[str, int]]
    nested: bool = False  # (the async HMAC signing runs the sync one inside)

    def sign(self, path: Any, **kwargs: Any) -> Any:
        if not self.nested:
            self.calls.append(("sync", len(path) if isinstance(path, list) else 1))
        return super().sign(path, **kwargs)

    async def sign_async(self, path: Any, **kwargs: Any) -> Any:
        self.calls.append(("async", len(path) if isinstance(path, list) else 1))
        self.nested = True
        try:
            return await super().sign_async(path, **kwargs)
        finally:
            self.nested = False


def counting(key: str, tmp_path: Path) -> CountingBackend:
    backend = CountingBackend(key, tmp_path / key)
    backend.calls = []
    return backend


class DocumentOut(BaseModel):
    id: int
    file: SignedFile
    thumbnail: Annotated[FileObject | None, Signed(expires_in=60)] = None
    pages: Annotated[list[FileObject], Signed(expires_in=timedelta(minutes=2))] = []
    raw: FileObject | None = None


def document_app(docs: list[DocumentOut]) -> FastAPI:
    """Serves `docs`; its extension signs the registered local and memory backends."""
    app = FastAPI()
    StorageExtension(signing_secret=SECRET).init_app(app)

    @app.get("/documents")
    async def page() -> list[DocumentOut]:
        return await presign_async(docs)

    @app.get("/documents/unsigned-ahead")
    async def page_signed_while_serialising() -> list[DocumentOut]:
        return docs

    @app.get("/documents/{n}")
    async def one(n: int) -> DocumentOut:
        return docs[n]

    return app


async def test_signed_fields_carry_urls_that_download_the_bytes(tmp_path: Path) -> None:
    storages.register_backend(make_backend("local", tmp_path, key="docs"))
    file = await save("docs", "a.txt", b"alpha")
    pages = [await save("docs", f"p{i}.txt", f"page {i}".encode()) for i in range(3)]
    app = document_app([DocumentOut(id=0, file=file, pages=pages, raw=file)])
    async with running(app), client_of(app) as client:
        body = (await client.get("/documents/0")).json()
        assert set(body["file"]) == {*file.to_dict(), "url"}
        assert {k: v for k, v in body["file"].items() if k != "url"} == file.to_dict()
        assert (await client.get(body["file"]["url"])).content == b"alpha"
        assert time.time() + 3500 < int(query_of(body["file"]["url"])["expires"])  # an hour
        assert body["thumbnail"] is None
        assert [(await client.get(p["url"])).content for p in body["pages"]] == [
            b"page 0",
            b"page 1",
            b"page 2",
        ]
        assert int(query_of(body["pages"][0]["url"])["expires"]) <= time.time() + 121
        assert "url" not in body["raw"]  # a plain FileObject field stays plain


async def test_a_page_is_signed_in_one_batch(tmp_path: Path) -> None:
    backend = counting("docs", tmp_path)
    storages.register_backend(backend)
    docs = [DocumentOut(id=i, file=await save("docs", f"{i}.txt")) for i in range(5)]
    app = document_app(docs)
    async with running(app), client_of(app) as client:
        backend.calls.clear()
        listed = (await client.get("/documents")).json()
        assert backend.calls == [("async", 5)]  # presign_async: one batch; serialising: cached
        assert len({d["file"]["url"] for d in listed}) == 5
        assert (await client.get(listed[3]["file"]["url"])).content == DATA

        for doc in docs:
            doc.file.__dict__["_sign_cache"] = {}  # forget the URLs
        backend.calls.clear()
        assert (await client.get("/documents/unsigned-ahead")).status_code == 200
        assert backend.calls == [("sync", 1)] * 5  # no pre-signing: each while serialising

        pages = [await save("docs", f"p{i}.txt") for i in range(4)]
        backend.calls.clear()
        DocumentOut(id=9, file=docs[0].file, pages=pages).model_dump(mode="json")
        assert backend.calls == [("sync", 4)]  # a list field: one batch (the file: cached)


async def test_files_that_cannot_sign_get_a_null_url(tmp_path: Path) -> None:
    plain = ObstoreBackend("plain", tmp_path)  # local files without a signer: cannot sign
    signing = ObstoreBackend("signing", "memory://")
    signing.url_signer = HmacUrlSigner(SECRET, base_url="/_storage")
    storages.register_backend(plain)
    storages.register_backend(signing)
    a, b = await save("plain"), await save("signing")
    out = DocumentOut(id=1, file=a, pages=[a, b, a]).model_dump(mode="json")
    assert out["file"]["url"] is None
    assert [p["url"] is None for p in out["pages"]] == [True, False, True]
    await presign_async(DocumentOut(id=1, file=a, pages=[a, b]))  # never raises either
    presign({"page": [DocumentOut(id=1, file=b)]})
    with pytest.raises(UnsupportedOperationError):
        a.sign()  # (what the null stands for)


def test_signed_fields_validate_like_file_objects_and_drop_an_incoming_url() -> None:
    raw = {"backend": "docs", "path": "k/a.txt", "url": "https://evil.example/x"}
    doc = DocumentOut.model_validate({"id": 1, "file": raw, "pages": [raw]})
    assert doc.file.path == "k/a.txt"
    assert "url" not in doc.file.to_dict()
    assert "url" not in doc.file.metadata
    assert not doc.file.is_trusted  # client data names no stored object by itself
    assert "url" not in doc.pages[0].to_dict()
    with pytest.raises(ConfigurationError, match="Signed annotates FileObject"):

        class Wrong(BaseModel):
            name: Annotated[str, Signed()]


def test_openapi_documents_the_url() -> None:
    app = FastAPI()

    @app.get("/documents")
    async def page() -> list[DocumentOut]:
        return []

    schemas = app.openapi()["components"]["schemas"]
    properties = schemas["DocumentOut"]["properties"]
    assert "url" in properties["file"]["properties"]
    assert properties["file"]["required"] == ["path"]
    assert "url" in properties["thumbnail"]["anyOf"][0]["properties"]
    assert properties["thumbnail"]["anyOf"][1] == {"type": "null"}
    assert properties["pages"]["type"] == "array"
    assert "url" in properties["pages"]["items"]["properties"]
    raw = properties["raw"]["anyOf"][0]
    raw = schemas[raw["$ref"].rsplit("/", 1)[1]] if "$ref" in raw else raw
    assert "url" not in raw["properties"]


@pytest.mark.integration
async def test_signed_urls_from_s3_download_from_s3(moto_server: MotoServer) -> None:
    backend = s3_backend(moto_server, key="docs")
    app = FastAPI()
    StorageExtension([backend]).init_app(app)
    docs: list[DocumentOut] = []

    @app.get("/documents")
    async def page() -> list[DocumentOut]:
        return await presign_async(docs)

    async with running(app), client_of(app) as client:
        docs.append(DocumentOut(id=1, file=await save("docs", "s3.txt", b"from s3")))
        listed = (await client.get("/documents")).json()
        url = listed[0]["file"]["url"]
        assert url.startswith(moto_server.endpoint)
        assert "X-Amz-Signature=" in url
        async with httpx.AsyncClient() as outside:
            assert (await outside.get(url)).content == b"from s3"
