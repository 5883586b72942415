"""Uploads from web requests: `FileObject.from_upload` and `file_from_stream` in real apps.

The apps of `web_apps.py` (Litestar, Starlette, FastAPI) run under Litestar's and
Starlette's own test clients with a local-files backend and SQLite (aiosqlite,
`AsyncSession`): what a client sends is what is stored, the column's `UploadPolicy`
refuses bad uploads with 413/415 and leaves nothing behind. The last test runs a real
uvicorn server in a subprocess, streams 256 MiB to it and reads the server's peak RSS.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient as LitestarTestClient
from sqlalchemy import create_engine, func, select
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from sqlalchemy_obstore import FileObject, ObstoreBackend, storages
from sqlalchemy_obstore.tickets import UploadTickets
from sqlalchemy_obstore.uploads import error_status, file_from_stream, file_from_upload
from tests.integration import web_apps
from tests.integration.uvicorn_probe import MAX_GROWTH, pattern_chunks, peak_rss, uvicorn_server
from tests.integration.web_apps import BACKEND, SCAN_LIMIT, SECRET, Document, Scan, Store

with warnings.catch_warnings():
    # Starlette 1.x prefers the `httpx2` package for its test client; httpx still works.
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient as StarletteTestClient

PDF = b"%PDF-1.7\n" + bytes(range(256)) * 16
HTML = b"<!DOCTYPE html><html><script>alert(1)</script></html>"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "store"
    directory.mkdir()
    storages.register_backend(ObstoreBackend(BACKEND, directory))
    return directory


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "app.sqlite"


@contextmanager
def app_client(framework: str, db_path: Path) -> Iterator[Any]:
    """A test client of one framework's app (the app's own event loop runs inside)."""
    # NullPool: the app's event loop ends with the client; no connection may outlive it.
    engine = create_async_engine(f"sqlite+aiosqlite:///{db_path}", poolclass=NullPool)
    store = Store(engine, UploadTickets(SECRET))
    if framework == "litestar":
        with LitestarTestClient(web_apps.litestar_app(store)) as test_client:
            yield test_client
    else:
        factory = web_apps.starlette_app if framework == "starlette" else web_apps.fastapi_app
        with StarletteTestClient(factory(store)) as test_client:
            yield test_client


@pytest.fixture(params=["litestar", "starlette", "fastapi"])
def client(request: pytest.FixtureRequest, store_dir: Path, db_path: Path) -> Iterator[Any]:
    with app_client(request.param, db_path) as test_client:
        yield test_client


def stored_objects(prefix: str | None = None) -> list[str]:
    return [info.path for info in storages.get_backend(BACKEND).list_objects(prefix)]


def row_count(db_path: Path, model: type[Any]) -> int:
    engine = create_engine(f"sqlite:///{db_path}")
    try:
        with engine.connect() as connection:
            return int(connection.scalar(select(func.count()).select_from(model)) or 0)
    finally:
        engine.dispose()


def stored_file(response: httpx.Response) -> FileObject:
    return FileObject.from_dict(response.json()["file"])


# -- multipart forms ------------------------------------------------------------------------------
def test_multipart_upload_streams_into_storage_and_the_row(client: Any, db_path: Path) -> None:
    data = os.urandom(6 * 1024 * 1024 + 123)  # more than one part: a multipart upload
    response = client.post(
        "/documents", files={"file": ("big.bin", io.BytesIO(data), "application/octet-stream")}
    )
    assert response.status_code == 201, response.text
    file = stored_file(response)
    assert file.path is not None
    assert file.path.startswith("docs/")
    assert file.filename == "big.bin"
    assert file.size == len(data)
    assert file.checksum == "sha256:" + hashlib.sha256(data).hexdigest()
    assert file.get_content() == data
    assert row_count(db_path, Document) == 1


def test_client_filename_is_display_data_only(client: Any) -> None:
    response = client.post(
        "/documents", files={"file": ("..\\..\\secret\\notes.txt", b"hello", "text/plain")}
    )
    assert response.status_code == 201, response.text
    file = stored_file(response)
    assert file.filename == "notes.txt"
    assert file.path is not None
    assert ".." not in file.path
    assert file.path.endswith("/notes.txt")
    assert file.content_type == "text/plain"
    assert file.get_content() == b"hello"


def test_content_type_comes_from_the_upload(client: Any) -> None:
    response = client.post(
        "/documents", files={"file": ("data", b'{"a": 1}', "application/vnd.api+json")}
    )
    assert response.status_code == 201, response.text
    assert stored_file(response).content_type == "application/vnd.api+json"


def test_column_policy_accepts_a_valid_upload(client: Any, db_path: Path) -> None:
    response = client.post("/scans", files={"file": ("scan.pdf", PDF, "application/pdf")})
    assert response.status_code == 201, response.text
    file = stored_file(response)
    assert file.content_type == "application/pdf"
    assert file.get_content() == PDF
    assert row_count(db_path, Scan) == 1


def test_column_policy_refuses_too_large_with_413(client: Any, db_path: Path) -> None:
    big = PDF + bytes(SCAN_LIMIT)
    response = client.post("/scans", files={"file": ("scan.pdf", big, "application/pdf")})
    assert response.status_code == 413
    assert response.json() == {"error": "FileTooLargeError"}
    assert stored_objects() == []
    assert row_count(db_path, Scan) == 0


def test_column_policy_refuses_wrong_type_with_415(client: Any, db_path: Path) -> None:
    # The client claims a PDF; the bytes are HTML: the sniffed type decides.
    response = client.post("/scans", files={"file": ("scan.pdf", HTML, "application/pdf")})
    assert response.status_code == 415
    assert response.json() == {"error": "InvalidContentTypeError"}
    assert stored_objects() == []
    assert row_count(db_path, Scan) == 0


def test_litestar_default_body_limit_answers_413(store_dir: Path, db_path: Path) -> None:
    """Litestar refuses bodies over 10 MB unless the route raises request_max_body_size."""
    data = bytes(11 * 1000 * 1000)
    files = {"file": ("big.bin", data, "application/octet-stream")}
    with app_client("litestar", db_path) as client:
        assert client.post("/default-limit/documents", files=files).status_code == 413
        assert stored_objects() == []
        assert client.post("/documents", files=files).status_code == 201  # limit lifted


# -- raw bodies -----------------------------------------------------------------------------------
def _chunks(data: bytes, size: int = 65536) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_raw_body_streams_into_storage(client: Any, db_path: Path) -> None:
    data = os.urandom(7 * 1024 * 1024)
    response = client.put(
        "/raw/documents/report.bin",
        content=_chunks(data),
        headers={"content-type": "application/octet-stream", "content-length": str(len(data))},
    )
    assert response.status_code == 201, response.text
    file = stored_file(response)
    assert file.filename == "report.bin"
    assert file.size == len(data)
    assert file.get_content() == data
    assert row_count(db_path, Document) == 1


def test_raw_body_refused_by_the_column_policy(client: Any, db_path: Path) -> None:
    too_big = PDF + bytes(2 * SCAN_LIMIT)
    response = client.put(
        "/raw/scans/scan.pdf", content=_chunks(too_big), headers={"content-type": "application/pdf"}
    )
    assert response.status_code == 413
    response = client.put(
        "/raw/scans/scan.pdf", content=HTML, headers={"content-type": "application/pdf"}
    )
    assert response.status_code == 415
    assert stored_objects() == []
    assert row_count(db_path, Scan) == 0


# -- the helpers alone ----------------------------------------------------------------------------
class _LitestarLikeUpload:
    """The shape of Litestar's UploadFile: part headers as sent, no size."""

    def __init__(self, data: bytes, headers: dict[str, str]) -> None:
        self.file = io.BytesIO(data)
        self.filename = "photo.jpeg"
        self.content_type = "text/plain"  # what Litestar fills in without a header
        self.headers = headers


