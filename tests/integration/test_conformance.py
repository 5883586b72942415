"""Backend conformance: one set of tests that every backend runs.

Each test is written once and parametrized over memory, local files, S3 (moto and
SeaweedFS), Azure (Azurite) and GCS (fake-gcs-server). Backends are built from a
storage URL plus configuration, the way users build them. A backend that cannot do
something asserts the typed `UnsupportedOperationError`; nothing is skipped for
capability reasons.

On GCS the library's own writes cannot run: obstore's GCS client writes through the XML
API, which fake-gcs-server lacks. Objects are seeded through its JSON API, and every
library write asserts that the failure arrives as a typed `StorageError`. Bytes still
reach fake-gcs-server through obstore's signed PUT URLs, so signed uploads (then read,
list, delete) and the column lifecycle fed by upload tickets run there for real. GCS
signing is verified offline, cryptographically (`test_gcs_signed_url_verifies_offline`).

With `SQLALCHEMY_OBSTORE_CAPABILITIES_OUT=<path>`, the observed outcomes are written as
JSON; `scripts/capability_table.py` turns them into `docs/backends/capabilities.md`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import httpx
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sqlalchemy_obstore import (
    FileObject,
    InvalidExpiryError,
    ObjectExistsError,
    ObjectNotFoundError,
    ObstoreBackend,
    SaveOptions,
    StorageError,
    StorageOperationError,
    StoragePermissionError,
    StoredObject,
    UnsupportedOperationError,
    storages,
)
from sqlalchemy_obstore._attributes import content_disposition
from sqlalchemy_obstore.backends import HttpMethod
from sqlalchemy_obstore.signing import development_signer
from sqlalchemy_obstore.tickets import UploadTickets
from tests.integration.backends import (
    BACKEND_KEY,
    BACKENDS,
    EXPECTED,
    GCS_WRITE_GAP,
    CapabilityRecorder,
    Target,
    assert_translated,
    azurite_backend,
    fake_gcs_backend,
    gcs_seed,
    s3_backend,
)
from tests.servers import AzuriteServer, FakeGcsServer, S3Server, SeaweedServer

pytestmark = pytest.mark.integration

HTTP_OK = {200, 201}
HTTP_FORBIDDEN = 403
HTTP_BAD_REQUEST = 400
S3_MIN_PART = 5 * 1024 * 1024


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def capability_recorder() -> Iterator[CapabilityRecorder]:
    """Collects outcomes; writes them as JSON when SQLALCHEMY_OBSTORE_CAPABILITIES_OUT is set."""
    recorder = CapabilityRecorder()
    yield recorder
    recorder.write_if_requested()


@pytest.fixture(params=list(BACKENDS))
def conformance_target(
    request: pytest.FixtureRequest, tmp_path: Path, capability_recorder: CapabilityRecorder
) -> Target:
    """One backend (registered as `"conformance"`) with a key namespace for this test."""
    name: str = request.param
    root = f"conformance/{uuid.uuid4().hex[:12]}"
    gcs: FakeGcsServer | None = None
    backend: ObstoreBackend
    if name == "memory":
        backend = ObstoreBackend(BACKEND_KEY, "memory://", prefix=root)
    elif name == "local":
        backend = ObstoreBackend(BACKEND_KEY, f"file://{tmp_path / 'store'}/", prefix=root)
    elif name in {"moto", "seaweed"}:
        server: S3Server = request.getfixturevalue(f"{name}_server")
        backend = s3_backend(server, prefix=root)
    elif name == "azurite":
        backend = azurite_backend(request.getfixturevalue("azurite_server"), prefix=root)
    elif name == "gcs":
        gcs = request.getfixturevalue("fake_gcs_server")
        backend = fake_gcs_backend(gcs, prefix=root)
    else:  # pragma: no cover
        raise AssertionError(name)
    storages.register_backend(backend)
    return Target(name, backend, EXPECTED[name], capability_recorder, root, gcs)


@pytest.fixture
def conformance_backend(conformance_target: Target) -> ObstoreBackend:
    """The registered `ObstoreBackend` of `conformance_target`."""
    return conformance_target.backend


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    # trust_env=False: never route 127.0.0.1 through a proxy from the environment.
    with httpx.Client(timeout=30, trust_env=False) as client:
        yield client


def _payload(size: int, seed: str = "") -> bytes:
    block = hashlib.sha256(seed.encode()).digest()
    return (block * (size // len(block) + 1))[:size]


# -- capability claims ---------------------------------------------------------------------------
def test_capability_properties(
    conformance_backend: ObstoreBackend, conformance_target: Target
) -> None:
    """What the backend says about itself matches what this suite expects of it."""
    backend, expected = conformance_backend, conformance_target.expected
    assert storages.get_backend(BACKEND_KEY) is backend
    assert backend.supports_native_signing is expected.signing
    assert backend.supports_signing is (expected.signing or expected.development_signing)
    assert backend.supports_attributes is expected.attributes
    assert backend.supports_suffix_range is expected.suffix_range
    assert backend.max_sign_expiry == expected.max_sign_expiry
    assert dict(backend.upload_headers) == dict(expected.upload_headers)
    # describe() and repr() work on every store (AzureStore's own repr can panic).
    assert backend.describe()
    assert repr(backend).startswith("ObstoreBackend(key='conformance'")


# -- saving --------------------------------------------------------------------------------------
CONTENT_KINDS = ["bytes", "memoryview", "path", "file", "iter", "aiter"]


class _TrackingPath(type(Path())):  # type: ignore[misc]  # PosixPath / WindowsPath
    """A `Path` that remembers the handles opened on it, to check they get closed."""

    def open(self, *args: Any, **kwargs: Any) -> Any:
        handle = super().open(*args, **kwargs)
        self.__dict__.setdefault("opened", []).append(handle)
        return handle


async def _released(path: _TrackingPath, timeout: float = 5.0) -> bool:
    """Whether every handle opened on `path` is closed (waiting up to `timeout`)."""
    deadline = time.monotonic() + timeout
    while not all(handle.closed for handle in path.__dict__.get("opened", [])):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def _content_for(kind: str, data: bytes, tmp_path: Path) -> Any:
    if kind == "bytes":
        return data
    if kind == "memoryview":
        return memoryview(bytearray(data))
    if kind == "path":
        path = _TrackingPath(tmp_path / "upload.bin")
        path.write_bytes(data)
        return path
    if kind == "file":
        return io.BytesIO(data)
    if kind == "iter":
        return iter([data[:100], data[100:1000], data[1000:]])

    async def chunks() -> AsyncIterator[bytes]:
        for part in (data[:100], data[100:1000], data[1000:]):
            await asyncio.sleep(0)
            yield part

    return chunks()


@pytest.mark.parametrize("kind", CONTENT_KINDS)
async def test_save_content_kinds(conformance_target: Target, kind: str, tmp_path: Path) -> None:
    """Every content kind saves under a fresh key and reads back byte for byte."""
    target = conformance_target
    data = _payload(4096 + 7, kind)
    file_source = _content_for(kind, data, tmp_path)
    file = FileObject(filename=f"{kind}.bin", content=file_source)
    assert file.backend is None
    file.backend = BACKEND_KEY
    if not target.expected.writes:
        with pytest.raises(StorageError) as info:
            await file.save_async() if kind == "aiter" else file.save()
        assert_translated(info.value, StorageOperationError)
        assert file.path is None
        assert file.has_pending_content
        target.record(f"save.{kind}", "emulator-gap", GCS_WRITE_GAP)
        return
    if kind == "aiter":
        await file.save_async()
    else:
        file.save()
    if kind == "path":
        assert await _released(file_source)
    assert file.path is not None
    assert file.path.startswith(target.root + "/")
    assert file.path.endswith(f"{kind}.bin")
    assert file.size == len(data)
    assert file.checksum == "sha256:" + hashlib.sha256(data).hexdigest()
    assert not file.has_pending_content
    assert file.get_content() == data
    assert await file.get_content_async() == data
    target.record(f"save.{kind}", "supported")


@pytest.mark.parametrize("kind", ["path", "aiter"])
async def test_multipart_upload(conformance_target: Target, kind: str, tmp_path: Path) -> None:
    """Content larger than `chunk_size` goes up as a multipart upload and reads back."""
    target = conformance_target
    s3 = target.name in {"moto", "seaweed"}
    # S3 parts must be >= 5 MiB (except the last); elsewhere small parts keep it fast.
    chunk = S3_MIN_PART if s3 else 256 * 1024
    data = _payload(2 * chunk + chunk // 5, "multipart")
    content = _content_for(kind, data, tmp_path)
    file = FileObject(filename="big.bin", content=content, backend=BACKEND_KEY)
    if not target.expected.writes:
        with pytest.raises(StorageError) as info:
            await file.save_async(chunk_size=chunk)
        assert_translated(info.value, StorageOperationError)
        if kind == "path":
            # The failed upload must release the source file. (It does so only once
            # obstore's runtime drops the body iterator: see the report on ContentReader.)
            assert await _released(content)
        target.record("multipart", "emulator-gap", GCS_WRITE_GAP)
        return
    await file.save_async(chunk_size=chunk)
    if kind == "path":
        assert await _released(content)
    assert file.size == len(data)
    assert file.path is not None
    if s3:
        # The real-S3 multipart ETag form: "<md5 of part md5s>-<number of parts>".
        assert file.etag is not None
        assert file.etag.strip('"').endswith("-3"), file.etag
    assert await file.get_content_async() == data
    chunks = [c async for c in file.iter_chunks_async(chunk_size=chunk)]
    assert b"".join(chunks) == data
    info_ = await target.backend.head_async(file.path)
    assert info_.size == len(data)
    size = f"{chunk // 2**20} MiB" if chunk >= 2**20 else f"{chunk // 1024} KiB"
    target.record("multipart", "supported", f"3 parts of {size}")


# -- reading -------------------------------------------------------------------------------------
async def test_read_whole_chunks_ranges_head(conformance_target: Target) -> None:
    """get_bytes, iter_chunks, get_range, get_suffix, head/refresh and exists."""
    target, backend = conformance_target, conformance_target.backend
    data = _payload(64 * 1024 + 3, "read")
    path = target.key("read/data.txt")
    target.seed(path, data, content_type="text/plain")

    assert backend.get_bytes(path) == data
    assert await backend.get_bytes_async(path) == data
    file = FileObject(backend=BACKEND_KEY, path=path)
    assert file.get_content() == data
    target.record("read.whole", "supported")

    chunks = list(backend.iter_chunks(path, chunk_size=16 * 1024))
    assert b"".join(chunks) == data
    assert all(isinstance(c, bytes) for c in chunks)
    assert b"".join([c async for c in file.iter_chunks_async(chunk_size=16 * 1024)]) == data
    target.record("read.chunks", "supported")

    assert backend.get_range(path, 10, 100) == data[10:110]
    assert await backend.get_range_async(path, 0, 1) == data[:1]
    assert file.get_range(len(data) - 5, 100) == data[-5:]  # shorter at the end
    assert backend.get_range(path, 7, 0) == b""
    target.record("read.range", "supported")

    if target.expected.suffix_range:
        assert backend.get_suffix(path, 10) == data[-10:]
        assert await backend.get_suffix_async(path, 10) == data[-10:]
        assert backend.get_suffix(path, len(data) + 50) == data  # longer than the object
        target.record("read.suffix", "supported")
    else:
        with pytest.raises(UnsupportedOperationError) as info:
            backend.get_suffix(path, 10)
        assert_translated(info.value, UnsupportedOperationError)
        assert info.value.backend == BACKEND_KEY
        assert info.value.path == path
        with pytest.raises(UnsupportedOperationError):
            await backend.get_suffix_async(path, 10)
        target.record("read.suffix", "unsupported", "no suffix ranges: head() + get_range()")

    head = backend.head(path)
    assert head.path == path
    assert head.size == len(data)
    assert head.etag
    assert head.last_modified.tzinfo is not None
    refreshed = FileObject(backend=BACKEND_KEY, path=path, content_type="application/x-unknown")
    await refreshed.refresh_async()
    assert refreshed.size == len(data)
    assert refreshed.etag == head.etag
    if target.expected.attributes:
        assert head.content_type == "text/plain"
        assert refreshed.content_type == "text/plain"
    else:  # the store keeps no content type: the column's value stays
        assert head.content_type is None
        assert refreshed.content_type == "application/x-unknown"
    target.record("head", "supported")

    assert backend.exists(path)
    assert await backend.exists_async(path)
    assert file.exists()
    assert not backend.exists(target.key("read/absent.txt"))
    assert not await FileObject(backend=BACKEND_KEY, path=target.key("nope")).exists_async()
    target.record("exists", "supported")


async def test_missing_object_errors(conformance_target: Target) -> None:
    """Reads of a missing object raise ObjectNotFoundError (a FileNotFoundError)."""
    target, backend = conformance_target, conformance_target.backend
    missing = target.key("missing/never-written.bin")
    file = FileObject(backend=BACKEND_KEY, path=missing)

    async def consume(stream: AsyncIterator[bytes]) -> None:
        async for _ in stream:
            pass

    attempts: dict[str, Callable[[], object]] = {
        "get_bytes": lambda: backend.get_bytes(missing),
        "head": lambda: backend.head(missing),
        "get_range": lambda: backend.get_range(missing, 0, 10),
        "iter_chunks": lambda: list(backend.iter_chunks(missing)),
        "get_content": file.get_content,
        "refresh": file.refresh,
        "get_bytes_async": lambda: backend.get_bytes_async(missing),
        "head_async": lambda: backend.head_async(missing),
        "get_range_async": lambda: backend.get_range_async(missing, 2, 3),
        "iter_chunks_async": lambda: consume(file.iter_chunks_async()),
        "refresh_async": file.refresh_async,
    }
    if target.expected.suffix_range:
        attempts["get_suffix"] = lambda: backend.get_suffix(missing, 4)
    for label, attempt in attempts.items():
        with pytest.raises(ObjectNotFoundError) as info:
            await _call(attempt)
        error = info.value
        assert_translated(error, ObjectNotFoundError)
        assert isinstance(error, FileNotFoundError), label
        assert error.backend == BACKEND_KEY, label
        assert error.path == missing, label
        assert error.__cause__ is not None, label
    assert not backend.exists(missing)
    target.record("missing", "supported")


async def _call(attempt: Callable[[], object]) -> object:
    """Call a sync operation, or call and await an async one."""
    result = attempt()
    return await result if asyncio.iscoroutine(result) else result


# -- deleting ------------------------------------------------------------------------------------
async def test_delete_one_and_many(conformance_target: Target) -> None:
    """delete() takes one path or many, and a missing object is never an error."""
    target, backend = conformance_target, conformance_target.backend
    paths = [target.key(f"delete/{n}.txt") for n in range(5)]
    for path in paths:
        target.seed(path, path.encode())
    missing = [target.key("delete/missing-1"), target.key("delete/missing-2")]

    backend.delete(paths[0])
    assert not backend.exists(paths[0])
    assert backend.exists(paths[1])
    backend.delete([paths[1], missing[0], paths[2], missing[1]])
    assert not any(backend.exists(p) for p in paths[:3])
    await backend.delete_async([paths[3]])
    await FileObject(backend=BACKEND_KEY, path=paths[4]).delete_async()
    assert not any([await backend.exists_async(p) for p in paths])
    target.record("delete", "supported")

    backend.delete(missing[0])
    backend.delete(paths)  # everything already gone
    await backend.delete_async(missing)
    await backend.delete_async(paths[0])
    FileObject(backend=BACKEND_KEY, path=paths[0]).delete()
    backend.delete([])
    target.record("delete.missing", "supported")


# -- copying -------------------------------------------------------------------------------------
async def test_copy_and_refuse_overwrite(conformance_target: Target) -> None:
    """copy() copies; it refuses to overwrite with ObjectExistsError unless told to."""
    target, backend = conformance_target, conformance_target.backend
    source, other = target.key("copy/source.txt"), target.key("copy/other.txt")
    destination = target.key("copy/destination.txt")
    attributes = {"Content-Disposition": 'attachment; filename="s.txt"', "owner": "bob"}
    target.seed(source, b"source bytes", content_type="text/plain", attributes=attributes)
    target.seed(other, b"other bytes", content_type="text/plain")
    if not target.expected.writes:
        for overwrite in (False, True):
            with pytest.raises(StorageError) as info:
                backend.copy(source, destination, overwrite=overwrite)
            assert_translated(info.value, StorageOperationError)
        target.record("copy", "emulator-gap", GCS_WRITE_GAP)
        target.record("copy.no_overwrite", "emulator-gap", GCS_WRITE_GAP)
        return

    backend.copy(source, destination)
    assert backend.get_bytes(destination) == b"source bytes"
    if target.expected.attributes:  # a copy keeps type, disposition and metadata
        copied = backend.head(destination)
        assert copied.content_type == "text/plain"
        assert copied.attributes.get("Content-Disposition") == attributes["Content-Disposition"]
        assert copied.metadata == {"owner": "bob"}
    await backend.copy_async(other, destination, overwrite=True)
    assert backend.get_bytes(destination) == b"other bytes"
    target.record("copy", "supported")

    with pytest.raises(ObjectExistsError) as info:
        backend.copy(source, destination)
    assert_translated(info.value, ObjectExistsError)
    assert isinstance(info.value, FileExistsError)
    assert info.value.backend == BACKEND_KEY
    assert info.value.path == destination
    with pytest.raises(ObjectExistsError):
        await backend.copy_async(source, destination, overwrite=False)
    assert backend.get_bytes(destination) == b"other bytes"  # untouched
    with pytest.raises(ObjectNotFoundError):
        backend.copy(target.key("copy/absent"), target.key("copy/elsewhere"))
    target.record("copy.no_overwrite", "supported")


# -- listing -------------------------------------------------------------------------------------
async def test_list_objects(conformance_target: Target) -> None:
    """list_objects: directory-like prefixes, offsets, and paging past 1000 keys."""
    target, backend = conformance_target, conformance_target.backend
    base = target.key("list")
    inside = [f"{base}/a.txt", f"{base}/b.txt", f"{base}/sub/c.txt"]
    for path in [*inside, f"{base}-sibling.txt"]:
        target.seed(path, b"x" * 3)

    listed = sorted(info.path for info in backend.list_objects(base))
    assert listed == inside
    infos = [info async for info in backend.list_objects_async(base)]
    assert sorted(i.path for i in infos) == inside
    assert all(i.size == 3 for i in infos)
    target.record("list.prefix", "supported")

    after = sorted(info.path for info in backend.list_objects(base, offset=inside[0]))
    assert after == inside[1:]
    after_async = [i.path async for i in backend.list_objects_async(base, offset=inside[1])]
    assert sorted(after_async) == inside[2:]
    target.record("list.offset", "supported")

    if target.name in {"memory", "local"}:  # kept to server-less stores for speed
        many = [f"{target.key('many')}/{n:05d}" for n in range(1003)]
        for path in many:
            backend.put(path, b"")
        assert sorted(i.path for i in backend.list_objects(target.key("many"))) == many
        count = 0
        async for _ in backend.list_objects_async(target.key("many")):
            count += 1
        assert count == len(many)
        target.record("list.paging", "supported", "1003 objects, pages of 1000")


# -- attributes ----------------------------------------------------------------------------------
async def test_attributes_round_trip(conformance_target: Target) -> None:
    """Content type, Content-Disposition (RFC 5987 name), Cache-Control, user metadata."""
    target, backend = conformance_target, conformance_target.backend
    filename = "Résumé 2024 \N{EN DASH} final.pdf"
    disposition = content_disposition(filename, "application/pdf")
    assert "filename*=UTF-8''R%C3%A9sum%C3%A9%202024%20%E2%80%93%20final.pdf" in disposition
    expected = {
        "Content-Disposition": disposition,
        "Cache-Control": "private, max-age=600",
        "owner": "alice",
    }
    if target.expected.writes:
        file = FileObject(
            filename=filename, content=b"%PDF-1.7", backend=BACKEND_KEY, metadata={"owner": "alice"}
        )
        await file.save_async(options=SaveOptions(cache_control="private, max-age=600"))
        assert file.path is not None
        path = file.path
    else:  # fake-gcs-server: seed the same attributes through the JSON API
        path = target.key("attributes/resume.pdf")
        target.seed(path, b"%PDF-1.7", content_type="application/pdf", attributes=expected)

    info = await backend.head_async(path)
    if target.expected.attributes:
        assert info.content_type == "application/pdf"
        assert info.attributes.get("Content-Disposition") == disposition
        assert info.attributes.get("Cache-Control") == "private, max-age=600"
        assert info.metadata == {"owner": "alice"}
        detail = "read side only (seeded via JSON API)" if not target.expected.writes else ""
        target.record("attributes", "supported", detail)
    else:
        # Local files keep no attributes: they are dropped on write (the column keeps
        # content type and metadata) and head() reports none.
        assert info.content_type is None
        assert dict(info.attributes) == {}
        assert info.metadata == {}
        target.record("attributes", "dropped", "the column keeps content type and metadata")


# -- signing -------------------------------------------------------------------------------------
async def test_signed_get_and_put(conformance_target: Target, http: httpx.Client) -> None:
    """Signed GET and PUT URLs work for real over HTTP; elsewhere a typed error."""
    target, backend = conformance_target, conformance_target.backend
    path = target.key("signed/hello.txt")
    target.seed(path, b"hello signed", content_type="text/plain")
    stored = FileObject(backend=BACKEND_KEY, path=path)

    if target.expected.development_signing:
        # a memory store signs with the process's development signer, for the HMAC route
        url = backend.sign(path, expires_in=300)
        assert url.startswith(f"/_storage/{BACKEND_KEY}/{path}?")
        query = dict(parse_qsl(urlsplit(url).query))
        development_signer().verify(
            BACKEND_KEY, path, method="GET", expires=query["expires"], signature=query["signature"]
        )
        put = (await backend.sign_async([path], method="PUT"))[0]
        assert dict(parse_qsl(urlsplit(put).query))["method"] == "PUT"
        for operation in ("sign.get", "sign.put"):
            target.record(operation, "hmac")
        return
    if not target.expected.signing:
        calls: list[Any] = [
            lambda: backend.sign(path),
            lambda: backend.sign([path], method="PUT"),
            stored.sign,
            FileObject(filename="u.txt", backend=BACKEND_KEY).sign_upload,
        ]
        for call in calls:
            with pytest.raises(UnsupportedOperationError) as info:
                call()
            assert_translated(info.value, UnsupportedOperationError)
        with pytest.raises(UnsupportedOperationError):
            await backend.sign_async(path)
        with pytest.raises(UnsupportedOperationError):
            await stored.sign_async(expires_in=60)
        with pytest.raises(UnsupportedOperationError):
            backend.sign(path, expires_in=timedelta(days=30))
        for operation in ("sign.get", "sign.put", "sign.expiry_limit"):
            target.record(operation, "unsupported")
        return

    # GET: single, batch, async, and through FileObject (cached per lifetime).
    url = backend.sign(path, expires_in=300)
    response = http.get(url)
    assert response.status_code == 200, response.text
    assert response.content == b"hello signed"
    urls = backend.sign([path, path], expires_in=120)
    assert isinstance(urls, list)
    assert len(urls) == 2
    assert http.get(urls[1]).content == b"hello signed"
    async_url = await backend.sign_async(path, expires_in=60)
    assert http.get(async_url).content == b"hello signed"
    file_url = await stored.sign_async(expires_in=600)
    assert stored.sign(expires_in=600) == file_url
    assert http.get(file_url).content == b"hello signed"
    target.record("sign.get", "supported")

    # PUT: a fresh key, the backend's upload headers, then read through the library.
    upload = FileObject(filename="direct upload.txt", backend=BACKEND_KEY)
    signed = await upload.sign_upload_async(expires_in=300)
    assert upload.path is not None
    assert upload.path.startswith(target.root + "/")
    assert signed.method == "PUT"
    assert dict(signed.headers) == dict(target.expected.upload_headers)
    assert signed.expires_at > datetime.now(timezone.utc)
    response = http.put(signed.url, content=b"uploaded directly", headers=dict(signed.headers))
    assert response.status_code in HTTP_OK, (response.status_code, response.text)
    await upload.refresh_async()
    assert upload.size == len(b"uploaded directly")
    assert await upload.get_content_async() == b"uploaded directly"
    raw_path = target.key("signed/raw-put.bin")
    raw_put = backend.sign(raw_path, method="PUT", expires_in=60)
    response = http.put(raw_put, content=b"raw", headers=dict(backend.upload_headers))
    assert response.status_code in HTTP_OK, response.text
    assert backend.get_bytes(raw_path) == b"raw"
    # What a signed PUT wrote is an object like any other: listed, then deleted.
    assert {upload.path, raw_path} <= {i.path for i in backend.list_objects(target.root)}
    await upload.delete_async()
    backend.delete(raw_path)
    assert not backend.exists(raw_path)
    assert not await backend.exists_async(upload.path)
    assert {i.path for i in backend.list_objects(target.root)} == {path}
    target.record("sign.put", "supported")

    # Expiry bounds.
    for bad in (0, -5, timedelta(seconds=-1)):
        with pytest.raises(InvalidExpiryError):
            backend.sign(path, expires_in=bad)
    limit = target.expected.max_sign_expiry
    if limit is not None:
        backend.sign(path, expires_in=limit)  # the limit itself is fine
        with pytest.raises(InvalidExpiryError) as too_long:
            backend.sign(path, expires_in=limit + timedelta(seconds=1))
        assert_translated(too_long.value, InvalidExpiryError)
        with pytest.raises(InvalidExpiryError):
            await stored.sign_async(expires_in=timedelta(days=8))
        target.record("sign.expiry_limit", "supported", "7 days")
    else:
        assert http.get(backend.sign(path, expires_in=timedelta(days=30))).status_code == 200
        target.record("sign.expiry_limit", "supported", "no fixed limit")


# -- column + session lifecycle --------------------------------------------------------------------
class _Base(DeclarativeBase):
    pass


class ConformanceDocument(_Base):
    __tablename__ = "conformance_documents"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    file: Mapped[FileObject | None] = mapped_column(
        StoredObject(backend=BACKEND_KEY, cache_control="public, max-age=300")
    )


async def test_column_lifecycle_round_trip(
    conformance_target: Target, sqlite_async_engine: AsyncEngine
) -> None:
    """Add with pending content, commit, read back, replace, commit: the old object is gone."""
    target, backend = conformance_target, conformance_target.backend
    async with sqlite_async_engine.begin() as conn:
        await conn.run_sync(_Base.metadata.create_all)
    sessions = async_sessionmaker(sqlite_async_engine, expire_on_commit=False)

    async with sessions() as session:
        document = ConformanceDocument(
            title="first", file=FileObject(filename="first.txt", content=b"first version")
        )
        session.add(document)
        if not target.expected.writes:
            with pytest.raises(StorageError) as info:
                await session.commit()
            assert_translated(info.value)
            await session.rollback()
            rows = (await session.execute(select(ConformanceDocument))).scalars().all()
            assert rows == []
            target.record("column.lifecycle", "emulator-gap", GCS_WRITE_GAP)
            return
        await session.commit()
        document_id = document.id
        first = document.file
        assert first is not None
        assert first.path is not None
        assert first.backend == BACKEND_KEY
        first_path = first.path

    assert await backend.exists_async(first_path)
    if target.expected.attributes:
        head = await backend.head_async(first_path)
        assert head.attributes.get("Cache-Control") == "public, max-age=300"  # column option
        assert head.content_type == "text/plain"

    async with sessions() as session:
        loaded = await session.get(ConformanceDocument, document_id)
        assert loaded is not None
        assert loaded.file is not None
        assert loaded.file.path == first_path
        assert loaded.file.size == len(b"first version")
        assert await loaded.file.get_content_async() == b"first version"
        loaded.file = FileObject(filename="second.txt", content=b"second version")
        await session.commit()
        second = loaded.file
        assert second is not None
        assert second.path not in {None, first_path}

    assert not await backend.exists_async(first_path)  # deleted after the commit
    async with sessions() as session:
        reloaded = (await session.execute(select(ConformanceDocument))).scalar_one()
        assert reloaded.file is not None
        assert reloaded.file.path == second.path
        assert await reloaded.file.get_content_async() == b"second version"
    target.record("column.lifecycle", "supported")


async def test_column_lifecycle_with_direct_uploads(
    conformance_target: Target, sqlite_async_engine: AsyncEngine, http: httpx.Client
) -> None:
    """Upload tickets (signed PUT, redeem) feed a column: commit, replace, delete after commit.

    The bytes travel through the store's own signed URLs only, so this runs on every
    store that signs, fake-gcs-server included (whose XML-API writes are missing).
    `copy_on_redeem=False`: the copy would be a library write.
    """
    target, backend = conformance_target, conformance_target.backend
    tickets = UploadTickets("a-ticket-secret-of-32-bytes-or-more!", copy_on_redeem=False)
    if not target.expected.signing:
        if target.expected.development_signing:
            grant = tickets.issue(BACKEND_KEY, "a.pdf", method="put")
            assert grant.url.startswith(f"/_storage/{BACKEND_KEY}/")  # the HMAC route's URL
            target.record("column.direct_upload", "hmac")
        else:
            with pytest.raises(UnsupportedOperationError) as info:
                tickets.issue(BACKEND_KEY, "a.pdf", method="put")
            assert_translated(info.value, UnsupportedOperationError)
            target.record("column.direct_upload", "unsupported")
        return

    async def uploaded(filename: str, data: bytes) -> FileObject:
        grant = await tickets.issue_async(ConformanceDocument.file, filename, method="put")
        assert grant.method == "PUT"
        response = http.put(grant.url, content=data, headers=dict(grant.headers))
        assert response.status_code in HTTP_OK, (response.status_code, response.text)
        file = await tickets.redeem_async(grant.ticket)
        assert (file.size, file.content_type) == (len(data), "application/pdf")
        return file

    pdf = b"%PDF-1.7\n" + _payload(2048, "direct")
    async with sqlite_async_engine.begin() as conn:
        await conn.run_sync(_Base.metadata.create_all)
    sessions = async_sessionmaker(sqlite_async_engine, expire_on_commit=False)
    first = await uploaded("first.pdf", pdf)
    assert first.path is not None
    if target.expected.attributes:  # the grant's headers reached the store
        head = await backend.head_async(first.path)
        assert head.attributes["Content-Disposition"].startswith("attachment;")
    async with sessions() as session:
        session.add(ConformanceDocument(title="direct", file=first))
        await session.commit()
    async with sessions() as session:
        document = (await session.execute(select(ConformanceDocument))).scalar_one()
        assert document.file is not None
        assert await document.file.get_content_async() == pdf
        second = await uploaded("second.pdf", pdf + b"v2")
        document.file = second
        await session.commit()
    assert not await backend.exists_async(first.path)  # deleted after the commit
    assert second.path is not None
    assert await backend.get_bytes_async(second.path) == pdf + b"v2"
    async with sessions() as session:
        document = (await session.execute(select(ConformanceDocument))).scalar_one()
        await session.delete(document)
        await session.commit()
    assert not await backend.exists_async(second.path)
    target.record("column.direct_upload", "supported")


# ==================================================================================================
# Per-server signature checks (servers that really verify signatures)
# ==================================================================================================
def _tamper_query(url: str, param: str, value: str | None = None) -> str:
    """Replace query parameter `param` (default: change the last two characters)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    assert param in [k for k, _ in query], (param, query)

    def changed(old: str) -> str:
        if value is not None:
            return value
        return old[:-2] + ("00" if not old.endswith("00") else "11")

    tampered = [(k, changed(v) if k == param else v) for k, v in query]
    return urlunsplit(parts._replace(query=urlencode(tampered, quote_via=quote)))


