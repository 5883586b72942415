"""A small Starlette app that stores whatever it is sent, for the browser XSS test.

Run under uvicorn by `test_browser.py` (`--factory tests.e2e.xss_app:create_app`). It
keeps files in memory and offers every way the library serves them:

* `POST /upload?name=...&type=...[&policy=text]`: the body saved as a `FileObject`
  with the declared name and type (with `policy=text`, under an `UploadPolicy` that
  allows `text/*`, so the bytes are sniffed); answers `{"id": ...}`;
* `GET /files/{id}`: `file_response`; `GET /files/{id}/link`: `signed_redirect`;
  `GET /files/{id}/signed`: the signed URL as text; `/_storage/...`: `storage_routes`;
* `GET /control`: the same payload the test uploads, served by the app itself as
  `text/html` (shows that the detector below works when a script does run);
* `GET /pwned` records a hit (what the payload's script requests); `GET /hits` counts.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route

from sqlalchemy_obstore import FileObject, ObstoreBackend, UploadPolicy
from sqlalchemy_obstore.contrib.starlette import (
    file_response,
    signed_redirect,
    storage_lifespan,
    storage_routes,
)

SECRET = "browser-xss-test-signing-secret-0123456789"
BACKEND = "uploads"
PAYLOAD = (
    b"<x>an XSLT style sheet, honest</x>"
    b"<script>document.title = 'PWNED'; fetch('/pwned?from=' + location.pathname)</script>"
)
"""HTML with a script that a sniffer reads as plain text (no known tag comes first)."""


def create_app() -> Starlette:
    """The app (a factory: every uvicorn worker builds its own)."""
    files: dict[str, FileObject] = {}
    hits: list[str] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        backend = ObstoreBackend(BACKEND, "memory://")
        async with storage_lifespan([backend], signing_secret=SECRET):
            yield

    async def upload(request: Request) -> Response:
        params = request.query_params
        policy = (
            UploadPolicy(allowed_content_types=("text/*", "image/*"))
            if params.get("policy") == "text"
            else None
        )
        file = FileObject(
            filename=params["name"],
            content=await request.body(),
            content_type=params["type"],
            backend=BACKEND,
        )
        await file.save_async(policy=policy)
        key = uuid.uuid4().hex
        files[key] = file
        return JSONResponse({"id": key, "content_type": file.content_type})

    async def download(request: Request) -> Response:
        return file_response(files[request.path_params["key"]], request)

    async def link(request: Request) -> Response:
        return signed_redirect(files[request.path_params["key"]], expires_in=60)

    async def signed(request: Request) -> Response:
        url = await files[request.path_params["key"]].sign_async(expires_in=60)
        return PlainTextResponse(url)

    async def control(request: Request) -> Response:
        return HTMLResponse(PAYLOAD)

    async def pwned(request: Request) -> Response:
        hits.append(request.query_params.get("from", ""))
        return PlainTextResponse("recorded")

    async def count(request: Request) -> Response:
        return JSONResponse(hits)

    return Starlette(
        routes=[
            Route("/upload", upload, methods=["POST"]),
            Route("/files/{key}", download, methods=["GET", "HEAD"]),
            Route("/files/{key}/link", link),
            Route("/files/{key}/signed", signed),
            Route("/control", control),
            Route("/pwned", pwned),
            Route("/hits", count),
            Mount("/_storage", storage_routes(signing_secret=SECRET)),
        ],
        lifespan=lifespan,
    )
