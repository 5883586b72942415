"""Upload policies enforced while content streams, on memory, local files and S3 (moto).

What must hold: a refused upload leaves nothing behind (no object, no incomplete
multipart upload, no staging file), is stopped at the point the limit is passed (the
rest of the stream is never read), and raises the typed `ValidationError`; sniffing
stores the detected type; `verify()` catches an object changed behind the library's back.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from sqlalchemy_obstore import (
    ChecksumMismatchError,
    FileObject,
    FileObjectError,
    FileTooLargeError,
    FileTooSmallError,
    InvalidContentTypeError,
    InvalidExtensionError,
    ObjectNotFoundError,
    ObstoreBackend,
    StoredObject,
    UploadPolicy,
    ValidationError,
    storages,
)
from tests.servers import MotoServer

KIB = 1024
MIB = 1024 * KIB
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64)
HTML = b"<!DOCTYPE html><html><script>alert(document.cookie)</script></html>"


# -- targets ----------------------------------------------------------------------------------
class Target:
    """A registered backend plus a way to see everything left in its store."""

    def __init__(self, backend: ObstoreBackend, chunk_size: int, leftovers: Callable[[], Any]):
        self.backend = backend
        self.key = backend.key
        self.chunk_size = chunk_size
        self._leftovers = leftovers

    def leftovers(self) -> Any:
        """Objects, incomplete multipart uploads or files left: empty when clean."""
        return self._leftovers()


def _memory_target() -> Target:
    backend = ObstoreBackend("memory", "memory://")
    storages.register_backend(backend)
    return Target(backend, 64 * KIB, lambda: list(backend.list_objects()))


def _local_target(root: Path) -> Target:
    root.mkdir(parents=True, exist_ok=True)
    backend = ObstoreBackend("local", root)
    storages.register_backend(backend)
    # Every file below the root, staging files of aborted multipart uploads included
    # (obstore's LocalStore may leave the empty directory of the key: not an object).
    return Target(
        backend, 64 * KIB, lambda: sorted(str(p) for p in root.rglob("*") if not p.is_dir())
    )


def incomplete_uploads(server: MotoServer, bucket: str) -> list[str]:
    """Keys of the multipart uploads in progress (`GET /bucket?uploads`, SigV4-signed)."""
    response = server.request("GET", f"/{bucket}?uploads")
    assert response.status_code == 200, response.text
    return re.findall(r"<Upload>.*?<Key>(.*?)</Key>", response.text, flags=re.S)


def _moto_target(server: MotoServer) -> Target:
    bucket = server.create_bucket()
    backend = ObstoreBackend(
        "s3",
        f"s3://{bucket}/",
        endpoint=server.endpoint,
        access_key_id=server.access_key_id,
        secret_access_key=server.secret_access_key,
        region=server.region,
        virtual_hosted_style_request=False,
    )
    storages.register_backend(backend)
    target = Target(
        backend,
        5 * MIB,  # S3's minimum part size
        lambda: (list(backend.list_objects()), incomplete_uploads(server, bucket)),
    )
    target.server = server  # type: ignore[attr-defined]
    target.bucket = bucket  # type: ignore[attr-defined]
    return target


def _empty(target: Target) -> Any:
    return ([], []) if target.key == "s3" else []


@pytest.fixture(params=["memory", "local", "moto"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    if request.param == "memory":
        return _memory_target()
    if request.param == "local":
        return _local_target(tmp_path / "store")
    return _moto_target(request.getfixturevalue("moto_server"))


@pytest.fixture(params=["memory", "local"])
def light_target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    """The server-less targets, for checks that need no multipart."""
    if request.param == "memory":
        return _memory_target()
    return _local_target(tmp_path / "store")


class Stream:
    """A one-shot iterator of `count` chunks that records how far it was read."""

    def __init__(self, chunk: bytes, count: int, on_chunk: Callable[[int], None] | None = None):
        self.chunk = chunk
        self.count = count
        self.read = 0
        self.on_chunk = on_chunk

    def __iter__(self) -> Iterator[bytes]:
        for index in range(self.count):
            if self.on_chunk is not None:
                self.on_chunk(index)
            self.read += 1
            yield self.chunk

    async def aiter(self) -> AsyncIterator[bytes]:
        for chunk in self:
            yield chunk


async def save(file: FileObject, mode: str, **kwargs: Any) -> FileObject:
    if mode == "sync":
        return file.save(**kwargs)
    return await file.save_async(**kwargs)


def _content(stream: Stream, mode: str) -> Any:
    return iter(stream) if mode == "sync" else stream.aiter()


# -- size limits ------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_oversized_stream_is_aborted_with_nothing_left(target: Target, mode: str) -> None:
    """A stream longer than the multipart chunk stops at the limit; nothing remains."""
    chunk = target.chunk_size
    limit = 2 * chunk + chunk // 2
    seen_in_progress: list[list[str]] = []

    def observe(index: int) -> None:
        # On S3, prove a multipart upload really was under way before it was aborted.
        if target.key == "s3" and index == 2:
            server, bucket = target.server, target.bucket  # type: ignore[attr-defined]
            seen_in_progress.append(incomplete_uploads(server, bucket))

    stream = Stream(b"x" * chunk, 10, observe)
    file = FileObject(filename="big.bin", content=_content(stream, mode), backend=target.key)
    with pytest.raises(FileTooLargeError) as caught:
        await save(file, mode, chunk_size=chunk, policy=UploadPolicy(max_size=limit))
    error = caught.value
    assert error.limit == limit
    assert limit < error.size_seen <= limit + chunk
    assert error.backend == target.key
    assert error.path is not None
    assert stream.read < stream.count  # stopped at the limit, not read to the end
    assert not file.is_saved
    assert file.path is None
    assert target.leftovers() == _empty(target)
    if target.key == "s3":
        assert seen_in_progress, "the stream was not read far enough"
        assert seen_in_progress[0], "no multipart upload was under way"


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_oversized_bytes_are_refused_before_upload(
    light_target: Target, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = light_target.backend
    puts: list[str] = []
    monkeypatch.setattr(backend, "put", lambda path, *a, **k: puts.append(path))
    monkeypatch.setattr(backend, "put_async", lambda path, *a, **k: puts.append(path))
    data = b"a" * 1000
    file = FileObject(filename="a.txt", content=data, backend=light_target.key)
    with pytest.raises(FileTooLargeError) as caught:
        await save(file, mode, policy=UploadPolicy(max_size=999))
    assert (caught.value.limit, caught.value.size_seen) == (999, 1000)
    assert puts == []
    assert file.has_pending_content  # content kept: the file can be fixed and saved again
    monkeypatch.undo()
    assert (await save(file, mode, policy=UploadPolicy(max_size=1000))).size == 1000


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_content_longer_than_declared_is_stopped(target: Target, mode: str) -> None:
    chunk = target.chunk_size
    declared = chunk + chunk // 2
    stream = Stream(b"y" * chunk, 8)
    file = FileObject(
        filename="up.bin", content=_content(stream, mode), size=declared, backend=target.key
    )
    with pytest.raises(FileTooLargeError) as caught:
        await save(file, mode, chunk_size=chunk)
    assert caught.value.declared
    assert caught.value.limit == declared
    assert stream.read < stream.count
    assert target.leftovers() == _empty(target)


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("shape", ["bytes", "stream"])
async def test_content_shorter_than_declared_is_refused(
    target: Target, mode: str, shape: str
) -> None:
    chunk = target.chunk_size
    if shape == "bytes":
        content: Any = b"z" * 100
        declared = 101
    else:  # longer than a part: the multipart upload is aborted at the end of the stream
        content = _content(Stream(b"z" * chunk, 3), mode)
        declared = 3 * chunk + 1
    file = FileObject(filename="up.bin", content=content, size=declared, backend=target.key)
    with pytest.raises(FileTooSmallError) as caught:
        await save(file, mode, chunk_size=chunk)
    assert caught.value.declared
    assert caught.value.minimum == declared
    assert target.leftovers() == _empty(target)


async def test_declared_size_that_matches_is_accepted(light_target: Target) -> None:
    file = FileObject(filename="a.bin", content=b"abc", size=3, backend=light_target.key)
    assert file.save().size == 3


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("shape", ["bytes", "stream"])
async def test_min_size(target: Target, mode: str, shape: str) -> None:
    chunk = target.chunk_size
    if shape == "bytes":
        content: Any = b"small"
        minimum = 6
    else:
        content = _content(Stream(b"m" * chunk, 3), mode)
        minimum = 4 * chunk
    file = FileObject(filename="m.bin", content=content, backend=target.key)
    with pytest.raises(FileTooSmallError) as caught:
        await save(file, mode, chunk_size=chunk, policy=UploadPolicy(min_size=minimum))
    assert caught.value.minimum == minimum
    assert not caught.value.declared
    assert target.leftovers() == _empty(target)
    ok = FileObject(filename="m.bin", content=b"m" * 10, backend=target.key)
    assert (await save(ok, mode, policy=UploadPolicy(min_size=10))).size == 10


# -- names, validators, content types -------------------------------------------------------
@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_extension_is_checked_before_any_byte_is_read(
    light_target: Target, mode: str
) -> None:
    stream = Stream(b"data", 3)
    policy = UploadPolicy(allowed_extensions=(".pdf", ".png"))
    file = FileObject(filename="evil.exe", content=_content(stream, mode), backend=light_target.key)
    with pytest.raises(InvalidExtensionError):
        await save(file, mode, policy=policy)
    assert stream.read == 0
    assert file.has_pending_content  # untouched: nothing was read
    assert light_target.leftovers() == []
    good = FileObject(filename="Scan.PNG", content=PNG, backend=light_target.key)
    assert (await save(good, mode, policy=policy)).is_saved


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_custom_validators(light_target: Target, mode: str) -> None:
    calls: list[tuple[str, bytes]] = []

    def no_secrets(file: FileObject, head: bytes) -> None:
        calls.append((file.filename, head))
        if b"SECRET" in head:
            raise ValidationError("The file contains a secret.")

    def crashing(file: FileObject, head: bytes) -> None:
        if head.startswith(b"boom"):
            raise RuntimeError("validator crashed")

    policy = UploadPolicy(validators=(no_secrets, crashing))
    bad = FileObject(filename="a.txt", content=b"a SECRET b", backend=light_target.key)
    with pytest.raises(ValidationError, match="secret"):
        await save(bad, mode, policy=policy)
    with pytest.raises(RuntimeError):
        await save(
            FileObject(filename="b.txt", content=b"boom", backend=light_target.key),
            mode,
            policy=policy,
        )
    assert light_target.leftovers() == []
    good = FileObject(filename="c.txt", content=b"fine", backend=light_target.key)
    await save(good, mode, policy=policy)
    assert calls[0] == ("a.txt", b"a SECRET b")
    assert calls[-1] == ("c.txt", b"fine")


def _stored_type(target: Target, path: str) -> str | None:
    return target.backend.head(path).content_type


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_png_renamed_pdf_is_stored_as_png(target: Target, mode: str) -> None:
    file = FileObject(filename="invoice.pdf", content=PNG, backend=target.key)
    assert file.content_type == "application/pdf"
    policy = UploadPolicy(allowed_content_types=("image/*", "application/pdf"))
    await save(file, mode, policy=policy)
    assert file.content_type == "image/png"
    assert file.to_dict()["content_type"] == "image/png"
    if target.backend.supports_attributes:
        assert _stored_type(target, file.path) == "image/png"  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_html_disguised_as_image_is_refused(target: Target, mode: str) -> None:
    file = FileObject(
        filename="photo.png", content=HTML, content_type="image/png", backend=target.key
    )
    with pytest.raises(InvalidContentTypeError) as caught:
        await save(file, mode, policy=UploadPolicy(allowed_content_types=("image/*",)))
    assert caught.value.declared == "image/png"
    assert caught.value.detected == "text/html"
    assert "image/png" in str(caught.value)
    assert "text/html" in str(caught.value)
    assert target.leftovers() == _empty(target)


async def test_sniff_without_allow_list_and_refinement(light_target: Target) -> None:
    key = light_target.key
    sniffed = FileObject(filename="x.bin", content=PNG, backend=key)
    assert sniffed.save(policy=UploadPolicy(sniff=True)).content_type == "image/png"
    # Plain text may keep a more precise declared text type (CSV), never an active one.
    csv = FileObject(filename="t.csv", content=b"a,b\n1,2\n", backend=key)
    assert csv.save(policy=UploadPolicy(sniff=True)).content_type == "text/csv"
    fake_html = FileObject(filename="t.html", content=b"just words", backend=key)
    assert fake_html.save(policy=UploadPolicy(sniff=True)).content_type == "text/plain"
    unknown = FileObject(filename="blob.dat", content=b"\x00\x01\x02", backend=key)
    assert unknown.save(policy=UploadPolicy(sniff=True)).content_type == (
        "application/octet-stream"
    )
    not_sniffed = FileObject(filename="x.gif", content=PNG, backend=key)
    policy = UploadPolicy(allowed_content_types=("image/gif",), sniff=False)
    assert not_sniffed.save(policy=policy).content_type == "image/gif"


# -- what the stored type and disposition may be (issue 13, items 1 and 12) --------------------
XSL_PAGE = b"<x>an XSLT file, they said</x><script>fetch('/pwned')</script>"
"""HTML with a script that the sniffer sees as plain text (no known tag comes first)."""


def _zip_claiming(mimetype: bytes) -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("mimetype", mimetype, compress_type=zipfile.ZIP_STORED)
        archive.writestr("payload.html", b"<script>alert(1)</script>")
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_declared_type_the_bytes_do_not_prove_is_not_kept(
    target: Target, mode: str
) -> None:
    """`text/xsl` over HTML-ish plain text passes a `text/*` list only as text/plain."""
    file = FileObject(
        filename="style.xsl", content=XSL_PAGE, content_type="text/xsl", backend=target.key
    )
    await save(file, mode, policy=UploadPolicy(allowed_content_types=("text/*",)))
    assert file.content_type == "text/plain"
    if target.backend.supports_attributes:
        info = target.backend.head(str(file.path))
        assert info.content_type == "text/plain"
    # listed explicitly, an unproven text/xsl is refused rather than stored
    explicit = FileObject(
        filename="style.xsl", content=XSL_PAGE, content_type="text/xsl", backend=target.key
    )
    with pytest.raises(InvalidContentTypeError):
        await save(explicit, mode, policy=UploadPolicy(allowed_content_types=("text/xsl",)))


@pytest.mark.parametrize("declared", ["text/html", "image/svg+xml", "application/xml", "text/xsl"])
async def test_unrecognised_bytes_never_keep_a_declared_type(
    light_target: Target, declared: str
) -> None:
    binary = b"\xff\xfe\x00garbage" + bytes(range(256)) + b"<script>alert(1)</script>"
    file = FileObject(
        filename="page.html", content=binary, content_type=declared, backend=light_target.key
    )
    file.save(policy=UploadPolicy(allowed_content_types=("*/*",)))
    assert file.content_type == "application/octet-stream"
    with pytest.raises(InvalidContentTypeError):  # and an explicit list does not admit it
        FileObject(
            filename="p.html", content=binary, content_type=declared, backend=light_target.key
        ).save(policy=UploadPolicy(allowed_content_types=(declared,)))


@pytest.mark.parametrize("claimed", [b"application/pdf", b"text/html", b"image/png"])
def test_a_zip_is_identified_by_its_container_not_its_mimetype_entry(
    light_target: Target, claimed: bytes
) -> None:
    data = _zip_claiming(claimed)
    claim = claimed.decode()
    file = FileObject(filename="x.pdf", content=data, content_type=claim, backend=light_target.key)
    with pytest.raises(InvalidContentTypeError) as caught:
        file.save(policy=UploadPolicy(allowed_content_types=(claim,)))
    assert caught.value.detected == "application/zip"
    assert light_target.leftovers() == []
    odt = _zip_claiming(b"application/vnd.oasis.opendocument.text")
    stored = FileObject(filename="a.odt", content=odt, backend=light_target.key).save(
        policy=UploadPolicy(allowed_content_types=("application/vnd.oasis.opendocument.text",))
    )
    assert stored.content_type == "application/vnd.oasis.opendocument.text"


@pytest.mark.parametrize(
    ("filename", "content", "content_type", "kind", "shown"),
    [
        ("photo.png", PNG, "image/png", "inline", "photo.png"),
        ("notes.txt", b"plain words", "text/plain", "inline", "notes.txt"),
        ("style.xsl", XSL_PAGE, "text/xsl", "attachment", "style.xsl"),
        ("page.html", HTML, "text/html", "attachment", "page.html"),
        ("feed.rss", b"<?xml version='1.0'?><rss/>", "application/rss+xml", "attachment", None),
        ("report.pdf", b"%PDF-1.7\n", "application/pdf", "attachment", "report.pdf"),
        ("odd.thing", b"?", "text/x-anything", "attachment", "odd.thing"),
        ("../../etc/passwd", b"x", "text/plain", "inline", "passwd"),
        ("invoice\u202efdp.exe", b"MZ", "image/png", "inline", "invoicefdp.exe"),
        ("ctl\x01byte.png", PNG, "image/png", "inline", "ctlbyte.png"),  # (NUL: refused)
    ],
)
@pytest.mark.parametrize("with_metadata", [False, True], ids=["fast-path", "general-path"])
def test_the_stored_content_disposition_follows_the_inline_rule(
    filename: str,
    content: bytes,
    content_type: str,
    kind: str,
    shown: str | None,
    with_metadata: bool,
) -> None:
    """What S3, GCS and Azure would serve through a signed GET URL."""
    backend = ObstoreBackend("attrs", "memory://")
    storages.register_backend(backend)
    # both ways the library writes attributes: the one-buffer fast path, and the
    # general path (taken with metadata)
    file = FileObject(
        filename=filename,
        content=content,
        content_type=content_type,
        backend="attrs",
        metadata={"k": "v"} if with_metadata else None,
    ).save()
    disposition = backend.head(str(file.path)).attributes["Content-Disposition"]
    assert disposition.split(";")[0] == kind
    assert all(32 <= ord(ch) < 127 for ch in disposition)
    if shown is not None:
        assert disposition.endswith("filename*=UTF-8''" + shown.replace(" ", "%20"))


class _PageServer:
    """A one-page HTTP server on 127.0.0.1 (what `from_url` fetches)."""

    def __init__(self, body: bytes, headers: dict[str, str]) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/page"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_from_url_fetches_go_through_the_same_rule(mode: str) -> None:
    backend = ObstoreBackend("fetched", "memory://")
    storages.register_backend(backend)
    server = _PageServer(
        XSL_PAGE,
        {
            "Content-Type": "text/xsl",
            "Content-Disposition": "inline; filename*=UTF-8''..%2F..%2Fevil%E2%80%AE.xsl",
        },
    )
    try:
        file = FileObject.from_url(server.url, backend="fetched", allow_private=True)
        await save(file, mode)
        info = backend.head(str(file.path))
        disposition = info.attributes["Content-Disposition"]
        assert disposition.startswith("attachment;")
        assert disposition.endswith("filename*=UTF-8''evil.xsl")
        # sniffed under a text/* list, the remote's text/xsl is not kept either
        sniffed = FileObject.from_url(server.url, backend="fetched", allow_private=True)
        await save(sniffed, mode, policy=UploadPolicy(allowed_content_types=("text/*",)))
        assert sniffed.content_type == "text/plain"
    finally:
        server.close()


# -- where policies come from -----------------------------------------------------------------
def test_backend_default_policy_and_column_layering(tmp_path: Path) -> None:
    backend = ObstoreBackend(
        "guarded",
        "memory://",
        policy=UploadPolicy(max_size=10, allowed_extensions=(".txt",)),
    )
    storages.register_backend(backend)
    with pytest.raises(FileTooLargeError):
        FileObject(filename="a.txt", content=b"x" * 11, backend="guarded").save()
    with pytest.raises(InvalidExtensionError):
        FileObject(filename="a.bin", content=b"x", backend="guarded").save()
    # A column (here: its options) raises the limit; the backend's extension list stays.
    column = StoredObject("guarded", policy=UploadPolicy(max_size=100))
    saved = FileObject(filename="a.txt", content=b"x" * 50, backend="guarded")
    assert saved.save(options=column.save_options).size == 50
    with pytest.raises(InvalidExtensionError):
        FileObject(filename="a.bin", content=b"x", backend="guarded").save(
            options=column.save_options
        )
    # An explicit policy is layered on top of the column's.
    with pytest.raises(FileTooLargeError):
        FileObject(filename="a.txt", content=b"x" * 50, backend="guarded").save(
            options=column.save_options, policy=UploadPolicy(max_size=20)
        )
    assert [o.path for o in backend.list_objects()] == [saved.path]


class Base(DeclarativeBase):
    pass


class Avatar(Base):
    __tablename__ = "avatars"
    id: Mapped[int] = mapped_column(primary_key=True)
    image: Mapped[FileObject | None] = mapped_column(
        StoredObject(
            "memory",
            policy=UploadPolicy(max_size=1000, allowed_content_types=("image/png",)),
        )
    )


def test_column_policy_in_a_sync_session(sqlite_engine: Engine) -> None:
    backend = _memory_target().backend
    Base.metadata.create_all(sqlite_engine)
    with Session(sqlite_engine) as session:
        session.add(Avatar(image=FileObject(filename="me.png", content=HTML)))
        with pytest.raises(InvalidContentTypeError):
            session.commit()
        session.rollback()
        session.add(Avatar(image=FileObject(filename="me.png", content=PNG * 100)))
        with pytest.raises(FileTooLargeError):
            session.commit()
        session.rollback()
        assert session.scalar(select(func.count()).select_from(Avatar)) == 0
        assert list(backend.list_objects()) == []
        avatar = Avatar(image=FileObject(filename="me.jpg", content=PNG))
        session.add(avatar)
        session.commit()
        assert avatar.image is not None
        assert avatar.image.content_type == "image/png"
        assert avatar.image.verify()


async def test_column_policy_in_an_async_session(sqlite_async_engine: AsyncEngine) -> None:
    backend = _memory_target().backend
    async with sqlite_async_engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    async with AsyncSession(sqlite_async_engine) as session:
        session.add(Avatar(image=FileObject(filename="me.png", content=HTML)))
        with pytest.raises(InvalidContentTypeError):
            await session.commit()
        await session.rollback()
        session.add(Avatar(image=FileObject(filename="me.png", content=PNG * 100)))
        with pytest.raises(FileTooLargeError):
            await session.commit()
        await session.rollback()
        assert await session.scalar(select(func.count()).select_from(Avatar)) == 0
        assert list(backend.list_objects()) == []
        image = FileObject(filename="me.png", content=PNG)
        session.add(Avatar(image=image))
        await session.commit()
        assert image.is_saved
        assert await image.verify_async()


# -- verify -----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_verify(target: Target, mode: str) -> None:
    async def verify(file: FileObject) -> bool:
        return file.verify(chunk_size=4096) if mode == "sync" else await file.verify_async()

    data = os.urandom(3 * 4096 + 17)
    file = FileObject(filename="v.bin", content=data, backend=target.key)
    await save(file, mode)
    assert file.checksum is not None
    assert file.checksum.startswith("sha256:")
    assert await verify(file) is True

    # Overwrite the object's bytes behind the library's back (same size, one byte off).
    tampered = bytearray(data)
    tampered[100] ^= 0xFF
    target.backend.put(file.path, bytes(tampered))  # type: ignore[arg-type]
    with pytest.raises(ChecksumMismatchError) as caught:
        await verify(file)
    assert caught.value.expected == file.checksum
    assert caught.value.actual.startswith("sha256:")
    assert caught.value.actual != file.checksum
    assert caught.value.path == file.path
    assert caught.value.backend == target.key

    target.backend.put(file.path, data + b"!")  # type: ignore[arg-type]
    with pytest.raises(ChecksumMismatchError, match="recorded"):
        await verify(file)

    target.backend.delete(file.path)  # type: ignore[arg-type]
    with pytest.raises(ObjectNotFoundError):
        await verify(file)


def test_verify_without_checksum(light_target: Target) -> None:
    light_target.backend.put("bare.bin", b"abc")
    with pytest.raises(FileObjectError, match="no checksum"):
        FileObject(backend=light_target.key, path="bare.bin").verify()
    light_target.backend.checksum_algorithm = None
    unchecked = FileObject(filename="u.bin", content=b"abc", backend=light_target.key).save()
    with pytest.raises(FileObjectError, match="no checksum"):
        unchecked.verify()


def test_verify_with_another_algorithm(tmp_path: Path) -> None:
    backend = ObstoreBackend("md5", "memory://", checksum_algorithm="md5")
    storages.register_backend(backend)
    file = FileObject(filename="a", content=b"abc", backend="md5").save()
    assert file.checksum == "md5:900150983cd24fb0d6963f7d28e17f72"
    assert file.verify()


# -- memory ---------------------------------------------------------------------------------
MEMORY_PROBE = textwrap.dedent(
    """
    import json, resource, sys
    from pathlib import Path
    from sqlalchemy_obstore import FileObject, FileTooLargeError, ObstoreBackend, storages
    from sqlalchemy_obstore import UploadPolicy

    MIB = 1024 * 1024
    root = Path(sys.argv[1])
    storages.register_backend(ObstoreBackend("local", root))
    block = b"\\xab" * MIB

    def stream(total_mib):
        for _ in range(total_mib):
            yield block

    # Warm up (imports, runtime, thread pools) with a small upload first.
    FileObject(filename="warm.bin", content=stream(8), backend="local").save()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    file = FileObject(filename="big.bin", content=stream(256), backend="local")
    try:
        file.save(policy=UploadPolicy(max_size=100 * MIB))
    except FileTooLargeError as exc:
        seen = exc.size_seen
    else:
        raise SystemExit("not refused")
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"growth_kib": after - before, "seen": seen}))
    """
)


@pytest.mark.slow
def test_aborted_large_upload_keeps_memory_bounded(tmp_path: Path) -> None:
    """256 MiB streamed against a 100 MiB limit: RSS grows far less than the limit."""
    root = tmp_path / f"store-{uuid.uuid4().hex[:6]}"
    root.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(root)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    import json

    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert 100 * MIB < report["seen"] <= 101 * MIB
    assert report["growth_kib"] < 40 * 1024, report  # well below the 100 MiB read
    left = sorted(p.name for p in root.rglob("*"))
    assert all(name.startswith("warm") or len(name) == 32 for name in left), left
    assert not any(p.name == "big.bin" or "big" in p.name for p in root.rglob("*")), left