@pytest.fixture
def recorder(capability_recorder: CapabilityRecorder) -> CapabilityRecorder:
    return capability_recorder


def test_seaweed_refuses_tampered_and_wrongly_signed_urls(
    seaweed_server: SeaweedServer, http: httpx.Client, recorder: CapabilityRecorder
) -> None:
    backend = s3_backend(seaweed_server, key="seaweed-signing")
    path = f"signing/{uuid.uuid4().hex}/secret.txt"
    backend.put(path, b"top secret")
    good = backend.sign(path, expires_in=300)
    assert http.get(good).content == b"top secret"

    tampered = _tamper_query(good, "X-Amz-Signature")
    assert http.get(tampered).status_code == HTTP_FORBIDDEN
    longer = _tamper_query(good, "X-Amz-Expires", "600")  # signature no longer matches
    assert http.get(longer).status_code == HTTP_FORBIDDEN
    put_url = backend.sign(f"{path}.new", method="PUT", expires_in=300)
    assert http.put(_tamper_query(put_url, "X-Amz-Signature"), content=b"x").status_code == 403
    assert not backend.exists(f"{path}.new")
    recorder.record("seaweed", "sign.tampered", "refused", "403")

    wrong = s3_backend(seaweed_server, key="seaweed-wrong", secret_access_key="not-the-secret")
    assert http.get(wrong.sign(path, expires_in=300)).status_code == HTTP_FORBIDDEN
    with pytest.raises(StoragePermissionError) as info:
        wrong.get_bytes(path)
    assert_translated(info.value, StoragePermissionError)
    assert isinstance(info.value, PermissionError)
    assert "not-the-secret" not in str(info.value)
    recorder.record("seaweed", "sign.wrong_secret", "refused", "403 (StoragePermissionError)")


