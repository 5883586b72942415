"""The plugin's fixtures in this project's own session (no `obstore_*` ini option is set here).

`tests/e2e/test_pytest_plugin.py` runs the plugin in a user's project; these check the
fixtures' edges where no configuration is given.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect

from sqlalchemy_obstore import BackendRegistry, ObstoreBackend, storages
from sqlalchemy_obstore.testing import FileFactory


def test_without_keys_the_registry_still_stands_in(
    obstore_backend_keys: tuple[str, ...], obstore_registry: BackendRegistry, tmp_path: Path
) -> None:
    assert obstore_backend_keys == ()
    assert obstore_registry is storages
    real = ObstoreBackend("files", tmp_path / "real", prefix="p")
    storages.register_backend(real)
    resolved = storages.get_backend("files")
    assert isinstance(resolved, ObstoreBackend)
    assert (resolved.kind, resolved.prefix) == ("memory", "p")
    assert storages.displaced == {"files": real}


def test_the_memory_backend_needs_a_key(request: pytest.FixtureRequest) -> None:
    with pytest.raises(pytest.UsageError, match=r"mark\.obstore_backends\('uploads'\)"):
        request.getfixturevalue("obstore_memory_backend")


@pytest.mark.obstore_backends("")
def test_the_marker_refuses_empty_keys(request: pytest.FixtureRequest) -> None:
    with pytest.raises(pytest.UsageError, match="non-empty strings"):
        request.getfixturevalue("obstore_backend_keys")


@pytest.mark.obstore_backends("uploads", "avatars")
def test_the_marker_gives_the_keys(
    obstore_memory_backends: dict[str, ObstoreBackend], obstore_memory_backend: ObstoreBackend
) -> None:
    assert list(obstore_memory_backends) == ["uploads", "avatars"]
    assert obstore_memory_backend is obstore_memory_backends["uploads"]
    assert storages.get_backend("avatars") is obstore_memory_backends["avatars"]


def test_without_metadata_the_engine_has_no_tables(obstore_engine: object) -> None:
    assert inspect(obstore_engine).get_table_names() == []


async def test_without_metadata_the_async_engine_has_no_tables(
    obstore_async_engine: object,
) -> None:
    from sqlalchemy.ext.asyncio import AsyncEngine

    assert isinstance(obstore_async_engine, AsyncEngine)
    async with obstore_async_engine.connect() as conn:
        tables = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
    assert tables == []


@pytest.fixture
def obstore_session_options() -> dict[str, object]:
    return {"expire_on_commit": True, "autoflush": False}


def test_session_options_can_be_overridden(obstore_session: object) -> None:
    from sqlalchemy.orm import Session

    assert isinstance(obstore_session, Session)
    assert obstore_session.expire_on_commit is True
    assert obstore_session.autoflush is False


def test_the_file_factory_is_seeded_with_the_test_id(
    obstore_file_factory: FileFactory, request: pytest.FixtureRequest
) -> None:
    assert obstore_file_factory.seed == request.node.nodeid
    assert obstore_file_factory.count == 0
