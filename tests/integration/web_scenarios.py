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
from sqlalchemy_obstore._attributes import serves_inline
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
    kind = "inline" if serves_inline(file.content_type) else "attachment"
    assert headers["content-disposition"].startswith(f"{kind}; filename=")
    assert headers["content-disposition"].endswith(f"filename*=UTF-8''{filename}")
    assert headers["content-security-policy"] == "sandbox"
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
    assert_served_safely(response, inline=serves_inline(file.content_type))
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
    # Other spellings of the genuine parameters: only the canonical one is accepted.
    expires, signature = params["expires"], params["signature"]
    for variant in (
        url.replace(f"expires={expires}", f"expires=0{expires}"),
        url.replace(f"expires={expires}", f"expires=%2B{expires}"),
        url.replace(
            f"expires={expires}", "expires=" + quote("".join(chr(0x0660 + int(d)) for d in expires))
        ),
        url.replace(f"signature={signature}", f"signature={signature}%3D"),
        url.replace(
            f"signature={signature}",
            f"signature={signature.replace('-', '%2B').replace('_', '%2F')}",
        )
        if ("-" in signature or "_" in signature)
        else url + "&signature=" + signature,
        url + f"&expires={expires}",
        url + f"&signature={signature}",
    ):
        assert_refused(await client.get(variant), 403)

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


# -- issue 13: what every download path sends -----------------------------------------------------
XSL_PAGE = b"<x>an XSLT file, they said</x><script>fetch('/pwned')</script>"
"""HTML with a script, declared `text/xsl`: the stored-XSS upload of issue 13."""
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64)
_ATTR_CHARS = "!#$&+-.^_`|~"


def assert_served_safely(
    response: httpx.Response, *, inline: bool, filename: str | None = None
) -> None:
    """The headers issue 13 requires of every file response."""
    assert response.status_code in (200, 206), (response.status_code, response.text)
    headers = response.headers
    disposition = headers["content-disposition"]
    assert disposition.startswith("inline;" if inline else "attachment;"), disposition
    assert all(32 <= ord(ch) < 127 for ch in disposition)
    fallback = disposition.split('filename="', 1)[1].split('"', 1)[0]
    assert not {"/", "\\", "%"} & set(fallback), disposition
    if filename is not None:
        assert disposition.endswith("filename*=UTF-8''" + quote(filename, safe=_ATTR_CHARS))
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["content-security-policy"] == "sandbox"


async def check_every_download_path(
    client: httpx.AsyncClient, backend: str, *, signed: bool = True
) -> None:
    """`text/xsl` HTML+script: attachment + sandbox + nosniff everywhere; a PNG inline.

    Paths: `file_response` (`/files/{name}`, whole, ranged, HEAD, 304, 416), the
    signed-URL route (`file.sign_async()`) and `signed_redirect` (`/files/{name}/link`,
    followed) when the backend signs through the app's route.
    """
    xsl = await FileObject(
        filename="../../evil\u202egnp.xsl",
        content=XSL_PAGE,
        content_type="text/xsl",
        backend=backend,
    ).save_async()
    png = await FileObject(filename="photo.png", content=PNG, backend=backend).save_async()
    FILES["xsl"], FILES["png"] = xsl, png
    for name, file, inline, shown in (
        ("xsl", xsl, False, "evilgnp.xsl"),
        ("png", png, True, "photo.png"),
    ):
        urls = [f"/files/{name}"]
        if signed:
            urls.append(relative(await file.sign_async(expires_in=60)))
        for url in urls:
            route = url.startswith("/_storage/")
            # the route names a local file by its key (no stored disposition to read)
            expected = None if route else shown
            for method in ("GET", "HEAD"):
                response = await client.request(method, url)
                assert_served_safely(response, inline=inline, filename=expected)
                ranged = await client.request(method, url, headers={"Range": "bytes=0-3"})
                assert ranged.status_code == 206
                assert_served_safely(ranged, inline=inline, filename=expected)
            etag = (await client.get(url)).headers["etag"]
            for headers, status in (
                ({"If-None-Match": etag}, 304),
                ({"Range": "bytes=99999-"}, 416),
                ({"Range": "bytes=" + "9" * 5000 + "-"}, 416),
            ):
                response = await client.get(url, headers=headers)
                assert response.status_code == status, (url, headers)
                assert response.headers["x-content-type-options"] == "nosniff"
                assert response.headers["content-security-policy"] == "sandbox"
        if signed:
            followed = await client.get(f"/files/{name}/link", follow_redirects=True)
            assert_served_safely(followed, inline=inline)
            assert followed.content == file.get_content()


async def check_bad_request_headers_are_not_errors(client: httpx.AsyncClient, url: str) -> None:
    """Malformed conditional and range headers never make a download fail (RFC 9110)."""
    huge = "9" * 5000
    cases: list[tuple[dict[str, str | bytes], int]] = [
        ({"Range": f"bytes=0-{huge}"}, 206),
        ({"Range": f"bytes=-{huge}"}, 206),
        ({"Range": f"bytes={huge}-"}, 416),
        ({"Range": "bytes=" + ",".join(["0-1"] * 2000)}, 200),
        ({"Range": "bytes=\u0663-\u0664".encode()}, 200),  # non-ASCII digits
        ({"If-Range": "Sun, 06 Nov 99999 08:49:37 GMT", "Range": "bytes=0-1"}, 200),
        ({"If-Modified-Since": "Fri, 31 Dec 9999 23:59:59 -2359"}, 200),
        ({"If-Modified-Since": huge}, 200),
        ({"If-None-Match": b"\xff" * 100}, 200),
        ({"If-Range": b'"\xc3\x28"', "Range": "bytes=0-1"}, 200),
    ]
    for headers, status in cases:
        response = await client.get(url, headers=headers)
        assert response.status_code == status, (headers, response.status_code, response.text)


