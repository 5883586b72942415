"""An application's own test client, with the pytest plugin's fixtures.

The apps in `document_app.py` register a real backend (local files, prefix `docs`, a
1 KiB text-only policy) when they start, as the docs teach: the Litestar plugin and a
FastAPI lifespan. `obstore_registry` replaces it with a memory stand-in that keeps its
settings, so these tests store nothing on disk, see the app's bytes in
`obstore_memory_backend`, and still get the app's prefix, policy and signed URLs.
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import MetaData, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from sqlalchemy_obstore import BackendRegistry, ObstoreBackend
from sqlalchemy_obstore.testing import FaultInjectingBackend

from .document_app import Base, Document, create_fastapi_app, create_litestar_app

with warnings.catch_warnings():
    # Starlette 1.x prefers the `httpx2` package for its test client; httpx still works.
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient as FastAPITestClient

pytestmark = pytest.mark.obstore_backends("uploads")

AppFactory = Callable[[async_sessionmaker[AsyncSession], Path], Any]


@pytest.fixture
def obstore_metadata() -> MetaData:
    return Base.metadata


@pytest.fixture
def storage_dir(tmp_path: Path) -> Iterator[Path]:
    """Where the production backend would write; it must stay empty."""
    directory = tmp_path / "production-storage"
    yield directory
    assert not directory.exists() or not any(directory.rglob("*")), "a test reached real storage"


@pytest.fixture
def sessions(obstore_async_engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(obstore_async_engine, expire_on_commit=False)


@pytest.fixture
async def client(
    obstore_registry: BackendRegistry,
    sessions: async_sessionmaker[AsyncSession],
    storage_dir: Path,
) -> AsyncIterator[AsyncTestClient[Any]]:
    app = create_litestar_app(sessions, storage_dir)
    async with AsyncTestClient(app, base_url="http://testserver.local") as client:
        yield client


def upload_form(text: bytes, filename: str = "notes.txt", title: str = "Notes") -> dict[str, Any]:
    return {
        "data": {"title": title},
        "files": {"file": (filename, text, "text/plain")},
    }


# -- Litestar: the ObstorePlugin registers the backend ---------------------------------------------
async def test_litestar_upload_lands_in_the_memory_backend(
    client: AsyncTestClient[Any],
    obstore_registry: BackendRegistry,
    obstore_memory_backend: ObstoreBackend,
    storage_dir: Path,
) -> None:
    response = await client.post("/documents", **upload_form(b"hello"))
    assert response.status_code == 201, response.text
    body = response.json()
    path = body["file"]["path"]
    assert path.startswith("docs/")  # the production backend's prefix
    assert obstore_memory_backend.get_bytes(path) == b"hello"

    displaced = obstore_registry.displaced["uploads"]  # what the app registered
    assert isinstance(displaced, ObstoreBackend)
    assert (displaced.kind, displaced.prefix) == ("local", "docs")

    again = await client.get(f"/documents/{body['id']}")
    assert again.json()["file"]["path"] == path


async def test_litestar_signed_url_downloads_the_bytes(client: AsyncTestClient[Any]) -> None:
    created = (await client.post("/documents", **upload_form(b"signed bytes"))).json()
    url = created["file"]["url"]
    assert url.startswith("/_storage/uploads/docs/")
    download = await client.get(url)
    assert download.status_code == 200
    assert download.content == b"signed bytes"
    forged = await client.get(url.replace("signature=", "signature=0"))
    assert forged.status_code == 403


async def test_litestar_the_app_policy_holds(
    client: AsyncTestClient[Any],
    obstore_memory_backend: ObstoreBackend,
    obstore_async_session: AsyncSession,
) -> None:
    too_large = await client.post("/documents", **upload_form(b"x" * 2000))
    assert too_large.status_code == 413
    assert too_large.json() == {"error": "FileTooLargeError"}
    wrong_type = await client.post("/documents", **upload_form(b"\x89PNG\r\n\x1a\n", "a.png"))
    assert wrong_type.status_code == 415
    assert list(obstore_memory_backend.list_objects()) == []
    count = await obstore_async_session.scalar(select(func.count()).select_from(Document))
    assert count == 0


async def test_litestar_failed_storage_leaves_no_row_and_no_object(
    client: AsyncTestClient[Any],
    obstore_faults: FaultInjectingBackend,
    obstore_memory_backend: ObstoreBackend,
    obstore_async_session: AsyncSession,
) -> None:
    obstore_faults.fail("put")
    response = await client.post("/documents", **upload_form(b"lost"))
    assert response.status_code == 500
    assert response.json() == {"error": "InjectedFault"}
    assert obstore_faults.calls["put"] == 1
    assert list(obstore_memory_backend.list_objects()) == []
    assert await obstore_async_session.scalar(select(func.count()).select_from(Document)) == 0

    ok = await client.post("/documents", **upload_form(b"kept"))  # the next put succeeds
    assert ok.status_code == 201
    assert obstore_memory_backend.get_bytes(ok.json()["file"]["path"]) == b"kept"


async def test_faults_configured_before_the_app_starts_survive_its_startup(
    obstore_faults: FaultInjectingBackend,
    sessions: async_sessionmaker[AsyncSession],
    storage_dir: Path,
    obstore_memory_backend: ObstoreBackend,
) -> None:
    obstore_faults.fail("put", nth=2)
    app = create_litestar_app(sessions, storage_dir)
    async with AsyncTestClient(app, base_url="http://testserver.local") as client:
        first = await client.post("/documents", **upload_form(b"one"))
        second = await client.post("/documents", **upload_form(b"two"))
    assert first.status_code == 201
    assert first.json()["file"]["path"].startswith("docs/")  # the wrapper took the settings
    assert second.status_code == 500
    assert [o.path for o in obstore_memory_backend.list_objects()] == [first.json()["file"]["path"]]


async def test_the_app_starts_twice_in_one_test(
    obstore_registry: BackendRegistry,
    sessions: async_sessionmaker[AsyncSession],
    storage_dir: Path,
    obstore_memory_backend: ObstoreBackend,
) -> None:
    paths = []
    for text in (b"first run", b"second run"):
        app = create_litestar_app(sessions, storage_dir)
        async with AsyncTestClient(app, base_url="http://testserver.local") as client:
            response = await client.post("/documents", **upload_form(text))
            assert response.status_code == 201
            paths.append(response.json()["file"]["path"])
    assert [obstore_memory_backend.get_bytes(p) for p in paths] == [b"first run", b"second run"]
    assert obstore_registry.get_backend("uploads").prefix == "docs"


# -- FastAPI: a lifespan with storage_lifespan registers the backend -------------------------------
@pytest.fixture
def fastapi_client(
    obstore_registry: BackendRegistry,
    sessions: async_sessionmaker[AsyncSession],
    storage_dir: Path,
) -> Iterator[FastAPITestClient]:
    with FastAPITestClient(create_fastapi_app(sessions, storage_dir)) as client:
        yield client


def test_fastapi_upload_signed_url_and_policy(
    fastapi_client: FastAPITestClient,
    obstore_memory_backend: ObstoreBackend,
    obstore_registry: BackendRegistry,
) -> None:
    response = fastapi_client.post("/documents", **upload_form(b"from fastapi"))
    assert response.status_code == 201, response.text
    file = response.json()["file"]
    assert file["path"].startswith("docs/")
    assert obstore_memory_backend.get_bytes(file["path"]) == b"from fastapi"
    assert fastapi_client.get(file["url"]).content == b"from fastapi"

    too_large = fastapi_client.post("/documents", **upload_form(b"x" * 2000))
    assert too_large.status_code == 413
    assert fastapi_client.get(f"/documents/{response.json()['id']}").status_code == 200
    assert isinstance(obstore_registry.displaced["uploads"], ObstoreBackend)


def test_fastapi_faults(
    fastapi_client: FastAPITestClient,
    obstore_faults: FaultInjectingBackend,
    obstore_memory_backend: ObstoreBackend,
) -> None:
    obstore_faults.fail("put")
    response = fastapi_client.post("/documents", **upload_form(b"lost"))
    assert response.status_code == 500
    assert list(obstore_memory_backend.list_objects()) == []


def test_fastapi_restarts_within_a_test(
    obstore_registry: BackendRegistry,
    sessions: async_sessionmaker[AsyncSession],
    storage_dir: Path,
    obstore_memory_backend: ObstoreBackend,
) -> None:
    app = create_fastapi_app(sessions, storage_dir)
    for text in (b"one", b"two"):
        with FastAPITestClient(app) as client:
            assert client.post("/documents", **upload_form(text)).status_code == 201
    assert len(list(obstore_memory_backend.list_objects())) == 2


def test_without_the_fixture_the_app_writes_real_files(
    tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """The control: the same app without `obstore_registry` writes to its directory."""
    directory = tmp_path / "real"
    with FastAPITestClient(create_fastapi_app(sessions, directory)) as client:
        assert client.post("/documents", **upload_form(b"on disk")).status_code == 201
    assert [p.read_bytes() for p in directory.rglob("*") if p.is_file()] == [b"on disk"]
