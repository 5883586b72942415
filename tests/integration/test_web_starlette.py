"""The Starlette/FastAPI integration through httpx's ASGI transport, on real backends.

The applications run their real lifespan (`storage_lifespan` composed into the app's
own) through the ASGI lifespan protocol; httpx's `ASGITransport` streams request bodies
chunk by chunk, so signed PUTs really stream into the backend. Memory and local-file
backends sign through the mounted HMAC route; S3 (moto) signs natively and its redirect
target is fetched from the S3 server itself.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from sqlalchemy_obstore import (
    BackendAlreadyRegisteredError,
    BackendRegistry,
    ConfigurationError,
    FileObject,
    ObstoreBackend,
    StorageError,
    storages,
)
from sqlalchemy_obstore.contrib.starlette import (
    FileStreamingResponse,
    file_response,
    signed_redirect,
    storage_lifespan,
    storage_routes,
)
from sqlalchemy_obstore.signing import HmacUrlSigner
from sqlalchemy_obstore.tickets import UploadTickets
from sqlalchemy_obstore.uploads import error_status
from tests.integration.backends import s3_backend
from tests.integration.web_scenarios import (
    DATA,
    FILES,
    SECRET,
    asgi_lifespan,
    assert_served_safely,
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

BASE = "http://testserver"


def fastapi_app(
    backends: Sequence[ObstoreBackend],
    *,
    signing_secret: str | None = SECRET,
    registry: BackendRegistry = storages,
    max_upload_size: int | None = None,
    tickets: UploadTickets | None = None,
) -> FastAPI:
    """The app a FastAPI user writes: lifespan, mounted routes, download endpoints.

    With the `StorageError` handler the how-to documents installed.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with storage_lifespan(backends, registry=registry, signing_secret=signing_secret):
            yield

    app = FastAPI(lifespan=lifespan)
    if signing_secret is not None:
        app.mount(
            "/_storage",
            storage_routes(
                registry=registry,
                signing_secret=signing_secret,
                max_upload_size=max_upload_size,
                tickets=tickets,
            ),
        )

    @app.exception_handler(StorageError)
    async def storage_error(request: Request, exc: StorageError) -> Response:
        return JSONResponse({"error": type(exc).__name__}, status_code=error_status(exc) or 500)

    @app.api_route("/files/{name}", methods=["GET", "HEAD"])
    async def download(name: str, request: Request) -> FileStreamingResponse:
        return file_response(FILES[name], request)

    @app.api_route("/files/{name}/small-chunks", methods=["GET", "HEAD"])
    async def download_in_small_chunks(name: str, request: Request) -> FileStreamingResponse:
        return file_response(FILES[name], request, chunk_size=1000)

    @app.get("/files/{name}/attachment")
    async def download_attachment(name: str, request: Request) -> FileStreamingResponse:
        return file_response(FILES[name], request, disposition="attachment", filename="renamed.bin")

    @app.get("/files/{name}/link")
    async def link(name: str) -> Response:
        return signed_redirect(FILES[name], expires_in=60)

    return app


def starlette_app(backends: Sequence[ObstoreBackend]) -> Starlette:
    """The same with plain Starlette routes."""

    async def download(request: Request) -> Response:
        return file_response(FILES[request.path_params["name"]], request)

    async def link(request: Request) -> Response:
        return signed_redirect(FILES[request.path_params["name"]], expires_in=60)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with storage_lifespan(backends, signing_secret=SECRET):
            yield

    return Starlette(
        routes=[
            Route("/files/{name}", download, methods=["GET", "HEAD"]),
            Route("/files/{name}/link", link),
            Mount("/_storage", app=storage_routes(signing_secret=SECRET)),
        ],
        lifespan=lifespan,
    )