async def check_vanished_object_is_404(
    client: httpx.AsyncClient, backend: str, *, signed: bool = True
) -> None:
    """A file as loaded from a row (size, etag, time recorded) whose object has gone: 404.

    Never headers that promise bytes the store no longer has; on every download path.
    """
    file = await FileObject(filename="gone.bin", content=DATA, backend=backend).save_async()
    # what a row records: downloads are planned from it without a head request
    assert file.size == len(DATA)
    assert file.etag
    assert file.last_modified is not None
    FILES["gone"] = file
    urls = ["/files/gone"]
    if signed:  # the app's own signed-URL route
        urls.append(relative(await file.sign_async(expires_in=60)))
    await file._backend().delete_async(str(file.path))
    for url in urls:
        for headers in ({}, {"Range": "bytes=0-9"}, {"If-None-Match": f'"{file.etag}"'}):
            for method in ("GET", "HEAD"):
                response = await client.request(method, url, headers=headers)
                assert response.status_code == 404, (url, headers, method)
                assert DATA[:16] not in response.content
                if method == "GET":
                    assert int(response.headers["content-length"]) == len(response.content)


async def check_ticket_uploads_enforce_limits(
    client: httpx.AsyncClient, backend: ObstoreBackend, tickets: Any
) -> None:
    """A ticket's PUT URL: bytes past `max_size` refused while streaming, none after redeem."""
    grant = await tickets.issue_async(backend.key, "limited.bin", max_size=1000)
    url = relative(grant.url)

    async def five_mib() -> AsyncIterator[bytes]:
        for _ in range(80):
            yield b"x" * 65536

    declared = await client.put(url, content=b"x" * (5 * 2**20))  # Content-Length: 5 MiB
    assert_refused(declared, 413)
    streamed = await client.put(url, content=five_mib())  # no length: stopped mid-stream
    assert_refused(streamed, 413)
    assert "1000" in streamed.text
    assert not await backend.exists_async(grant.upload_path)
    leftovers = [info.path async for info in backend.list_objects_async()]
    assert not [p for p in leftovers if p.endswith(".partial")], leftovers

    assert (await client.put(url, content=b"y" * 1000)).status_code == 200
    file = await tickets.redeem_async(grant.ticket)
    assert await file.get_content_async() == b"y" * 1000
    # Redeemed: the staging key is gone, yet the URL cannot write there again.
    assert not await backend.exists_async(grant.upload_path)
    again = await client.put(url, content=b"z" * 10)
    assert_refused(again, 409, data=b"z" * 10)
    assert "redeemed" in again.text
    assert not await backend.exists_async(grant.upload_path)
    assert await file.get_content_async() == b"y" * 1000

    # A ticket redeemed while a long upload through its URL streams: nothing is kept.
    racing = await tickets.issue_async(backend.key, "race.bin")
    racing_url = relative(racing.url)

    async def redeemed_midway() -> AsyncIterator[bytes]:
        yield b"a" * 65536
        # meanwhile another upload completed and the ticket was redeemed
        await backend.put_async(racing.upload_path, b"first upload")
        await tickets.redeem_async(racing.ticket)
        for _ in range(40):
            yield b"b" * 65536

    late = await client.put(racing_url, content=redeemed_midway())
    assert_refused(late, 409, data=b"b" * 64)
    assert not await backend.exists_async(racing.upload_path)
    leftovers = [info.path async for info in backend.list_objects_async()]
    assert not [p for p in leftovers if p.endswith(".partial")], leftovers


async def check_ticket_urls_need_the_tickets(
    client: httpx.AsyncClient, backend: ObstoreBackend, tickets: Any
) -> None:
    """A route not given the issuer refuses ticket uploads: it cannot tell if redeemed."""
    grant = await tickets.issue_async(backend.key, "a.bin", max_size=100)
    response = await client.put(relative(grant.url), content=b"data")
    assert_refused(response, 403, data=b"data")
    assert "tickets=" in response.text
    assert not await backend.exists_async(grant.upload_path)


async def check_store_serves_the_rule(client: httpx.AsyncClient, backend: str) -> None:
    """S3/GCS/Azure serve what was stored: `signed_redirect` lands on the store itself."""
    xsl = await FileObject(
        filename="../evil\u202egnp.xsl",
        content=XSL_PAGE,
        content_type="text/xsl",
        backend=backend,
    ).save_async()
    png = await FileObject(filename="photo.png", content=PNG, backend=backend).save_async()
    FILES["xsl"], FILES["png"] = xsl, png
    async with httpx.AsyncClient(trust_env=False, timeout=10) as store:
        for name, inline, shown in (("xsl", False, "evilgnp.xsl"), ("png", True, "photo.png")):
            link = await client.get(f"/files/{name}/link", follow_redirects=False)
            location = link.headers["location"]
            served = await store.get(location)
            assert served.status_code == 200
            disposition = served.headers["content-disposition"]
            assert disposition.startswith("inline;" if inline else "attachment;")
            assert disposition.endswith("filename*=UTF-8''" + shown)