def test_azurite_refuses_tampered_sas_and_needs_blob_type(
    azurite_server: AzuriteServer, http: httpx.Client, recorder: CapabilityRecorder
) -> None:
    backend = azurite_backend(azurite_server, key="azurite-signing")
    path = f"signing/{uuid.uuid4().hex}/secret.txt"
    backend.put(path, b"top secret")
    good = backend.sign(path, expires_in=300)
    assert http.get(good).content == b"top secret"
    assert http.get(_tamper_query(good, "sig")).status_code == HTTP_FORBIDDEN
    assert http.get(_tamper_query(good, "sp", "rw")).status_code == HTTP_FORBIDDEN
    unsigned = urlunsplit(urlsplit(good)._replace(query=""))
    assert http.get(unsigned).status_code in {HTTP_FORBIDDEN, 404}  # no SAS: refused
    put_url = backend.sign(f"{path}.new", method="PUT", expires_in=300)
    tampered_put = _tamper_query(put_url, "sig")
    response = http.put(tampered_put, content=b"x", headers=dict(backend.upload_headers))
    assert response.status_code == HTTP_FORBIDDEN
    recorder.record("azurite", "sign.tampered", "refused", "403")

    other_key = base64.b64encode(hashlib.sha512(b"not the account key").digest()).decode()
    wrong = ObstoreBackend(
        "azurite-wrong",
        f"az://{azurite_server.container}/",
        use_emulator=True,
        endpoint=azurite_server.blob_url,
        account_key=other_key,
    )
    assert http.get(wrong.sign(path, expires_in=300)).status_code == HTTP_FORBIDDEN
    with pytest.raises(StoragePermissionError) as info:
        wrong.get_bytes(path)
    assert_translated(info.value, StoragePermissionError)
    assert other_key not in str(info.value)
    recorder.record("azurite", "sign.wrong_secret", "refused", "403 (StoragePermissionError)")

    # A signed PUT without x-ms-blob-type is refused by Azure; upload_headers has it.
    assert http.put(put_url, content=b"no type").status_code == HTTP_BAD_REQUEST
    response = http.put(put_url, content=b"typed", headers=dict(backend.upload_headers))
    assert response.status_code == 201
    assert backend.get_bytes(f"{path}.new") == b"typed"