@asynccontextmanager
async def serve(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """Start the app's lifespan and give a client talking to it in-process."""
    transport = httpx.ASGITransport(app=app)
    async with asgi_lifespan(app), httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        yield client


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


# -- lifespan ------------------------------------------------------------------------------------
async def test_lifespan_registers_attaches_and_releases(tmp_path: Path) -> None:
    memory = make_backend("memory", tmp_path)
    local = make_backend("local", tmp_path)
    elsewhere = ObstoreBackend("registered-elsewhere", "memory://")
    storages.register_backend(elsewhere)
    async with serve(fastapi_app([memory, local])):
        assert storages.get_backend("memory") is memory
        assert storages.get_backend("local") is local
        signer = memory.url_signer
        assert isinstance(signer, HmacUrlSigner)
        assert local.url_signer is signer
        assert elsewhere.url_signer is signer
        assert signer.base_url == "/_storage"
    assert "memory" not in storages
    assert "local" not in storages
    assert storages.get_backend("registered-elsewhere") is elsewhere
    assert memory.url_signer is None
    assert elsewhere.url_signer is None


async def test_lifespan_yields_the_registry_and_undoes_a_failed_start(tmp_path: Path) -> None:
    registry = BackendRegistry()
    memory = make_backend("memory", tmp_path)
    async with storage_lifespan([memory], registry=registry) as yielded:
        assert yielded is registry
        assert list(registry) == ["memory"]
        assert memory.url_signer is None  # no secret: nothing attached
    assert list(registry) == []

    registry.register_backend(ObstoreBackend("local", "memory://"))
    with pytest.raises(BackendAlreadyRegisteredError):
        async with storage_lifespan(
            [memory, make_backend("local", tmp_path)], registry=registry, signing_secret=SECRET
        ):
            pass
    assert list(registry) == ["local"]
    assert memory.url_signer is None


def test_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="signing_secret"):
        storage_routes()
    with pytest.raises(ConfigurationError, match="not both"):
        storage_routes(signing_secret=SECRET, signer=HmacUrlSigner(SECRET))
    with pytest.raises(ConfigurationError, match="at least 32"):
        storage_routes(signing_secret="short")


# -- downloads -----------------------------------------------------------------------------------
async def test_file_response_streams_with_headers_ranges_and_revalidation(
    kind: str, tmp_path: Path
) -> None:
    async with serve(fastapi_app([make_backend(kind, tmp_path)])) as client:
        FILES["doc"] = await save(kind, "Résumé 2026.pdf")
        FILES["page"] = await save(kind, "page.svg", b'<svg xmlns="http://www.w3.org/2000/svg"/>')
        await check_download(client, "/files/doc", FILES["doc"])
        await check_attachment(client, "/files/doc/attachment")
        await check_ranges(client, "/files/doc")
        await check_not_modified(client, "/files/doc")
        # Whole bodies and ranges read in many pieces (several reads per range).
        await check_download(client, "/files/doc/small-chunks", FILES["doc"])
        await check_ranges(client, "/files/doc/small-chunks")
        response = await client.get("/files/page")
        assert response.headers["content-type"] == "image/svg+xml"
        assert response.headers["content-disposition"].startswith("attachment;")
        assert response.headers["content-security-policy"] == "sandbox"


async def test_plain_starlette_app(tmp_path: Path) -> None:
    backend = make_backend("local", tmp_path)
    async with serve(starlette_app([backend])) as client:
        FILES["doc"] = await save("local", "notes.txt")
        FILES["page"] = await save("local", "page.html", b"<html></html>")
        await check_download(client, "/files/doc", FILES["doc"])
        await check_ranges(client, "/files/doc")
        await check_active_content_is_attachment(client, "/files/page")
        location = await check_redirect(
            client, "/files/doc/link", location_prefix="/_storage/local/"
        )
        assert (await client.get(location)).content == DATA
        await check_signed_put(client, backend)


# -- issue 13 and 14: every download path --------------------------------------------------------
async def test_every_download_path_serves_uploads_safely(kind: str, tmp_path: Path) -> None:
    async with serve(fastapi_app([make_backend(kind, tmp_path)])) as client:
        await check_every_download_path(client, kind)
        FILES["doc"] = await save(kind, "doc.bin")
        await check_bad_request_headers_are_not_errors(client, "/files/doc")
        await check_bad_request_headers_are_not_errors(
            client, relative(await FILES["doc"].sign_async(expires_in=60))
        )


async def test_objects_written_by_others_are_served_by_the_rule(tmp_path: Path) -> None:
    """Attributes stored by an older version (or anyone): inline and raw names not trusted."""
    backend = make_backend("memory", tmp_path)
    async with serve(fastapi_app([backend])) as client:
        await backend.put_async(
            "old/page.html",
            b"<script>alert(1)</script>",
            attributes={
                "Content-Type": "text/html",
                "Content-Disposition": "inline; filename*=UTF-8''..%2F..%2Fevil%E2%80%AE.html",
            },
        )
        url = relative(await FileObject(backend="memory", path="old/page.html").sign_async())
        response = await client.get(url)
        assert_served_safely(response, inline=False, filename="evil.html")


async def test_plain_starlette_download_paths(tmp_path: Path) -> None:
    async with serve(starlette_app([make_backend("memory", tmp_path)])) as client:
        await check_every_download_path(client, "memory")
        await check_vanished_object_is_404(client, "memory")


async def test_a_vanished_object_is_404_with_the_error_handler_installed(
    kind: str, tmp_path: Path
) -> None:
    async with serve(fastapi_app([make_backend(kind, tmp_path)])) as client:
        await check_vanished_object_is_404(client, kind)


