"""Direct-to-storage uploads against real servers and real databases.

The client's side is real: it PUTs the bytes with httpx to the signed URL of the grant
(sending the grant's headers) — on moto, on SeaweedFS (which checks SigV4 signatures)
and on Azurite (which checks SAS signatures and needs `x-ms-blob-type`). The server's
side runs in Litestar's and Starlette's test clients (`web_apps.py`), and the SQL replay
guard runs on SQLite and PostgreSQL with sync and async engines.
"""

from __future__ import annotations

import asyncio
import uuid
import warnings
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient as LitestarTestClient
from sqlalchemy import create_engine, select
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from sqlalchemy_obstore import (
    FileObject,
    FileTooLargeError,
    InvalidContentTypeError,
    ObjectNotFoundError,
    ObstoreBackend,
    ReplayedUploadTicketError,
    storages,
)
from sqlalchemy_obstore.tickets import SqlReplayGuard, UploadGrant, UploadTickets
from tests.integration import web_apps
from tests.integration.backends import azurite_backend, s3_backend
from tests.integration.web_apps import BACKEND, SCAN_LIMIT, SECRET, Base, Scan, Store
from tests.servers import S3Server

with warnings.catch_warnings():
    # Starlette 1.x prefers the `httpx2` package for its test client; httpx still works.
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient as StarletteTestClient

PDF = b"%PDF-1.7\n" + bytes(range(256)) * 64
HTML = b"<!DOCTYPE html><html><body>not a pdf</body></html>"


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    # trust_env=False: never route 127.0.0.1 through a proxy from the environment.
    with httpx.Client(timeout=30, trust_env=False) as client:
        yield client


def client_upload(http: httpx.Client, grant: UploadGrant | dict[str, Any], data: bytes) -> None:
    """The browser's part: PUT the bytes to the signed URL with the grant's headers, or
    POST them with the grant's form fields (S3)."""
    info = grant.as_dict() if isinstance(grant, UploadGrant) else grant
    if info["method"] == "POST":
        files = {"file": (info["filename"], data)}
        response = http.post(info["url"], data=info["fields"], files=files)
    else:
        response = http.request(info["method"], info["url"], content=data, headers=info["headers"])
    assert response.status_code in (200, 201, 204), response.text


@pytest.fixture(params=["moto", "seaweed", "azurite"])
def remote(request: pytest.FixtureRequest) -> ObstoreBackend:
    """The uploads backend on each real server, under a prefix private to the test."""
    prefix = f"tickets-{uuid.uuid4().hex[:10]}"
    if request.param == "azurite":
        server: Any = request.getfixturevalue("azurite_server")
        backend = azurite_backend(server, key=BACKEND, prefix=prefix)
    else:
        server = request.getfixturevalue(f"{request.param}_server")
        backend = s3_backend(server, key=BACKEND, prefix=prefix)
    storages.register_backend(backend)
    return backend


# -- the flow on each server ----------------------------------------------------------------------
async def test_direct_upload_then_commit_the_row(
    remote: ObstoreBackend, http: httpx.Client, sqlite_async_engine: AsyncEngine
) -> None:
    tickets = UploadTickets(SECRET)
    grant = await tickets.issue_async(Scan.file, "contract.pdf")
    assert grant.path.startswith(f"{remote.prefix}/scans/")
    # the disposition the store must keep and serve: a signed form field on S3 (POST),
    # a header of the PUT elsewhere (with the store's own headers)
    expected = "attachment; filename=\"contract.pdf\"; filename*=UTF-8''contract.pdf"
    if remote.kind == "s3":
        assert (grant.method, dict(grant.headers)) == ("POST", {})
        assert grant.fields["Content-Disposition"] == expected
        assert grant.fields["Content-Type"] == "application/pdf"
    else:
        assert grant.method == "PUT"
        disposition = "x-ms-blob-content-disposition"
        assert dict(grant.headers) == {**remote.upload_headers, disposition: expected}
    client_upload(http, grant, PDF)
    assert remote.exists(grant.upload_path)

    file = await tickets.redeem_async(grant.ticket)
    assert file.size == len(PDF)
    assert file.content_type == "application/pdf"
    assert file.etag
    assert file.last_modified is not None
    async with sqlite_async_engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    async with AsyncSession(sqlite_async_engine, expire_on_commit=False) as session:
        session.add(Scan(name=file.filename, file=file))
        await session.commit()
    async with AsyncSession(sqlite_async_engine) as session:
        row = (await session.scalars(select(Scan))).one()
        assert row.file.path == grant.path
        assert row.file.size == len(PDF)
        assert await row.file.get_content_async() == PDF
    with pytest.raises(ReplayedUploadTicketError):
        await tickets.redeem_async(grant.ticket)
    assert not await remote.exists_async(grant.upload_path)


