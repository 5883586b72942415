"""Web scenarios shared by the Litestar and the Starlette/FastAPI tests.

Each `check_*` function drives an application through an `httpx.AsyncClient` (Litestar's
`AsyncTestClient`, or httpx's `ASGITransport` for Starlette) and asserts what a browser
or an HTTP client would see: status, headers and the exact bytes. The applications under
test expose the same routes in both frameworks:

* `GET /files/{name}`: `file_response(FILES[name])`;
* `GET /files/{name}/attachment`: `file_response(..., disposition="attachment",
  filename="renamed.bin")`;
* `GET /files/{name}/link`: `signed_redirect(FILES[name], expires_in=60)`;
* the signed-URL route mounted at `/_storage`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, MutableMapping
from contextlib import asynccontextmanager
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx

from sqlalchemy_obstore import FileObject, ObstoreBackend
from sqlalchemy_obstore.signing import HmacUrlSigner
from sqlalchemy_obstore.validation import UploadPolicy

SECRET = "integration-test-signing-secret-0123456789"
DATA = bytes(range(256)) * 64 + b"the end"  # 16391 bytes, every byte value
LIMIT = 4096
"""The `max_size` of the upload policy of backends built by `make_backend(limited=True)`."""

FILES: dict[str, FileObject] = {}
"""The files the test applications serve, by name (filled by each test)."""


def make_backend(
    kind: str, tmp_path: Path, *, key: str | None = None, limited: bool = False
) -> ObstoreBackend:
    """A memory or local-files backend, not registered (the application's lifespan does)."""
    fs: Any = "memory://" if kind == "memory" else tmp_path / f"store-{key or kind}"
    policy = UploadPolicy(max_size=LIMIT) if limited else None
    return ObstoreBackend(key or kind, fs, policy=policy)


@asynccontextmanager
async def asgi_lifespan(app: Callable[..., Any]) -> AsyncIterator[None]:
    """Run an ASGI application's lifespan protocol around the block (startup, shutdown)."""
    to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    from_app: asyncio.Queue[MutableMapping[str, Any]] = asyncio.Queue()

    async def receive() -> dict[str, Any]:
        return await to_app.get()

    async def send(message: MutableMapping[str, Any]) -> None:
        await from_app.put(message)

    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
    task = asyncio.create_task(app(scope, receive, send))
    await to_app.put({"type": "lifespan.startup"})
    started = await from_app.get()
    assert started["type"] == "lifespan.startup.complete", started
    try:
        yield
    finally:
        await to_app.put({"type": "lifespan.shutdown"})
        stopped = await from_app.get()
        assert stopped["type"] == "lifespan.shutdown.complete", stopped
        await task


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def relative(url: str) -> str:
    """The path and query of a URL (test clients take either)."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def assert_refused(response: httpx.Response, status: int, data: bytes = DATA) -> None:
    """A refusal: the status, a short text, never any of the object's bytes."""
    assert response.status_code == status, (response.status_code, response.text)
    assert data[:64] not in response.content
    assert "signature=" not in response.text


# -- downloads through file_response ---------------------------------------------------------------
async def check_download(
    client: httpx.AsyncClient, url: str, file: FileObject, data: bytes = DATA
) -> None:
    """A plain GET streams every byte with the full set of headers."""
    response = await client.get(url)
    assert response.status_code == 200, response.text
    assert response.content == data
    headers = response.headers
    assert headers["content-type"] == file.content_type
    assert headers["content-length"] == str(len(data))
    assert headers["accept-ranges"] == "bytes"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "private, no-cache"
    etag = headers["etag"]
    assert etag.startswith('"')
    assert etag.endswith('"')
    assert file.last_modified is not None
    served = parsedate_to_datetime(headers["last-modified"])
    assert int(served.timestamp()) == int(file.last_modified.timestamp())
    filename = quote(file.filename, safe="")
    assert headers["content-disposition"].startswith("inline; filename=")
    assert headers["content-disposition"].endswith(f"filename*=UTF-8''{filename}")
    # HEAD: the same headers, no body.
    head = await client.head(url)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(data))
    assert head.headers["etag"] == etag


async def check_attachment(client: httpx.AsyncClient, url: str) -> None:
    """A chosen disposition and download name."""
    response = await client.get(url)
    assert response.status_code == 200
    disposition = response.headers["content-disposition"]
    assert disposition == "attachment; filename=\"renamed.bin\"; filename*=UTF-8''renamed.bin"