@pytest.mark.parametrize("server_name", ["seaweed", "azurite"])
def test_expired_signed_urls_are_refused(
    server_name: str,
    request: pytest.FixtureRequest,
    http: httpx.Client,
    recorder: CapabilityRecorder,
) -> None:
    server = request.getfixturevalue(f"{server_name}_server")
    backend = (
        s3_backend(server, key="expiry") if server_name == "seaweed" else azurite_backend(server)
    )
    path = f"expiry/{uuid.uuid4().hex}.txt"
    backend.put(path, b"short-lived")
    get_url = backend.sign(path, expires_in=1)
    put_url = backend.sign(f"{path}.put", method="PUT", expires_in=1)
    time.sleep(2.2)
    assert http.get(get_url).status_code == HTTP_FORBIDDEN
    response = http.put(put_url, content=b"late", headers=dict(backend.upload_headers))
    assert response.status_code == HTTP_FORBIDDEN
    assert not backend.exists(f"{path}.put")
    recorder.record(server_name, "sign.expired", "refused", "403 after expires_in=1 s")


def test_moto_accepts_any_signature(
    moto_server: S3Server, http: httpx.Client, recorder: CapabilityRecorder
) -> None:
    """moto does not check presigned URLs: signature tests must run on SeaweedFS."""
    backend = s3_backend(moto_server, key="moto-signing")
    path = f"signing/{uuid.uuid4().hex}.txt"
    backend.put(path, b"moto")
    tampered = _tamper_query(backend.sign(path, expires_in=60), "X-Amz-Signature")
    assert http.get(tampered).status_code == 200  # documented emulator limitation
    recorder.record("moto", "sign.tampered", "not-checked")


