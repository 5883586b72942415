"""`FileObject.from_url`: lazy, streamed, SSRF-guarded downloads into storage.

A stdlib HTTP server on 127.0.0.1 serves every response. No traffic may leave the
machine: an autouse guard patches `socket.socket.connect` (which sync sockets and
asyncio's event loop both use), fails any connection to anything but 127.0.0.1 and
records it, so a test that lets a request through to another address fails even if
the request itself was refused for another reason. Every non-loopback target in this
module must therefore be refused before a connection is attempted.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
import unicodedata
import zlib
from collections.abc import Iterator
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from sqlalchemy_obstore import (
    FileObject,
    FileTooLargeError,
    ForbiddenAddressError,
    MissingDependencyError,
    RemoteFetchError,
    RemoteTimeoutError,
    SaveOptions,
    StorageError,
    StoredObject,
)
from sqlalchemy_obstore.remote import (
    DEFAULT_DEADLINE,
    RemoteSource,
    check_address,
    filename_from_content_disposition,
)
from sqlalchemy_obstore.testing import memory_backends

KEY = "remote"
LOOPBACK = ("127.0.0.0/8",)
SECRET = "s3cr3t-value"


# -- no traffic off this machine ------------------------------------------------------------------
@pytest.fixture(autouse=True)
def only_loopback_connections(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Fail (and remember) any connection attempt to anything but 127.0.0.1."""
    violations: list[Any] = []
    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex

    def allowed(address: Any) -> bool:
        return isinstance(address, tuple) and address[0] == "127.0.0.1"

    def connect(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not allowed(address):
            violations.append(address)
            raise ConnectionRefusedError(f"test guard: no connection to {address!r}")
        original_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not allowed(address):
            violations.append(address)
            return 111
        return original_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    yield violations
    assert not violations, f"connections were attempted to {violations}"


# -- the local server -----------------------------------------------------------------------------
class Server:
    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.flaky: dict[str, int] = {}
        handler = type("Handler", (_Handler,), {"server_state": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]


class _Handler(BaseHTTPRequestHandler):
    server_state: Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        headers = {"Content-Length": str(len(body)), **(headers or {})}
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, size: int, *, declare: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if declare:
            self.send_header("Content-Length", str(size))
        self.end_headers()
        block = bytes(range(256)) * 256  # 64 KiB
        sent = 0
        try:
            while sent < size:
                piece = block[: min(len(block), size - sent)]
                self.wfile.write(piece)
                sent += len(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading: that is the point of some tests

    def do_GET(self) -> None:
        state = self.server_state
        state.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        path = url.path
        if path.startswith("/files/"):
            self._send(200, b"hello world", {"Content-Type": "text/plain; charset=utf-8"})
        elif path == "/no-type":
            self._send(200, b"\x89PNG....")
        elif path == "/disposition":
            self._send(
                200,
                b"rates",
                {
                    "Content-Type": "text/csv",
                    "Content-Disposition": 'attachment; filename="fallback.csv"; '
                    "filename*=UTF-8''%E2%82%AC%20rates.csv",
                },
            )
        elif path == "/disposition-plain":
            self._send(200, b"x", {"Content-Disposition": 'inline; filename="../../etc/a b.pdf"'})
        elif path == "/large":
            self._stream(int(query["size"]), declare=False)
        elif path == "/large-declared":
            self._stream(int(query["size"]), declare=True)
        elif path == "/redirect":
            self._send(int(query.get("status", "302")), headers={"Location": query["to"]})
        elif path.startswith("/chain/"):
            left = int(path.rsplit("/", 1)[-1])
            if left == 0:
                self._send(200, b"end of chain", {"Content-Type": "text/plain"})
            else:
                self._send(302, headers={"Location": f"/chain/{left - 1}"})
        elif path == "/echo":
            body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
            self._send(200, body, {"Content-Type": "application/json"})
        elif path == "/flaky":
            count = state.flaky.get(self.path, 0)
            state.flaky[self.path] = count + 1
            if count == 0:
                self._send(503, b"try later")
            else:
                self._send(200, b"second time lucky", {"Content-Type": "text/plain"})
        elif path == "/encoded":
            coding = query["coding"]
            body, header = encoded_body(coding, int(query.get("size", "100000")))
            self._send(200, body, {"Content-Encoding": header, "Content-Type": "text/plain"})
        elif path == "/gzip-bomb":
            body = gzip_bomb(int(query["mib"]))
            self._send(200, body, {"Content-Encoding": "gzip"})
        elif path == "/trickle":
            self.send_response(200)
            self.send_header("Content-Length", query.get("count", "200"))
            self.end_headers()
            try:
                for _ in range(int(query.get("count", "200"))):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(float(query.get("interval", "0.1")))
            except (BrokenPipeError, ConnectionResetError):
                pass
        elif path == "/slow-redirect":
            time.sleep(float(query["delay"]))
            left = int(query["left"])
            if left == 0:
                self._send(200, b"arrived")
            else:
                target = f"/slow-redirect?delay={query['delay']}&left={left - 1}"
                self._send(302, headers={"Location": target})
        elif path == "/raw-disposition":
            # The header exactly as given (latin-1 bytes on the wire), untouched by quoting.
            self.send_response(200)
            self.send_header("Content-Length", "1")
            self.send_header("Content-Disposition", query["value"])
            self.end_headers()
            self.wfile.write(b"x")
        elif path == "/slow-headers":
            time.sleep(float(query.get("delay", "2")))
            self._send(200, b"late")
        elif path == "/slow-body":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"x" * 10)
            self.wfile.flush()
            time.sleep(float(query.get("delay", "2")))
        else:
            self._send(404, b"not here")


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    srv = Server()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


@pytest.fixture(scope="module")
def other_server() -> Iterator[Server]:
    """A second origin: the same host, another port."""
    srv = Server()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


TEXT = b"hello world, " * 1000


def encoded_body(coding: str, size: int) -> tuple[bytes, str]:
    """`TEXT` (cut to `size`) encoded as the `coding` test case says."""
    text = (TEXT * (size // len(TEXT) + 1))[:size]
    if coding == "gzip":
        return gzip.compress(text), "gzip"
    if coding == "x-gzip":
        return gzip.compress(text), "x-gzip"
    if coding == "gzip-members":  # two gzip members back to back (RFC 1952 allows it)
        half = len(text) // 2
        return gzip.compress(text[:half]) + gzip.compress(text[half:]), "gzip"
    if coding == "gzip-padded":  # trailing zeros after the member, as some servers send
        return gzip.compress(text) + bytes(16), "gzip"
    if coding == "gzip-gzip":
        return gzip.compress(gzip.compress(text)), "gzip, gzip"
    if coding == "deflate":  # zlib-wrapped, as RFC 9110 says
        return zlib.compress(text), "deflate"
    if coding == "deflate-raw":  # raw deflate, as some servers send
        raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        return raw.compress(text) + raw.flush(), "deflate"
    if coding == "gzip-truncated":
        return gzip.compress(text)[:-20], "gzip"
    if coding == "gzip-corrupt":
        data = bytearray(gzip.compress(text))
        data[20:30] = b"\xff" * 10
        return bytes(data), "gzip"
    if coding == "triple":
        return gzip.compress(gzip.compress(gzip.compress(text))), "gzip, gzip, gzip"
    return text, coding  # "br", "zstd", "compress": labelled, not encoded (refused anyway)


@lru_cache(maxsize=4)
def gzip_bomb(mib: int) -> bytes:
    """`mib` MiB of zeros, gzip-compressed (about 1000:1), built without holding them."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1024 * 1024)
    parts = [compressor.compress(block) for _ in range(mib)]
    return b"".join(parts) + compressor.flush()


@pytest.fixture
def store() -> Iterator[Any]:
    with memory_backends(KEY) as backends:
        yield backends[KEY]


async def save(file: FileObject, mode: str, **options: Any) -> FileObject:
    """Save through the sync or the async API."""
    if mode == "sync":
        return file.save(**options)
    return await file.save_async(**options)


def stored_paths(store: Any) -> list[str]:
    import obstore

    return [meta["path"] for batch in obstore.list(store.store) for meta in batch]


# -- lazy, sync and async -------------------------------------------------------------------------
def test_nothing_is_fetched_until_save(server: Server, store: Any) -> None:
    before = len(server.requests)
    file = FileObject.from_url(server.url("/files/hello.txt"), backend=KEY, allow_private=True)
    assert file.has_pending_content
    assert file.filename == "hello.txt"
    assert file.content_type == "text/plain"
    assert len(server.requests) == before
    file.save()
    assert len(server.requests) == before + 1
    assert file.is_saved
    assert file.get_content() == b"hello world"
    assert file.size == 11
    assert file.checksum == "sha256:" + hashlib.sha256(b"hello world").hexdigest()


async def test_save_async(server: Server, store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # The async path reads with httpx.AsyncClient (async for), never the sync read().
    monkeypatch.setattr(RemoteSource, "read", _no_sync_read)
    file = FileObject.from_url(server.url("/files/a.txt"), backend=KEY, allow_networks=LOOPBACK)
    await file.save_async()
    assert await file.get_content_async() == b"hello world"
    assert file.content_type == "text/plain"


def _no_sync_read(self: RemoteSource, size: int = -1) -> bytes:
    raise AssertionError("the sync read() was used in async code")


def test_response_headers_fill_filename_and_content_type(server: Server, store: Any) -> None:
    file = FileObject.from_url(server.url("/disposition"), backend=KEY, allow_private=True)
    assert file.filename == "disposition"
    file.save()
    assert file.filename == "€ rates.csv"
    assert file.content_type == "text/csv"
    assert store.head(file.path).content_type == "text/csv"


def test_explicit_filename_and_content_type_win(server: Server, store: Any) -> None:
    file = FileObject.from_url(
        server.url("/disposition"),
        backend=KEY,
        allow_private=True,
        filename="mine.txt",
        content_type="text/plain",
        metadata={"source": "test"},
    )
    file.save()
    assert (file.filename, file.content_type) == ("mine.txt", "text/plain")
    assert file.metadata == {"source": "test"}
    assert file.path.endswith("/mine.txt")


def test_content_disposition_directories_are_dropped(server: Server, store: Any) -> None:
    file = FileObject.from_url(server.url("/disposition-plain"), backend=KEY, allow_private=True)
    file.save()
    assert file.filename == "a b.pdf"
    assert file.content_type == "application/pdf"  # no Content-Type: guessed from the name


def test_url_path_name_is_percent_decoded(server: Server, store: Any) -> None:
    url = server.url("/files/caf%C3%A9%20menu.txt?x=1")
    file = FileObject.from_url(url, backend=KEY, allow_private=True)
    assert file.filename == "café menu.txt"
    assert FileObject.from_url("https://example.com/", backend=KEY).filename == "file"


# -- the SSRF guard -------------------------------------------------------------------------------
def test_loopback_is_refused_by_default(server: Server, store: Any) -> None:
    before = len(server.requests)
    with pytest.raises(ForbiddenAddressError) as info:
        FileObject.from_url(server.url("/files/a.txt"), backend=KEY)
    assert info.value.address == "127.0.0.1"
    assert "blocked network 127.0.0.0/8" in str(info.value)
    assert len(server.requests) == before


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_allow_private_and_allow_networks_lift_the_block(
    server: Server, store: Any, mode: str
) -> None:
    for options in ({"allow_private": True}, {"allow_networks": LOOPBACK}):
        file = FileObject.from_url(server.url("/files/a.txt"), backend=KEY, **options)
        if mode == "sync":
            file.save()
        else:
            await file.save_async()
        assert file.get_content() == b"hello world"
    with pytest.raises(ForbiddenAddressError):  # another network does not help
        FileObject.from_url(server.url("/files/a.txt"), backend=KEY, allow_networks=["10.0.0.0/8"])


FORBIDDEN_LITERALS = [
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://10.0.0.1/",
    "http://172.16.0.1/",
    "http://172.31.255.254/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://0.0.0.0/",
    "http://127.0.0.2:8080/",
    "http://224.0.0.1/",
    "http://255.255.255.255/",
    "http://[::1]/",
    "http://[::]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 form of 169.254.169.254
    "http://[2002:a00:1::1]/",  # 6to4 form of 10.0.0.1
    "http://[fe80::1]/",
    "http://[fc00::1]/",
    "http://[fd12:3456::1]/",
    "http://[ff02::1]/",
    "https://169.254.169.254/",
]


@pytest.mark.parametrize("url", FORBIDDEN_LITERALS)
def test_blocked_ip_literals_are_refused_without_any_lookup(
    url: str, store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups: list[Any] = []
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: lookups.append(a) or [])
    with pytest.raises(ForbiddenAddressError) as info:
        FileObject.from_url(url, backend=KEY)  # refused at construction: nothing to resolve
    assert info.value.address is not None
    assert lookups == []


@pytest.mark.parametrize(
    ("host", "resolved"),
    [
        ("localhost", None),  # the real resolver: 127.0.0.1 and/or ::1
        ("metadata.internal.test", "169.254.169.254"),
        ("intranet.test", "10.1.2.3"),
        ("router.test", "192.168.0.1"),
        ("private.test", "172.16.5.4"),
        ("v6-loopback.test", "::1"),
        ("mapped.test", "::ffff:127.0.0.1"),
        ("decimal.test", "0.0.0.0"),
    ],
)
@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_hostnames_resolving_to_blocked_addresses_are_refused(
    host: str, resolved: str | None, mode: str, store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    if resolved is not None:
        fake_dns(monkeypatch, {host: [resolved]})
    file = FileObject.from_url(f"http://{host}/x.txt", backend=KEY)
    with pytest.raises(ForbiddenAddressError) as info:
        await save(file, mode)
    assert info.value.address is not None
    assert file.has_pending_content
    assert not file.is_saved
    assert stored_paths(store) == []


def fake_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> list[str]:
    """Make `socket.getaddrinfo` (and so asyncio's) answer from `answers`; log lookups."""
    real = socket.getaddrinfo
    lookups: list[str] = []

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host in answers:
            lookups.append(host)
            result = []
            for address in answers[host]:
                family = socket.AF_INET6 if ":" in address else socket.AF_INET
                sockaddr = (address, port, 0, 0) if ":" in address else (address, port)
                result.append((family, socket.SOCK_STREAM, 6, "", sockaddr))
            return result
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return lookups


def test_any_blocked_address_among_several_is_refused(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dns(monkeypatch, {"mixed.test": ["93.184.215.14", "169.254.169.254"]})
    with pytest.raises(ForbiddenAddressError, match=re.escape("169.254.169.254")):
        FileObject.from_url("http://mixed.test/a", backend=KEY).save()


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_the_vetted_address_is_pinned(
    server: Server, store: Any, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    # "pinned.test" exists only in this fake DNS, which answers once per hop. Had httpx
    # resolved the name again itself (the DNS-rebinding window), the request would fail.
    lookups = fake_dns(monkeypatch, {"pinned.test": ["127.0.0.1"]})
    url = f"http://pinned.test:{server.port}/echo"
    file = FileObject.from_url(url, backend=KEY, allow_networks=LOOPBACK)
    if mode == "sync":
        file.save()
    else:
        await file.save_async()
    assert lookups == ["pinned.test"]
    echoed = json.loads(file.get_content())
    assert echoed["host"] == f"pinned.test:{server.port}"  # the original Host header
    assert echoed["accept-encoding"] == "identity"


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.com/a.txt",
        "gopher://example.com/",
        "dict://127.0.0.1:11211/",
        "javascript:alert(1)",
        "/relative/path",
        "http:///no-host",
    ],
)
def test_only_http_and_https_urls_are_accepted(url: str) -> None:
    with pytest.raises(ForbiddenAddressError):
        FileObject.from_url(url, backend=KEY, allow_private=True)


def test_credentials_in_urls_are_refused_and_never_echoed() -> None:
    with pytest.raises(ForbiddenAddressError) as info:
        FileObject.from_url(f"https://alice:{SECRET}@example.com/a.txt", backend=KEY)
    assert SECRET not in str(info.value)
    assert SECRET not in repr(info.value.args)
    assert "alice" not in str(info.value)
    assert info.value.url == "https://example.com/a.txt"


# -- redirects ------------------------------------------------------------------------------------
@pytest.mark.parametrize("target", ["http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/"])
@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_redirect_into_a_blocked_address_is_refused(
    server: Server, store: Any, target: str, mode: str
) -> None:
    before = len(server.requests)
    url = server.url(f"/redirect?to={target}")
    file = FileObject.from_url(url, backend=KEY, allow_networks=LOOPBACK)
    with pytest.raises(ForbiddenAddressError) as info:
        await save(file, mode)
    assert info.value.address == urlsplit(target).hostname
    assert len(server.requests) == before + 1  # only the redirecting request was made
    assert stored_paths(store) == []


def test_redirect_to_a_hostname_resolving_to_a_blocked_address_is_refused(
    server: Server, store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dns(monkeypatch, {"evil.test": ["169.254.169.254"]})
    url = server.url("/redirect?to=http://evil.test/&status=307")
    with pytest.raises(ForbiddenAddressError, match=re.escape("169.254.169.254")):
        FileObject.from_url(url, backend=KEY, allow_networks=LOOPBACK).save()


def test_redirect_to_another_scheme_is_refused(server: Server, store: Any) -> None:
    url = server.url("/redirect?to=file:///etc/passwd")
    with pytest.raises(ForbiddenAddressError, match="only http and https"):
        FileObject.from_url(url, backend=KEY, allow_private=True).save()


def test_redirects_are_followed_up_to_the_limit(server: Server, store: Any) -> None:
    file = FileObject.from_url(server.url("/chain/3"), backend=KEY, allow_private=True)
    file.save()
    assert file.get_content() == b"end of chain"
    assert file.filename == "0"  # the final URL's last segment
    with pytest.raises(RemoteFetchError, match="more than 3 redirect") as info:
        FileObject.from_url(server.url("/chain/4"), backend=KEY, allow_private=True).save()
    assert not isinstance(info.value, ForbiddenAddressError)
    with pytest.raises(RemoteFetchError, match="more than 0 redirect"):
        FileObject.from_url(
            server.url("/chain/1"), backend=KEY, allow_private=True, max_redirects=0
        ).save()


CALLER_HEADERS = {
    "Authorization": f"Bearer {SECRET}",
    "Cookie": f"session={SECRET}",
    "Proxy-Authorization": f"Basic {SECRET}",
    "X-Api-Key": SECRET,
    "X-Amz-Security-Token": SECRET,
    "X-Trace": "trace-1",
}


def echoed_headers(file: FileObject) -> dict[str, str]:
    echoed: dict[str, str] = json.loads(file.get_content())
    return echoed


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_every_caller_header_reaches_the_same_origin(
    server: Server, store: Any, mode: str
) -> None:
    url = server.url("/redirect?to=/echo")  # a redirect within the origin
    file = FileObject.from_url(url, backend=KEY, allow_private=True, headers=CALLER_HEADERS)
    echoed = echoed_headers(await save(file, mode))
    for name, value in CALLER_HEADERS.items():
        assert echoed[name.lower()] == value


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("other_host", ["port", "host"])
async def test_no_caller_header_follows_a_redirect_to_another_origin(
    server: Server, other_server: Server, store: Any, mode: str, other_host: str
) -> None:
    # Two local origins: another port on 127.0.0.1, or the same port under another name.
    target = other_server.url("/echo") if other_host == "port" else server.url("/echo", "localhost")
    url = server.url(f"/redirect?to={quote(target, safe='')}")
    file = FileObject.from_url(url, backend=KEY, allow_private=True, headers=CALLER_HEADERS)
    echoed = echoed_headers(await save(file, mode))
    assert SECRET not in json.dumps(echoed)
    assert not {name.lower() for name in CALLER_HEADERS} & set(echoed)
    assert echoed["accept-encoding"] == "identity"  # the fetch's own headers still go


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_forward_headers_names_what_may_follow_a_redirect(
    server: Server, other_server: Server, store: Any, mode: str
) -> None:
    url = server.url(f"/redirect?to={quote(other_server.url('/echo'), safe='')}")
    file = FileObject.from_url(
        url,
        backend=KEY,
        allow_private=True,
        headers=CALLER_HEADERS,
        forward_headers=["x-trace"],  # names are case-insensitive
    )
    echoed = echoed_headers(await save(file, mode))
    assert echoed["x-trace"] == "trace-1"
    assert SECRET not in json.dumps(echoed)


def test_headers_are_not_restored_when_a_redirect_comes_back(
    server: Server, other_server: Server, store: Any
) -> None:
    # origin A -> origin B -> back to A: B chose where the request went, so A's
    # credentials stay dropped for the rest of the fetch.
    back = server.url("/echo")
    hop = other_server.url(f"/redirect?to={quote(back, safe='')}")
    url = server.url(f"/redirect?to={quote(hop, safe='')}")
    file = FileObject.from_url(url, backend=KEY, allow_private=True, headers=CALLER_HEADERS)
    echoed = echoed_headers(file.save())
    assert SECRET not in json.dumps(echoed)


@pytest.mark.parametrize("name", ["Authorization", "cookie", "PROXY-AUTHORIZATION"])
def test_credentials_headers_cannot_be_forwarded(name: str) -> None:
    with pytest.raises(ValueError, match="credentials go to the URL's origin only"):
        RemoteSource("https://example.com/a", forward_headers=[name])


@pytest.mark.parametrize(
    "headers",
    [{"X-Evil": "a\r\nInjected: 1"}, {"Bad Name": "x"}, {"X-Nul": "a\x00b"}, {"X-Euro": "€"}],
)
def test_request_headers_must_be_valid(headers: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="request header"):
        RemoteSource("https://example.com/a", headers=headers)


def test_managed_headers_cannot_be_overridden(server: Server, store: Any) -> None:
    headers = {"Host": "evil.test", "Accept-Encoding": "br", "X-Ok": "1"}
    file = FileObject.from_url(
        server.url("/echo"), backend=KEY, allow_private=True, headers=headers
    ).save()
    echoed = echoed_headers(file)
    assert echoed["host"] == f"127.0.0.1:{server.port}"
    assert echoed["accept-encoding"] == "identity"
    assert echoed["x-ok"] == "1"


# -- errors, timeouts, retries --------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_http_errors_are_typed_and_redacted(server: Server, store: Any, mode: str) -> None:
    url = server.url(f"/missing.txt?token={SECRET}&sig={SECRET}")
    file = FileObject.from_url(url, backend=KEY, allow_private=True)
    with pytest.raises(RemoteFetchError) as info:
        await save(file, mode)
    error = info.value
    assert isinstance(error, StorageError)
    assert error.status == 404
    assert SECRET not in str(error)
    assert error.url is not None
    assert SECRET not in error.url
    assert f"127.0.0.1:{server.port}/missing.txt?token=<redacted>&sig=<redacted>" in str(error)
    assert "404" in str(error)
    assert file.has_pending_content  # the source can be fetched again


def test_a_failed_fetch_is_retried_from_the_start(server: Server, store: Any) -> None:
    file = FileObject.from_url(server.url("/flaky?n=1"), backend=KEY, allow_private=True)
    with pytest.raises(RemoteFetchError, match="503"):
        file.save()
    file.save()  # rewound: the whole body is fetched again
    assert file.get_content() == b"second time lucky"


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("path", ["/slow-headers?delay=2", "/slow-body?delay=2"])
async def test_timeouts(server: Server, store: Any, mode: str, path: str) -> None:
    file = FileObject.from_url(server.url(path), backend=KEY, allow_private=True, timeout=0.3)
    started = time.monotonic()
    with pytest.raises(RemoteFetchError, match="timed out"):
        await save(file, mode)
    assert time.monotonic() - started < 1.5
    assert stored_paths(store) == []


def test_unresolvable_host(store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(RemoteFetchError, match="cannot resolve"):
        FileObject.from_url("https://nowhere.invalid/a", backend=KEY).save()


# -- size limit -----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("chunk_size", [5 * 1024 * 1024, 64 * 1024])  # one part / multipart
async def test_max_size_is_enforced_while_streaming(
    server: Server, store: Any, mode: str, chunk_size: int
) -> None:
    limit = 300_000
    file = FileObject.from_url(
        server.url("/large?size=2000000"), backend=KEY, allow_private=True, max_size=limit
    )
    options = SaveOptions(chunk_size=chunk_size)
    with pytest.raises(FileTooLargeError) as info:
        await save(file, mode, options=options)
    assert info.value.limit == limit
    assert limit < info.value.size_seen <= limit + 64 * 1024  # stopped at the passing chunk
    assert stored_paths(store) == []
    assert file.has_pending_content


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_max_size_refuses_a_large_content_length_up_front(
    server: Server, store: Any, mode: str
) -> None:
    size = 50 * 1024 * 1024
    source = RemoteSource(
        server.url(f"/large-declared?size={size}"), allow_private=True, max_size=1000
    )
    file = FileObject(filename="big.bin", content=source, backend=KEY)
    with pytest.raises(FileTooLargeError) as info:
        await save(file, mode)
    assert info.value.size_seen == size  # the declared length: no body was read
    assert source.response is None  # refused before the body was handed on
    assert stored_paths(store) == []


def test_a_body_within_max_size_is_stored(server: Server, store: Any) -> None:
    file = FileObject.from_url(
        server.url("/large-declared?size=100000"), backend=KEY, allow_private=True, max_size=100000
    ).save()
    assert file.size == 100000


# -- compressed bodies: decoded in bounded steps, counted as decoded ---------------------------
@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize(
    "coding",
    ["gzip", "x-gzip", "gzip-members", "gzip-padded", "gzip-gzip", "deflate", "deflate-raw"],
)
async def test_encoded_bodies_are_decoded(
    server: Server, store: Any, mode: str, coding: str
) -> None:
    size = 300_000
    file = FileObject.from_url(
        server.url(f"/encoded?coding={coding}&size={size}"), backend=KEY, allow_private=True
    )
    await save(file, mode)
    assert file.get_content() == (TEXT * 300)[:size]
    assert file.size == size


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize(
    ("coding", "message"),
    [
        ("br", "Content-Encoding 'br'"),
        ("zstd", "Content-Encoding 'zstd'"),
        ("compress", "Content-Encoding 'compress'"),
        ("triple", "stacked 3 content codings"),
        ("gzip-truncated", "cut short"),
        ("gzip-corrupt", "corrupt"),
    ],
)
async def test_encodings_that_cannot_be_bounded_or_are_broken_are_refused(
    server: Server, store: Any, mode: str, coding: str, message: str
) -> None:
    file = FileObject.from_url(
        server.url(f"/encoded?coding={coding}"), backend=KEY, allow_private=True
    )
    with pytest.raises(RemoteFetchError, match=re.escape(message)):
        await save(file, mode)
    assert stored_paths(store) == []
    assert file.has_pending_content


def test_decoded_pieces_are_bounded(server: Server) -> None:
    # 64 MiB of zeros in a 64 KiB gzip body: handed on 64 KiB at a time, never at once.
    source = RemoteSource(server.url("/gzip-bomb?mib=64"), allow_private=True)
    total, largest = 0, 0
    while chunk := source.read(10 * 1024 * 1024):
        total += len(chunk)
        largest = max(largest, len(chunk))
    assert total == 64 * 1024 * 1024
    assert largest <= 64 * 1024


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_max_size_counts_decoded_bytes(server: Server, store: Any, mode: str) -> None:
    limit = 1024 * 1024
    file = FileObject.from_url(
        server.url("/gzip-bomb?mib=64"), backend=KEY, allow_private=True, max_size=limit
    )
    with pytest.raises(FileTooLargeError) as info:
        await save(file, mode)
    assert limit < info.value.size_seen <= limit + 64 * 1024  # stopped at the passing piece
    assert stored_paths(store) == []


# -- the deadline of the whole fetch ------------------------------------------------------------
def test_a_deadline_is_on_by_default() -> None:
    assert DEFAULT_DEADLINE == 300.0
    assert RemoteSource("https://example.com/a").deadline == DEFAULT_DEADLINE
    file = FileObject.from_url("https://example.com/a", backend=KEY)
    assert isinstance(file._content, RemoteSource)
    assert file._content.deadline == DEFAULT_DEADLINE


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_trickling_server_cannot_outlast_the_deadline(
    server: Server, store: Any, mode: str
) -> None:
    # One byte every 0.1 s keeps every single read well within timeout=2; only the
    # deadline of the whole fetch stops it (200 bytes would take 20 s).
    file = FileObject.from_url(
        server.url("/trickle?interval=0.1&count=200"),
        backend=KEY,
        allow_private=True,
        timeout=2,
        deadline=1.0,
    )
    started = time.monotonic()
    with pytest.raises(RemoteTimeoutError) as info:
        await save(file, mode)
    elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 1.6, elapsed
    assert info.value.deadline is True
    assert info.value.limit == 1.0
    assert isinstance(info.value, TimeoutError)
    assert "deadline of 1 s" in str(info.value)
    assert stored_paths(store) == []
    assert file.has_pending_content


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_the_deadline_cuts_a_wait_shorter_than_timeout(
    server: Server, store: Any, mode: str
) -> None:
    # The server answers after 2 s; timeout=10 would wait, the 0.5 s deadline does not.
    file = FileObject.from_url(
        server.url("/slow-headers?delay=2"),
        backend=KEY,
        allow_private=True,
        timeout=10,
        deadline=0.5,
    )
    started = time.monotonic()
    with pytest.raises(RemoteTimeoutError) as info:
        await save(file, mode)
    assert time.monotonic() - started < 1.0
    assert info.value.deadline is True


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_the_deadline_covers_every_redirect(server: Server, store: Any, mode: str) -> None:
    # Three hops of 0.4 s each: every hop is fast enough, the whole chain is not.
    file = FileObject.from_url(
        server.url("/slow-redirect?delay=0.4&left=2"),
        backend=KEY,
        allow_private=True,
        timeout=5,
        deadline=1.0,
    )
    with pytest.raises(RemoteTimeoutError) as info:
        await save(file, mode)
    assert info.value.deadline is True
    fine = FileObject.from_url(
        server.url("/slow-redirect?delay=0.1&left=2"), backend=KEY, allow_private=True, deadline=5
    )
    assert (await save(fine, mode)).get_content() == b"arrived"


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_rewound_source_gets_a_fresh_deadline(server: Server, mode: str) -> None:
    source = RemoteSource(server.url("/trickle?interval=0.05&count=8"), allow_private=True)
    source.deadline = 0.2
    with pytest.raises(RemoteTimeoutError):
        await read_all(source, mode)
    source.seek(0)
    source.deadline = 5.0
    assert await read_all(source, mode) == b"x" * 8


async def read_all(source: RemoteSource, mode: str) -> bytes:
    if mode == "sync":
        return source.read()
    return b"".join([chunk async for chunk in source])


@pytest.mark.parametrize("bad", [0, -1, float("nan"), True])
def test_deadline_and_timeout_must_be_positive(bad: Any) -> None:
    with pytest.raises(ValueError, match="deadline must be a positive number"):
        RemoteSource("https://example.com/a", deadline=bad)
    with pytest.raises(ValueError, match="timeout must be a positive number"):
        RemoteSource("https://example.com/a", timeout=bad)


# -- names the server suggests are display data, made safe ------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("attachment; filename*=UTF-8''a%ED%B3%80.txt", "a\ufffd\ufffd\ufffd.txt"),  # a surrogate
        ("attachment; filename*=UTF-8''%E2%80%AEgnp.exe", "gnp.exe"),  # RTL override
        ("attachment; filename*=UTF-8''a%00b%01c.txt", "abc.txt"),  # NUL, control
        ("attachment; filename*=UTF-8''..%2F..%2Fetc%2Fpasswd", "passwd"),
        ('attachment; filename=".htaccess"', "htaccess"),
    ],
)
def test_content_disposition_names_are_sanitised(
    server: Server, store: Any, value: str, expected: str
) -> None:
    file = FileObject.from_url(
        server.url(f"/raw-disposition?value={quote(value, safe='')}"),
        backend=KEY,
        allow_private=True,
    ).save()
    assert file.filename == expected
    assert store.head(file.path).size == 1


@settings(max_examples=300, deadline=None)
@given(name=st.text(), charset=st.sampled_from(["UTF-8", "iso-8859-1", "nope"]), plain=st.text())
def test_any_content_disposition_gives_a_storable_name(name: str, charset: str, plain: str) -> None:
    raw = name.encode("utf-8", "surrogatepass")
    header = f"attachment; filename={json.dumps(plain)}; filename*={charset}''{quote(raw)}"
    result = filename_from_content_disposition(header)
    if result is not None:
        result.encode("utf-8")  # no lone surrogate: it can be stored and sent in a header
        assert result
        assert "/" not in result
        assert "\\" not in result
        assert not any(unicodedata.category(c) in {"Cc", "Cf", "Cs"} for c in result)


# -- the source itself ----------------------------------------------------------------------------
def test_read_is_chunked_and_bounded(server: Server) -> None:
    source = RemoteSource(server.url("/large?size=1000000"), allow_private=True)
    sizes = []
    while chunk := source.read(100_000):
        assert len(chunk) <= 100_000
        sizes.append(len(chunk))
    assert sum(sizes) == 1_000_000
    assert len(sizes) >= 10
    assert source.read(10) == b""
    assert source.response is not None
    assert source.response.content_type == "application/octet-stream"
    source.seek(0)  # rewinding fetches again
    assert len(source.read()) == 1_000_000


def test_source_repr_and_url_hide_secrets() -> None:
    source = RemoteSource(f"https://example.com/a.pdf?X-Amz-Signature={SECRET}&page=2")
    assert SECRET not in repr(source)
    assert source.url == "https://example.com/a.pdf?X-Amz-Signature=<redacted>&page=<redacted>"


def test_check_address() -> None:
    check_address("93.184.215.14")
    check_address("2606:2800:21f:cb07:6820:80da:af6b:8b2c")
    check_address("10.0.0.1", allow_private=True)
    check_address("::ffff:127.0.0.1", allow_networks=["127.0.0.0/8"])
    for address in ("169.254.169.254", "100.127.255.255", "::ffff:10.0.0.1", "fe80::1%eth0"):
        with pytest.raises(ForbiddenAddressError):
            check_address(address)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('attachment; filename="a.txt"', "a.txt"),
        ("attachment; filename=plain.txt", "plain.txt"),
        ('attachment; filename="with \\"quote\\".txt"', 'with "quote".txt'),
        ("attachment; filename*=UTF-8''%E2%82%AC.txt; filename=\"e.txt\"", "€.txt"),
        ("attachment; filename*=iso-8859-1'en'%A3%20rates.txt", "£ rates.txt"),
        ('attachment; filename="C:\\\\temp\\\\x.txt"', "x.txt"),
        ("attachment", None),
        ("", None),
        (None, None),
    ],
)
def test_content_disposition_parsing(header: str | None, expected: str | None) -> None:
    assert filename_from_content_disposition(header) == expected


def test_httpx_is_an_optional_dependency(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "httpx", None)
    with pytest.raises(MissingDependencyError) as info:
        FileObject.from_url("https://example.com/a.txt", backend=KEY)
    assert (info.value.package, info.value.extra) == ("httpx", "http")


# -- through the session --------------------------------------------------------------------------
class Base(DeclarativeBase):
    pass


class Attachment(Base):
    __tablename__ = "remote_attachments"
    id: Mapped[int] = mapped_column(primary_key=True)
    file: Mapped[FileObject | None] = mapped_column(StoredObject(KEY))


def test_session_commit_downloads_during_flush(server: Server, store: Any) -> None:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        row = Attachment(file=FileObject.from_url(server.url("/disposition"), allow_private=True))
        session.add(row)
        session.commit()
        file = row.file
        assert file is not None
        assert file.is_saved
        assert (file.filename, file.content_type) == ("€ rates.csv", "text/csv")
        assert file.get_content() == b"rates"
    with Session(engine) as session:
        loaded = session.get(Attachment, row.id)
        assert loaded is not None
        assert loaded.file is not None
        assert loaded.file.filename == "€ rates.csv"


async def test_async_session_commit_streams_the_download(
    server: Server, store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(RemoteSource, "read", _no_sync_read)
    engine = create_async_engine("sqlite+aiosqlite://")
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    async with AsyncSession(engine, expire_on_commit=False) as session:
        row = Attachment(
            file=FileObject.from_url(
                server.url("/large?size=3000000"), allow_private=True, filename="big.bin"
            )
        )
        session.add(row)
        await session.commit()
        file = row.file
        assert file is not None
        assert file.is_saved
        assert file.size == 3_000_000
        assert file.content_type == "application/octet-stream"
    await engine.dispose()


async def test_a_refused_fetch_fails_the_flush_and_stores_nothing(
    server: Server, store: Any
) -> None:
    engine = create_async_engine("sqlite+aiosqlite://")
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    async with AsyncSession(engine) as session:
        url = server.url("/redirect?to=http://169.254.169.254/")
        session.add(Attachment(file=FileObject.from_url(url, allow_networks=LOOPBACK)))
        with pytest.raises(ForbiddenAddressError):
            await session.commit()
        await session.rollback()
    assert stored_paths(store) == []
    await engine.dispose()


# -- memory stays bounded -------------------------------------------------------------------------
DOWNLOAD = textwrap.dedent(
    """
    import asyncio, json, os, resource, sys
    from pathlib import Path
    from sqlalchemy_obstore import FileObject, ObstoreBackend, storages

    url, root, mode = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    root.mkdir(parents=True, exist_ok=True)
    storages.register_backend(ObstoreBackend("local", root.as_uri() + "/"))
    # Warm up imports, obstore's runtimes and httpx with a tiny download.
    FileObject(filename="w", content=b"w", backend="local").save()
    asyncio.run(FileObject(filename="w", content=b"w", backend="local").save_async())
    small = url.replace("size=", "size=1&was=")
    FileObject.from_url(small, backend="local", allow_private=True).save()
    asyncio.run(FileObject.from_url(small, backend="local", allow_private=True).save_async())

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    file = FileObject.from_url(url, backend="local", allow_private=True)
    if mode == "sync":
        file.save(max_concurrency=2)
    else:
        asyncio.run(file.save_async(max_concurrency=2))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({
        "growth_mib": (after - before) / 1024,  # KiB on Linux
        "size": file.size,
        "stored_size": (root / file.path).stat().st_size,
    }), flush=True)
    os._exit(0)  # see test_file_io: obstore may abort at interpreter shutdown
    """
)


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux only")
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_64_mib_download_does_not_hold_the_file_in_memory(
    server: Server, tmp_path: Path, mode: str
) -> None:
    size = 64 * 1024 * 1024
    completed = subprocess.run(
        [sys.executable, "-c", DOWNLOAD, server.url(f"/large?size={size}"), str(tmp_path), mode],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert result["size"] == result["stored_size"] == size
    assert result["growth_mib"] < 40, result


BOMB = textwrap.dedent(
    """
    import asyncio, json, os, sys
    from pathlib import Path
    from sqlalchemy_obstore import FileObject, FileTooLargeError, ObstoreBackend, storages

    def peak():  # VmHWM: the peak resident set size, in bytes
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024

    url, root, mode, limit = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    storages.register_backend(ObstoreBackend("local", root))
    small = url.replace("mib=", "mib=1&was=")
    FileObject.from_url(small, backend="local", allow_private=True).save()
    asyncio.run(FileObject.from_url(small, backend="local", allow_private=True).save_async())

    before = peak()
    file = FileObject.from_url(
        url, backend="local", allow_private=True, max_size=limit or None
    )
    outcome = "stored"
    try:
        if mode == "sync":
            file.save(max_concurrency=2)
        else:
            asyncio.run(file.save_async(max_concurrency=2))
    except FileTooLargeError as exc:
        outcome = f"too large at {exc.size_seen}"
    print(json.dumps({"growth_mib": (peak() - before) / 2**20, "outcome": outcome,
                      "size": file.size}), flush=True)
    os._exit(0)
    """
)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="VmHWM is read from /proc")
@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("limit_mib", [16, 0])
def test_a_gzip_bomb_does_not_blow_up_memory(
    server: Server, tmp_path: Path, mode: str, limit_mib: int
) -> None:
    # 256 MiB of zeros in a 256 KiB gzip body. Refused at 16 MiB, or (without max_size)
    # stored whole; either way the process never holds more than a few pieces of it.
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            BOMB,
            server.url("/gzip-bomb?mib=256"),
            str(tmp_path),
            mode,
            str(limit_mib * 1024 * 1024),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    if limit_mib:
        assert result["outcome"].startswith("too large at "), result
    else:
        assert (result["outcome"], result["size"]) == ("stored", 256 * 1024 * 1024), result
    # Measured: 9-16 MiB (before bounded decoding: 127 MiB refused, 197-284 MiB stored).
    assert result["growth_mib"] < 32, result


# -- https: pinned to the vetted address, certificate checked against the host name ------------
@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, ssl.SSLContext]]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pinned.test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("pinned.test")]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    srv = Server()
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert_file, key_file)
    srv.httpd.socket = server_context.wrap_socket(srv.httpd.socket, server_side=True)
    client_context = ssl.create_default_context(cafile=str(cert_file))
    yield srv, client_context
    srv.httpd.shutdown()
    srv.httpd.server_close()


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_https_is_pinned_and_verified_against_the_host_name(
    tls_server: tuple[Server, ssl.SSLContext],
    store: Any,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
) -> None:
    srv, context = tls_server
    lookups = fake_dns(monkeypatch, {"pinned.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
    source = RemoteSource(
        f"https://pinned.test:{srv.port}/echo", allow_networks=LOOPBACK, verify=context
    )
    file = await save(FileObject(filename="echo.json", content=source, backend=KEY), mode)
    assert json.loads(file.get_content())["host"] == f"pinned.test:{srv.port}"
    assert lookups == ["pinned.test"]
    # The certificate is checked against the URL's host, not the pinned IP literal.
    wrong = RemoteSource(
        f"https://other.test:{srv.port}/echo", allow_networks=LOOPBACK, verify=context
    )
    with pytest.raises(RemoteFetchError, match=r"certificate|hostname"):
        await save(FileObject(filename="x", content=wrong, backend=KEY), mode)