async def check_ranges(client: httpx.AsyncClient, url: str, data: bytes = DATA) -> None:
    """First bytes, middle, suffix, open-ended, unsatisfiable, several ranges, If-Range."""
    size = len(data)
    cases = {
        "bytes=0-99": (0, 99),
        "bytes=1000-8999": (1000, 8999),
        "bytes=-7": (size - 7, size - 1),
        f"bytes={size - 300}-": (size - 300, size - 1),
        f"bytes={size - 10}-{size + 1000}": (size - 10, size - 1),
    }
    for header, (start, end) in cases.items():
        response = await client.get(url, headers={"Range": header})
        assert response.status_code == 206, (header, response.status_code)
        assert response.content == data[start : end + 1], header
        assert response.headers["content-range"] == f"bytes {start}-{end}/{size}"
        assert response.headers["content-length"] == str(end - start + 1)

    for header in (f"bytes={size}-", f"bytes={size + 5}-{size + 10}", "bytes=-0"):
        response = await client.get(url, headers={"Range": header})
        assert response.status_code == 416, header
        assert response.headers["content-range"] == f"bytes */{size}"
        assert response.content == b""

    # Several ranges are answered with the whole object (RFC 9110 allows it).
    response = await client.get(url, headers={"Range": "bytes=0-9,100-109"})
    assert response.status_code == 200
    assert response.content == data
    # A malformed header is ignored.
    response = await client.get(url, headers={"Range": "bytes=9-1"})
    assert response.status_code == 200
    assert response.content == data

    etag = (await client.head(url)).headers["etag"]
    response = await client.get(url, headers={"Range": "bytes=0-9", "If-Range": etag})
    assert response.status_code == 206
    assert response.content == data[:10]
    response = await client.get(url, headers={"Range": "bytes=0-9", "If-Range": '"stale"'})
    assert response.status_code == 200
    assert response.content == data


async def check_not_modified(client: httpx.AsyncClient, url: str) -> None:
    """`If-None-Match` and `If-Modified-Since` revalidate without a body."""
    first = await client.get(url)
    etag = first.headers["etag"]
    response = await client.get(url, headers={"If-None-Match": etag})
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == etag
    response = await client.get(url, headers={"If-None-Match": f'"other", W/{etag}'})
    assert response.status_code == 304
    response = await client.get(url, headers={"If-Modified-Since": first.headers["last-modified"]})
    assert response.status_code == 304
    response = await client.get(url, headers={"If-None-Match": '"other"'})
    assert response.status_code == 200
    assert response.content == first.content


async def check_active_content_is_attachment(client: httpx.AsyncClient, url: str) -> None:
    """HTML is never rendered inline: attachment, sandboxed, nosniff."""
    response = await client.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html"
    assert response.headers["content-disposition"].startswith("attachment;")
    assert response.headers["content-security-policy"] == "sandbox"
    assert response.headers["x-content-type-options"] == "nosniff"


# -- redirects and signed URLs -------------------------------------------------------------------
async def check_redirect(
    client: httpx.AsyncClient, url: str, *, location_prefix: str, data: bytes = DATA
) -> str:
    """The link answers 302 to a signed URL; returns the URL."""
    response = await client.get(url, follow_redirects=False)
    assert response.status_code == 302
    assert response.headers["cache-control"] == "no-store"
    location = response.headers["location"]
    assert location.startswith(location_prefix), location
    return location


async def check_signed_get(client: httpx.AsyncClient, file: FileObject, data: bytes = DATA) -> None:
    """A signed GET URL downloads, with ranges and conditional requests like any download."""
    url = relative(await file.sign_async(expires_in=60))
    response = await client.get(url)
    assert response.status_code == 200, response.text
    assert response.content == data
    assert response.headers["content-length"] == str(len(data))
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "etag" in response.headers
    ranged = await client.get(url, headers={"Range": "bytes=-5"})
    assert ranged.status_code == 206
    assert ranged.content == data[-5:]
    cached = await client.get(url, headers={"If-None-Match": response.headers["etag"]})
    assert cached.status_code == 304
    head = await client.head(url)
    assert head.status_code == 200
    assert head.content == b""