def test_fake_gcs_accepts_any_signature(
    fake_gcs_server: FakeGcsServer, http: httpx.Client, recorder: CapabilityRecorder
) -> None:
    """fake-gcs-server does not check signatures: GCS signing is verified offline instead."""
    backend = fake_gcs_backend(fake_gcs_server, key="gcs-signing")
    path = f"signing/{uuid.uuid4().hex}.txt"
    gcs_seed(fake_gcs_server, path, b"gcs", {})
    tampered = _tamper_query(backend.sign(path, expires_in=60), "X-Goog-Signature")
    assert http.get(tampered).content == b"gcs"  # documented emulator limitation
    recorder.record("gcs", "sign.tampered", "not-checked")


# ==================================================================================================
# Azure: every user-facing way to reach the emulator
# ==================================================================================================
@pytest.mark.parametrize("form", ["env", "emulator+endpoint", "explicit"])
def test_azure_emulator_configuration_forms(
    form: str, azurite_server: AzuriteServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """use_emulator via AZURITE_BLOB_STORAGE_URL, use_emulator + endpoint, account + key."""
    url = f"az://{azurite_server.container}/"
    if form == "env":
        monkeypatch.setenv("AZURITE_BLOB_STORAGE_URL", azurite_server.blob_url)
        backend = ObstoreBackend("azure-form", url, use_emulator=True)
        monkeypatch.delenv("AZURITE_BLOB_STORAGE_URL")
    elif form == "emulator+endpoint":
        # AZURITE_BLOB_STORAGE_URL unset: obstore alone would go to 127.0.0.1:10000.
        monkeypatch.delenv("AZURITE_BLOB_STORAGE_URL", raising=False)
        backend = ObstoreBackend(
            "azure-form", url, use_emulator=True, endpoint=azurite_server.blob_url
        )
    else:
        backend = ObstoreBackend(
            "azure-form",
            url,
            account_name=azurite_server.account_name,
            account_key=azurite_server.account_key,
            endpoint=azurite_server.endpoint,
        )
    assert "devstoreaccount1" in repr(backend)  # no panic from AzureStore's repr
    base = f"forms/{uuid.uuid4().hex}"
    for name in ("a", "b", "c"):
        backend.put(f"{base}/{name}", name.encode())
    assert backend.get_bytes(f"{base}/b") == b"b"
    assert [i.path for i in backend.list_objects(base, offset=f"{base}/a")] == [
        f"{base}/b",
        f"{base}/c",
    ]
    assert backend.supports_signing
    assert httpx.get(backend.sign(f"{base}/c"), trust_env=False).content == b"c"
    with pytest.raises(UnsupportedOperationError) as info:
        backend.get_suffix(f"{base}/a", 1)
    assert "AzureStore" in str(info.value)
    backend.delete([f"{base}/a", f"{base}/b", f"{base}/c", f"{base}/missing"])


# ==================================================================================================
# GCS: signatures verified offline; signing never reaches the network
# ==================================================================================================
def _service_account(private_key: rsa.RSAPrivateKey, **extra: Any) -> str:
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    account = {
        "type": "service_account",
        "project_id": "conformance",
        "private_key_id": uuid.uuid4().hex,
        "private_key": pem,
        "client_email": "signer@conformance.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    account.update(extra)
    return json.dumps(account)


def _goog4_string_to_sign(url: str, method: str) -> tuple[str, bytes]:
    """Rebuild the V4 string-to-sign of a signed URL; return it with the signature."""
    parts = urlsplit(url)
    params = parse_qsl(parts.query, keep_blank_values=True)
    signature = dict(params)["X-Goog-Signature"]
    canonical_query = "&".join(
        f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
        for k, v in sorted((k, v) for k, v in params if k != "X-Goog-Signature")
    )
    signed_headers = dict(params)["X-Goog-SignedHeaders"]
    assert signed_headers == "host", signed_headers
    canonical_request = "\n".join(
        [
            method,
            parts.path,
            canonical_query,
            f"host:{parts.netloc}\n",
            signed_headers,
            "UNSIGNED-PAYLOAD",
        ]
    )
    credential = dict(params)["X-Goog-Credential"]
    scope = credential.split("/", 1)[1]
    string_to_sign = "\n".join(
        [
            dict(params)["X-Goog-Algorithm"],
            dict(params)["X-Goog-Date"],
            scope,
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    return string_to_sign, bytes.fromhex(signature)


def _verifies(public_key: rsa.RSAPublicKey, url: str, method: str) -> bool:
    string_to_sign, signature = _goog4_string_to_sign(url, method)
    try:
        public_key.verify(signature, string_to_sign.encode(), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def test_gcs_signed_url_verifies_offline(recorder: CapabilityRecorder) -> None:
    """GOOG4-RSA-SHA256 URLs check out against the service account's public key.

    No server and no network: with a private key in the service account, signing is
    local computation. The default base URL (storage.googleapis.com) is used.
    """
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_key = private_key.public_key()
    backend = ObstoreBackend(
        "gcs-offline", "gs://conformance-bucket/", service_account_key=_service_account(private_key)
    )
    assert backend.supports_signing
    name = "dir/with space/ü+x=1&y.bin"
    methods: tuple[HttpMethod, ...] = ("GET", "PUT")
    for method in methods:
        url = backend.sign(name, method=method, expires_in=900)
        parts = urlsplit(url)
        assert parts.scheme == "https"
        assert parts.netloc == "storage.googleapis.com"
        assert unquote(parts.path) == f"/conformance-bucket/{name}"
        query = dict(parse_qsl(parts.query))
        assert query["X-Goog-Algorithm"] == "GOOG4-RSA-SHA256"
        assert query["X-Goog-Expires"] == "900"
        assert query["X-Goog-Credential"].startswith("signer@conformance.iam.gserviceaccount.com/")
        assert _verifies(public_key, url, method), method
        # Tampering with the lifetime, or using the URL for another method, breaks it.
        assert not _verifies(public_key, _tamper_query(url, "X-Goog-Expires", "604800"), method)
        assert not _verifies(public_key, url, "PUT" if method == "GET" else "GET")
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    assert not _verifies(other_key, backend.sign(name), "GET")

    backend.sign(name, expires_in=timedelta(days=7))
    with pytest.raises(InvalidExpiryError) as info:
        backend.sign(name, expires_in=timedelta(days=7, seconds=1))
    assert_translated(info.value, InvalidExpiryError)
    recorder.record("gcs", "sign.offline_verified", "supported", "RSA public-key check")
    recorder.record("gcs", "sign.expiry_limit", "supported", "7 days")


async def test_signing_never_reaches_the_network() -> None:
    """Stores whose signing would need the network say so instead of trying.

    A GCS service account with `disable_oauth` has no private key (obstore would call
    the IAM signBlob API on the internet); an S3 store with `skip_signature` would fetch
    credentials from the instance metadata endpoint; an Azure store authenticated by a
    SAS token cannot make new SAS tokens (obstore fails with a generic error).
    """
    gcs = ObstoreBackend(
        "gcs-no-oauth",
        "gs://bucket/",
        service_account_key=json.dumps(
            {
                "gcs_base_url": "http://127.0.0.1:9",
                "disable_oauth": True,
                "client_email": "",
                "private_key": "",
                "private_key_id": "",
            }
        ),
    )
    s3 = ObstoreBackend("s3-anon", "s3://bucket/", skip_signature=True, region="us-east-1")
    azure = ObstoreBackend(
        "azure-sas", "az://container/", account_name="account", sas_key="sv=2023-11-03&sig=x"
    )
    for backend in (gcs, s3, azure):
        assert backend.supports_signing is False  # checked first: sign must not be reached
        started = time.monotonic()
        with pytest.raises(UnsupportedOperationError):
            backend.sign("a.txt")
        with pytest.raises(UnsupportedOperationError):
            await backend.sign_async(["a.txt"], method="PUT")
        storages.register_backend(backend)
        upload = FileObject(filename="x.bin", backend=backend.key)
        with pytest.raises(UnsupportedOperationError):
            upload.sign_upload()
        assert time.monotonic() - started < 1  # no retries against a remote service
    assert "disable_oauth" in str(_sign_error(gcs))
    assert "SAS token" in str(_sign_error(azure))


def _sign_error(backend: ObstoreBackend) -> UnsupportedOperationError:
    with pytest.raises(UnsupportedOperationError) as info:
        backend.sign("a.txt")
    return info.value