def test_part_without_content_type_is_guessed_from_the_name() -> None:
    file = file_from_upload(_LitestarLikeUpload(b"\xff\xd8\xff\xe0", {}))
    assert file.content_type == "image/jpeg"
    assert file.size == 4
    declared = file_from_upload(_LitestarLikeUpload(b"x", {"Content-Type": "image/png"}))
    assert declared.content_type == "image/png"


async def test_failed_save_rewinds_the_spooled_file(store_dir: Path) -> None:
    from sqlalchemy_obstore.validation import UploadPolicy

    upload = _LitestarLikeUpload(b"x" * 100, {})
    file = file_from_upload(upload, backend=BACKEND)
    with pytest.raises(Exception, match="too large"):
        await file.save_async(policy=UploadPolicy(max_size=10))
    assert upload.file.tell() == 0  # rewound: the same upload can be saved again
    await file.save_async()
    assert await file.get_content_async() == b"x" * 100


def _framework_upload(framework: str, data: bytes) -> Any:
    """A real UploadFile of each framework, spooled to disk past 1 MiB as they do."""
    if framework == "litestar":
        from litestar.datastructures import UploadFile

        return UploadFile(
            content_type="application/octet-stream",
            filename="dir/x.bin",
            file_data=data,
            headers={"Content-Type": "application/octet-stream"},
        )
    from starlette.datastructures import Headers
    from starlette.datastructures import UploadFile as StarletteUpload

    spooled = tempfile.SpooledTemporaryFile(max_size=1024 * 1024)  # noqa: SIM115
    spooled.write(data)
    spooled.seek(0)
    headers = Headers({"content-type": "application/octet-stream"})
    return StarletteUpload(spooled, size=len(data), filename="dir/x.bin", headers=headers)