def test_refused_uploads_are_deleted_on_the_server(
    remote: ObstoreBackend, http: httpx.Client
) -> None:
    # A presigned PUT lets anything through (the POST policy of S3 would refuse the
    # large body itself, see test_direct_s3_uploads.py): redeem checks and deletes.
    tickets = UploadTickets(SECRET, s3_method="put")
    too_big = tickets.issue(Scan.file, "big.pdf")
    client_upload(http, too_big, PDF + bytes(SCAN_LIMIT))
    with pytest.raises(FileTooLargeError):
        tickets.redeem(too_big.ticket)
    assert not remote.exists(too_big.path)
    assert not remote.exists(too_big.upload_path)

    wrong = tickets.issue(Scan.file, "fake.pdf")
    client_upload(http, wrong, HTML)
    with pytest.raises(InvalidContentTypeError):
        tickets.redeem(wrong.ticket)
    assert not remote.exists(wrong.path)

    never = tickets.issue(Scan.file, "later.pdf")
    with pytest.raises(ObjectNotFoundError):
        tickets.redeem(never.ticket)
    client_upload(http, never, PDF)  # the URL is still good: upload, then redeem again
    assert tickets.redeem(never.ticket).size == len(PDF)


def test_an_upload_the_store_would_display_inline_is_refused(
    remote: ObstoreBackend, http: httpx.Client
) -> None:
    """The client chose its PUT's attributes: redeem refuses what the store would render."""
    tickets = UploadTickets(SECRET, s3_method="put")
    page = b"<x>not xsl</x><script>alert(document.domain)</script>"
    sneaky = tickets.issue(BACKEND, "style.xsl")
    headers = {**remote.upload_headers, "Content-Type": "text/html"}  # no disposition sent
    assert http.put(sneaky.url, content=page, headers=headers).status_code in (200, 201)
    with pytest.raises(InvalidContentTypeError, match="display it in the browser"):
        tickets.redeem(sneaky.ticket)
    assert not remote.exists(sneaky.path)
    assert not remote.exists(sneaky.upload_path)

    # Sending the grant's headers, the same bytes are kept, and the store serves them as
    # an attachment through its signed URLs.
    honest = tickets.issue(BACKEND, "style.xsl")
    headers = {**honest.headers, "Content-Type": "text/html"}
    assert http.put(honest.url, content=page, headers=headers).status_code in (200, 201)
    file = tickets.redeem(honest.ticket)
    served = http.get(file.sign(expires_in=60))
    assert served.status_code == 200
    assert served.headers["content-disposition"].startswith("attachment;")

    # A passive type needs no disposition.
    photo = tickets.issue(BACKEND, "photo.png")
    headers = {**remote.upload_headers, "Content-Type": "image/png"}
    png = b"\x89PNG\r\n\x1a\n" + bytes(64)
    assert http.put(photo.url, content=png, headers=headers).status_code in (200, 201)
    assert tickets.redeem(photo.ticket).size == len(png)


# -- the same flow through web apps ---------------------------------------------------------------
@pytest.fixture
def moto_backend(moto_server: S3Server) -> ObstoreBackend:
    backend = s3_backend(moto_server, key=BACKEND, prefix=f"web-{uuid.uuid4().hex[:10]}")
    storages.register_backend(backend)
    return backend


@pytest.fixture(params=["litestar", "starlette"])
def app_client(
    request: pytest.FixtureRequest, moto_backend: ObstoreBackend, tmp_path: Path
) -> Iterator[Any]:
    engine = create_async_engine(
        f"sqlite+aiosqlite:///{tmp_path / 'app.sqlite'}", poolclass=NullPool
    )
    store = Store(engine, UploadTickets(SECRET))
    if request.param == "litestar":
        with LitestarTestClient(web_apps.litestar_app(store)) as client:
            yield client
    else:
        with StarletteTestClient(web_apps.starlette_app(store)) as client:
            yield client


def test_endpoints_issue_and_complete(
    app_client: Any, moto_backend: ObstoreBackend, http: httpx.Client
) -> None:
    issued = app_client.post("/tickets/scans", json={"filename": "contract.pdf"})
    assert issued.status_code == 201, issued.text
    grant = issued.json()
    assert grant["method"] == "POST"  # S3: a form whose policy the store enforces
    assert grant["max_size"] == SCAN_LIMIT
    assert grant["content_types"] == ["application/pdf"]
    client_upload(http, grant, PDF)

    done = app_client.post("/tickets/scans/complete", json={"ticket": grant["ticket"]})
    assert done.status_code == 201, done.text
    file = FileObject.from_dict(done.json()["file"])
    assert file.path == grant["path"]
    assert file.get_content() == PDF

    again = app_client.post("/tickets/scans/complete", json={"ticket": grant["ticket"]})
    assert again.status_code == 409
    assert again.json() == {"error": "ReplayedUploadTicketError"}