async def test_ticket_uploads_are_limited_while_streaming_and_end_at_redeem(
    kind: str, tmp_path: Path
) -> None:
    tickets = UploadTickets(SECRET)
    backend = make_backend(kind, tmp_path)
    async with serve(fastapi_app([backend], tickets=tickets)) as client:
        await check_ticket_uploads_enforce_limits(client, backend, tickets)
    async with serve(fastapi_app([make_backend(kind, tmp_path, key="other")])) as client:
        await check_ticket_urls_need_the_tickets(client, storages.get_backend("other"), tickets)


# -- signed URLs on local and memory ------------------------------------------------------------
async def test_signed_get_and_put_through_the_mounted_routes(kind: str, tmp_path: Path) -> None:
    backend = make_backend(kind, tmp_path)
    limited = make_backend(kind, tmp_path, key=f"{kind}-limited", limited=True)
    async with serve(fastapi_app([backend, limited])) as client:
        signer = backend.url_signer
        assert isinstance(signer, HmacUrlSigner)
        await check_signed_get(client, await save(kind, "report.pdf"))
        await check_signed_put(client, backend)
        await check_signed_refusals(client, backend, signer)
        await check_put_limits(client, limited)
        await check_put_never_overwrites(client, backend, signer)


async def test_route_limit_applies_without_a_policy(tmp_path: Path) -> None:
    backend = make_backend("local", tmp_path)
    async with serve(fastapi_app([backend], max_upload_size=10)) as client:
        file = FileObject(filename="a.bin", backend="local")
        url = relative((await file.sign_upload_async()).url)
        assert (await client.put(url, content=b"x" * 11)).status_code == 413
        assert not await backend.exists_async(str(file.path))
        assert (await client.put(url, content=b"x" * 10)).status_code == 200
        assert await file.get_content_async() == b"x" * 10


async def test_signed_redirect_on_local_and_memory(kind: str, tmp_path: Path) -> None:
    async with serve(fastapi_app([make_backend(kind, tmp_path)])) as client:
        FILES["doc"] = await save(kind, "doc.txt")
        location = await check_redirect(
            client, "/files/doc/link", location_prefix=f"/_storage/{kind}/"
        )
        assert int(query_of(location)["expires"]) <= time.time() + 61
        followed = await client.get("/files/doc/link", follow_redirects=True)
        assert followed.status_code == 200
        assert followed.content == DATA


async def test_rotated_secret_keeps_outstanding_urls_valid(tmp_path: Path) -> None:
    old_secret = "the-previous-signing-secret-0123456789abc"
    backend = make_backend("memory", tmp_path)
    registry = BackendRegistry()
    app = Starlette(
        routes=[
            Mount(
                "/_storage",
                app=storage_routes(
                    registry=registry,
                    signing_secret=SECRET,
                    previous_signing_secrets=[old_secret],
                ),
            )
        ]
    )
    async with storage_lifespan([backend], registry=registry, signing_secret=old_secret):
        file = await FileObject(
            filename="a.txt", content=DATA, backend="memory", registry=registry
        ).save_async()
        old_url = relative(await file.sign_async(expires_in=60))
    async with (
        storage_lifespan([backend], registry=registry, signing_secret=SECRET),
        serve(app) as c,
    ):
        assert (await c.get(old_url)).content == DATA
        fresh = FileObject(backend="memory", path=file.path, registry=registry)
        assert (await c.get(relative(await fresh.sign_async(expires_in=60)))).content == DATA


# -- S3: native signing, redirect fetched from the S3 server ----------------------------------
async def test_redirect_to_s3_and_stream_from_s3(moto_server: MotoServer) -> None:
    backend = s3_backend(moto_server, key="s3", prefix=f"web-{time.time_ns()}")
    async with serve(fastapi_app([backend])) as client:
        assert backend.url_signer is None  # S3 signs natively
        FILES["doc"] = await save("s3", "report.pdf")
        location = await check_redirect(
            client, "/files/doc/link", location_prefix=moto_server.endpoint
        )
        async with httpx.AsyncClient(trust_env=False, timeout=10) as s3_client:
            fetched = await s3_client.get(location)
        assert fetched.status_code == 200
        assert fetched.content == DATA
        await check_download(client, "/files/doc", FILES["doc"])
        await check_ranges(client, "/files/doc")
        await check_not_modified(client, "/files/doc")
        await check_store_serves_the_rule(client, "s3")
        await check_every_download_path(client, "s3", signed=False)
        await check_vanished_object_is_404(client, "s3", signed=False)