async def check_signed_put(client: httpx.AsyncClient, backend: ObstoreBackend) -> FileObject:
    """A signed PUT streams the body into the backend; the file then reads back."""
    file = FileObject(filename="upload.bin", backend=backend.key)
    grant = await file.sign_upload_async(expires_in=60)
    assert grant.method == "PUT"

    async def body() -> AsyncIterator[bytes]:
        for start in range(0, len(DATA), 1000):  # many small request-body messages
            yield DATA[start : start + 1000]

    response = await client.put(
        relative(grant.url), content=body(), headers={"Content-Type": "application/x-test"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["etag"]
    await file.refresh_async()
    assert file.size == len(DATA)
    assert await file.get_content_async() == DATA
    if backend.supports_attributes:
        assert (await backend.head_async(str(file.path))).content_type == "application/x-test"
    await check_signed_get(client, file)
    return file


async def check_signed_refusals(
    client: httpx.AsyncClient, backend: ObstoreBackend, signer: HmacUrlSigner
) -> None:
    """Tampered, foreign, expired, wrong-method or unsigned requests get no data."""
    file = await FileObject(filename="secret.bin", content=DATA, backend=backend.key).save_async()
    other = await FileObject(
        filename="other.bin", content=b"other", backend=backend.key
    ).save_async()
    url = relative(await file.sign_async(expires_in=60))
    path = url.partition("?")[0]
    params = query_of(url)

    # Tampered signature, or a signature from another secret.
    flipped = params["signature"][::-1]
    assert_refused(await client.get(url.replace(params["signature"], flipped)), 403)
    stranger = HmacUrlSigner("a-completely-different-secret-0123456789")
    foreign = stranger.url_for(
        backend.key, str(file.path), method="GET", expires=int(params["expires"])
    )
    assert_refused(await client.get(relative(foreign)), 403)
    # A longer life than signed.
    longer = url.replace(f"expires={params['expires']}", f"expires={int(params['expires']) + 3600}")
    assert_refused(await client.get(longer), 403)
    # The same signature on another object.
    assert_refused(await client.get(url.replace(str(file.path), str(other.path))), 403)
    # Unsigned, or without the signature.
    assert_refused(await client.get(path), 403)
    assert_refused(await client.get(f"{path}?method=GET&expires={params['expires']}"), 403)

    # Expired (genuinely signed, deadline passed).
    expired = signer.url_for(
        backend.key, str(file.path), method="GET", expires=int(time.time()) - 5
    )
    response = await client.get(relative(expired))
    assert_refused(response, 403)
    assert "expired" in response.text

    # A GET URL does not allow a PUT, nor a PUT URL a GET.
    response = await client.put(url, content=b"overwrite attempt")
    assert_refused(response, 403)
    assert await file.get_content_async() == DATA
    fresh = FileObject(filename="fresh.bin", backend=backend.key)
    put_url = relative((await fresh.sign_upload_async(expires_in=60)).url)
    assert_refused(await client.get(put_url), 403)
    assert not await backend.exists_async(str(fresh.path))

    # Other methods are not served.
    response = await client.delete(url)
    assert response.status_code == 405
    assert await backend.exists_async(str(file.path))

    # Genuine signatures for things that do not exist.
    missing = signer.url_for(
        backend.key, "no/such/object.bin", method="GET", expires=int(time.time()) + 60
    )
    assert_refused(await client.get(relative(missing)), 404)
    unknown = signer.url_for(
        "no-such-backend", "a/b.bin", method="GET", expires=int(time.time()) + 60
    )
    assert_refused(await client.get(relative(unknown)), 404)


async def check_put_limits(client: httpx.AsyncClient, backend: ObstoreBackend) -> None:
    """Over the policy's size limit -> 413 and nothing stored; never over an existing object."""

    async def put_url() -> tuple[FileObject, str]:
        file = FileObject(filename="limited.bin", backend=backend.key)
        return file, relative((await file.sign_upload_async(expires_in=60)).url)

    # Declared too large: refused before the body is read.
    file, url = await put_url()
    response = await client.put(url, content=b"x" * (LIMIT + 1))
    assert_refused(response, 413)
    assert str(LIMIT) in response.text
    assert not await backend.exists_async(str(file.path))

    # Streamed without a length: refused while streaming, the upload aborted.
    async def too_much() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"y" * 1000

    file, url = await put_url()
    response = await client.put(url, content=too_much())
    assert_refused(response, 413)
    assert not await backend.exists_async(str(file.path))
    listed = [info.path async for info in backend.list_objects_async()]
    assert not any(str(file.path) in p for p in listed), listed

    # Exactly the limit is fine; the same URL cannot replace what it wrote.
    file, url = await put_url()
    response = await client.put(url, content=b"z" * LIMIT)
    assert response.status_code == 200, response.text
    response = await client.put(url, content=b"replacement")
    assert_refused(response, 409, data=b"z" * LIMIT)
    assert await file.get_content_async() == b"z" * LIMIT

    # An empty body stores an empty object, with or without a length.
    file, url = await put_url()
    response = await client.put(url, content=b"")
    assert response.status_code == 200
    assert await file.get_content_async() == b""

    async def nothing() -> AsyncIterator[bytes]:
        for chunk in ():
            yield chunk

    file, url = await put_url()
    response = await client.put(url, content=nothing())
    assert response.status_code == 200
    assert await file.get_content_async() == b""
    # Whatever happened above, no staging object was left behind.
    leftovers = [info.path async for info in backend.list_objects_async()]
    assert not [p for p in leftovers if p.endswith(".partial")], leftovers


async def check_put_never_overwrites(
    client: httpx.AsyncClient, backend: ObstoreBackend, signer: HmacUrlSigner
) -> None:
    """A PUT signed (by whoever holds the secret) for an existing key is refused: 409."""
    file = await FileObject(filename="kept.bin", content=DATA, backend=backend.key).save_async()
    url = signer.url_for(backend.key, str(file.path), method="PUT", expires=int(time.time()) + 60)
    response = await client.put(relative(url), content=b"replacement")
    assert_refused(response, 409)
    assert await file.get_content_async() == DATA