def test_endpoints_refuse_bad_tickets_and_bad_uploads(
    app_client: Any, moto_backend: ObstoreBackend, http: httpx.Client
) -> None:
    grant = app_client.post("/tickets/scans", json={"filename": "a.pdf"}).json()
    payload, signature = grant["ticket"].split(".")
    forged = payload[:-3] + ("AAA" if payload[-3:] != "AAA" else "BBB") + "." + signature
    response = app_client.post("/tickets/scans/complete", json={"ticket": forged})
    assert response.status_code == 400
    assert response.json() == {"error": "InvalidUploadTicketError"}

    other = UploadTickets("a-completely-different-secret-0123456789")
    foreign = other.issue(Scan.file, "a.pdf")
    response = app_client.post("/tickets/scans/complete", json={"ticket": foreign.ticket})
    assert response.status_code == 400

    response = app_client.post("/tickets/scans/complete", json={"ticket": grant["ticket"]})
    assert response.status_code == 404  # not uploaded yet; the ticket stays usable

    client_upload(http, grant, HTML)
    response = app_client.post("/tickets/scans/complete", json={"ticket": grant["ticket"]})
    assert response.status_code == 415
    assert not moto_backend.exists(grant["path"])

    big = app_client.post("/tickets/scans", json={"filename": "big.pdf"}).json()
    client_upload(http, big, PDF + bytes(SCAN_LIMIT))
    response = app_client.post("/tickets/scans/complete", json={"ticket": big["ticket"]})
    assert response.status_code == 413
    assert not moto_backend.exists(big["path"])


# -- local files: the same flow through the app's own signed-URL route ---------------------------
@pytest.fixture(params=["litestar", "starlette"])
def local_app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Any, Path]]:
    """An app on a local-files backend, signing and serving PUT URLs itself."""
    store_dir = tmp_path / "store"
    storages.register_backend(ObstoreBackend(BACKEND, store_dir))
    engine = create_async_engine(
        f"sqlite+aiosqlite:///{tmp_path / 'app.sqlite'}", poolclass=NullPool
    )
    store = Store(engine, UploadTickets(SECRET))
    signing = "signed-url-secret-for-local-files-0123456789"
    if request.param == "litestar":
        app: Any = web_apps.litestar_app(store, signing_secret=signing)
        with LitestarTestClient(app) as client:
            yield client, store_dir
    else:
        with StarletteTestClient(web_apps.starlette_app(store, signing_secret=signing)) as client:
            yield client, store_dir


def test_direct_upload_to_local_files_through_the_signed_route(
    local_app: tuple[Any, Path],
) -> None:
    client, store_dir = local_app
    grant = client.post("/tickets/scans", json={"filename": "contract.pdf"}).json()
    assert grant["url"].startswith("/_storage/uploads/_incoming/")
    # bytes past the ticket's limit are refused by the route itself, nothing kept
    too_big = client.put(grant["url"], content=PDF + bytes(SCAN_LIMIT), headers=grant["headers"])
    assert too_big.status_code == 413
    assert not (store_dir / grant["upload_path"]).exists()
    put = client.put(grant["url"], content=PDF, headers=grant["headers"])
    assert put.status_code in (200, 201), put.text
    # a tampered URL is refused by the route
    url = grant["url"]
    assert "&signature=" in url
    forged = client.put(url[:-2] + ("xx" if not url.endswith("xx") else "yy"), content=HTML)
    assert forged.status_code == 403

    done = client.post("/tickets/scans/complete", json={"ticket": grant["ticket"]})
    assert done.status_code == 201, done.text
    file = done.json()["file"]
    assert file["path"] == grant["path"]
    assert (store_dir / grant["path"]).read_bytes() == PDF
    assert not (store_dir / grant["upload_path"]).exists()
    again = client.post("/tickets/scans/complete", json={"ticket": grant["ticket"]})
    assert again.status_code == 409
    # and its URL accepts no further upload
    late = client.put(grant["url"], content=HTML, headers=grant["headers"])
    assert late.status_code == 409
    assert not (store_dir / grant["upload_path"]).exists()

    wrong = client.post("/tickets/scans", json={"filename": "fake.pdf"}).json()
    assert client.put(wrong["url"], content=HTML).status_code in (200, 201)
    refused = client.post("/tickets/scans/complete", json={"ticket": wrong["ticket"]})
    assert refused.status_code == 415
    assert not (store_dir / wrong["path"]).exists()
    assert not (store_dir / wrong["upload_path"]).exists()