@pytest.mark.parametrize("framework", ["litestar", "starlette"])
def test_sync_session_streams_a_framework_upload(
    framework: str, store_dir: Path, sqlite_engine: Any
) -> None:
    from sqlalchemy.orm import Session

    data = os.urandom(6 * 1024 * 1024 + 1)
    upload = _framework_upload(framework, data)
    assert upload.file._rolled  # on disk, as after a real request
    web_apps.Base.metadata.create_all(sqlite_engine)
    with Session(sqlite_engine) as session:
        session.add(Document(name="x", file=FileObject.from_upload(upload)))
        session.commit()
    with Session(sqlite_engine) as session:
        stored = session.scalars(select(Document)).one().file
        assert stored.filename == "x.bin"
        assert stored.size == len(data)
        assert stored.get_content() == data
    upload.file.close()


async def test_closed_upload_gives_a_clear_error(store_dir: Path) -> None:
    from sqlalchemy_obstore import NoContentError

    upload = _LitestarLikeUpload(b"data", {})
    file = file_from_upload(upload, backend=BACKEND)
    upload.file.close()  # the request ended before the file was saved
    with pytest.raises(NoContentError, match="inside the request handler"):
        await file.save_async()
    with pytest.raises(NoContentError, match="inside the request handler"):
        file_from_upload(upload, backend=BACKEND).save()
    assert stored_objects() == []


def test_file_from_stream_refuses_non_streams() -> None:
    from sqlalchemy_obstore import InvalidFileObjectError

    with pytest.raises(InvalidFileObjectError, match=r"request\.stream\(\)"):
        file_from_stream(b"bytes", filename="a.txt")  # type: ignore[arg-type]
    with pytest.raises(InvalidFileObjectError, match=r"binary \.file"):
        file_from_upload(object())


def test_error_status_maps_refusals() -> None:
    from sqlalchemy_obstore import (
        ExpiredUploadTicketError,
        FileTooSmallError,
        InvalidContentTypeError,
        ReplayedUploadTicketError,
    )

    assert error_status(InvalidContentTypeError("no")) == 415
    assert error_status(FileTooSmallError(minimum=2, size=1)) == 422
    assert error_status(ExpiredUploadTicketError("late")) == 410
    assert error_status(ReplayedUploadTicketError("again")) == 409
    assert error_status(ValueError()) is None


# -- a real server, a large upload, bounded memory ------------------------------------------------
UPLOAD_SIZE = 256 * 1024 * 1024
assert MAX_GROWTH < UPLOAD_SIZE // 2


@pytest.fixture(params=["litestar", "starlette"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, int, Path]]:
    """uvicorn serving one app on 127.0.0.1; yields (base URL, pid, store directory)."""
    store = tmp_path / "store"
    store.mkdir()
    env = {
        "W2_STORE_DIR": str(store),
        "W2_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'server.sqlite'}",
    }
    factory = f"tests.integration.web_apps:uvicorn_{request.param}"
    with uvicorn_server(factory, env, tmp_path / "uvicorn.log") as (base, pid):
        yield base, pid, store


def _multipart(total: int, digest: Any, boundary: str) -> Iterator[bytes]:
    yield (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="huge.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    yield from pattern_chunks(total, digest)
    yield f"\r\n--{boundary}--\r\n".encode()


def _stored_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


@pytest.mark.slow
@pytest.mark.parametrize("body", ["multipart", "raw"])
def test_large_upload_through_uvicorn_keeps_memory_bounded(
    server: tuple[str, int, Path], body: str
) -> None:
    base, pid, store = server
    with httpx.Client(base_url=base, timeout=300, trust_env=False) as http:
        # Warm up: imports, the first connection, the tables, obstore's runtime.
        warm = http.post("/documents", files={"file": ("warm.txt", b"warm up", "text/plain")})
        assert warm.status_code == 201, warm.text
        warm = http.put("/raw/documents/warm.txt", content=b"warm up")
        assert warm.status_code == 201, warm.text
        before = peak_rss(pid)
        digest = hashlib.sha256()
        if body == "multipart":
            boundary = uuid.uuid4().hex
            response = http.post(
                "/documents",
                content=_multipart(UPLOAD_SIZE, digest, boundary),
                headers={"content-type": f"multipart/form-data; boundary={boundary}"},
            )
        else:
            response = http.put(
                "/raw/documents/huge.bin",
                content=pattern_chunks(UPLOAD_SIZE, digest),
                headers={"content-type": "application/octet-stream"},
            )
        after = peak_rss(pid)
    assert response.status_code == 201, response.text
    file = response.json()["file"]
    assert file["size"] == UPLOAD_SIZE
    assert file["checksum"] == "sha256:" + digest.hexdigest()
    assert _stored_sha256(store / file["path"]) == digest.hexdigest()
    growth = after - before
    print(f"{body}: peak RSS {before / 2**20:.1f} -> {after / 2**20:.1f} MiB")
    assert growth < MAX_GROWTH, (
        f"peak RSS grew by {growth / 2**20:.1f} MiB for a 256 MiB upload "
        f"(bound {MAX_GROWTH / 2**20:.0f} MiB)"
    )