# -- the SQL replay guard on real databases -------------------------------------------------------
def _deadline() -> datetime:
    return datetime.now(timezone.utc) + timedelta(minutes=10)


@pytest.fixture(params=["sqlite", "postgresql"])
def sync_engine(request: pytest.FixtureRequest) -> Engine:
    name = "pg_engine" if request.param == "postgresql" else "sqlite_engine"
    engine: Engine = request.getfixturevalue(name)
    return engine


@pytest.fixture(params=["sqlite", "postgresql"])
def async_engine(request: pytest.FixtureRequest) -> AsyncEngine:
    name = "pg_async_engine" if request.param == "postgresql" else "sqlite_async_engine"
    engine: AsyncEngine = request.getfixturevalue(name)
    return engine


def test_sql_guard_is_shared_by_app_instances(sync_engine: Engine) -> None:
    storages.register_backend(ObstoreBackend(BACKEND, "memory://", url_signer=_Signer()))
    table = f"tickets_{uuid.uuid4().hex[:8]}"
    # two application instances, each with its own guard object on the same table
    first = UploadTickets(SECRET, replay_guard=SqlReplayGuard(sync_engine, table_name=table))
    second = UploadTickets(SECRET, replay_guard=SqlReplayGuard(sync_engine, table_name=table))
    grant = first.issue(BACKEND, "a.txt")
    storages.get_backend(BACKEND).put(grant.upload_path, b"data")
    assert second.redeem(grant.ticket).size == 4
    with pytest.raises(ReplayedUploadTicketError):
        first.redeem(grant.ticket)
    with pytest.raises(ReplayedUploadTicketError):
        second.redeem(grant.ticket)


async def test_sql_guard_concurrent_claims_one_winner(async_engine: AsyncEngine) -> None:
    table = f"tickets_{uuid.uuid4().hex[:8]}"
    guards = [SqlReplayGuard(async_engine, table_name=table) for _ in range(2)]
    await guards[0].create_table_async()
    deadline = _deadline()
    results = await asyncio.gather(
        *(guards[i % 2].claim_async("the-ticket", deadline) for i in range(10))
    )
    assert sorted(results) == [False] * 9 + [True]
    await guards[1].release_async("the-ticket")
    assert await guards[0].claim_async("the-ticket", deadline)


async def test_sql_guard_through_redeem_async(async_engine: AsyncEngine) -> None:
    storages.register_backend(ObstoreBackend(BACKEND, "memory://", url_signer=_Signer()))
    guard = SqlReplayGuard(async_engine, table_name=f"tickets_{uuid.uuid4().hex[:8]}")
    tickets = UploadTickets(SECRET, replay_guard=guard)
    grant = await tickets.issue_async(BACKEND, "a.txt")
    with pytest.raises(ObjectNotFoundError):
        await tickets.redeem_async(grant.ticket)
    await storages.get_backend(BACKEND).put_async(grant.upload_path, b"data")
    results = await asyncio.gather(
        *(tickets.redeem_async(grant.ticket) for _ in range(5)), return_exceptions=True
    )
    assert sum(isinstance(r, FileObject) for r in results) == 1
    assert sum(isinstance(r, ReplayedUploadTicketError) for r in results) == 4


def test_sql_guard_table_creation_races(sync_engine: Engine) -> None:
    table = f"tickets_{uuid.uuid4().hex[:8]}"
    one = SqlReplayGuard(sync_engine, table_name=table)
    two = SqlReplayGuard(sync_engine, table_name=table)
    one.create_table()
    two.create_table()  # exists already: no error
    assert two.claim("t", _deadline())
    assert not one.claim("t", _deadline())


class _Signer:
    """Signs for the memory backend in these guard tests (the URL itself is not used)."""

    def sign_url(self, backend: str, path: str, *, method: str, expires_in: timedelta) -> str:
        return f"http://127.0.0.1/{backend}/{path}?method={method}"


def test_sql_guard_creates_its_table_only_when_used(pg_engine: Engine) -> None:
    # A guard only creates its table when first used.
    guard = SqlReplayGuard(pg_engine, table_name=f"tickets_{uuid.uuid4().hex[:8]}")
    engine = create_engine(pg_engine.url)
    try:
        with engine.connect() as connection:
            assert not connection.dialect.has_table(connection, guard.table.name)
    finally:
        engine.dispose()
