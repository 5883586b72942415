"""Shared fixtures: isolated backend registries, SQLite and PostgreSQL engines.

PostgreSQL: the tests use the server at ``SQLALCHEMY_OBSTORE_PG`` (default
``postgres@127.0.0.1:5432``, trust auth) and create a private database for the run,
dropped at the end. When it is not reachable the PostgreSQL tests skip with a hint, or
fail when ``SQLALCHEMY_OBSTORE_REQUIRE_SERVERS=1`` (CI).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from sqlalchemy_obstore import ObstoreBackend, storages

pytest_plugins = ["tests.conftest_servers"]

REQUIRE_SERVERS = os.environ.get("SQLALCHEMY_OBSTORE_REQUIRE_SERVERS") == "1"
PG_SERVER = os.environ.get("SQLALCHEMY_OBSTORE_PG", "postgres@127.0.0.1:5432")


def unavailable(reason: str, hint: str) -> None:
    """Skip (locally) or fail (in CI) because a server the test needs is missing."""
    message = f"{reason}. {hint}"
    if REQUIRE_SERVERS:
        pytest.fail(f"{message} (SQLALCHEMY_OBSTORE_REQUIRE_SERVERS=1 forbids skipping)")
    pytest.skip(reason=message)


@pytest.fixture(autouse=True)
def _isolated_registry() -> Iterator[None]:
    """Every test starts and ends with an empty default registry."""
    with storages.temporary(clear=True):
        yield


@pytest.fixture
def memory_backend() -> ObstoreBackend:
    """A fresh memory backend registered as ``"memory"``."""
    backend = ObstoreBackend("memory", "memory://")
    storages.register_backend(backend)
    return backend


@pytest.fixture
def local_backend(tmp_path: Path) -> ObstoreBackend:
    """A local-files backend in a temporary directory, registered as ``"local"``."""
    backend = ObstoreBackend("local", tmp_path / "store")
    storages.register_backend(backend)
    return backend


@pytest.fixture(params=["memory", "local"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> ObstoreBackend:
    """Each server-less backend in turn, registered under its own key."""
    fs: Any = "memory://" if request.param == "memory" else tmp_path / "store"
    created = ObstoreBackend(request.param, fs)
    storages.register_backend(created)
    return created


# -- databases ------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A private PostgreSQL database for this test run; yields its name."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        unavailable("psycopg is not installed", "Run the tests with `nox -s tests`.")
    admin = create_engine(
        f"postgresql+psycopg://{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT"
    )
    name = f"sqlo_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        admin.dispose()
        unavailable(
            f"PostgreSQL is not reachable at {PG_SERVER} ({type(exc).__name__})",
            "Start it (scripts/ensure-postgres.sh) or set SQLALCHEMY_OBSTORE_PG=user@host:port.",
        )
    try:
        yield name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def pg_engine(pg_database: str) -> Iterator[Engine]:
    """A sync engine (psycopg) on the private PostgreSQL database."""
    engine = create_engine(f"postgresql+psycopg://{PG_SERVER}/{pg_database}")
    yield engine
    engine.dispose()


@pytest.fixture
async def pg_async_engine(pg_database: str) -> AsyncIterator[AsyncEngine]:
    """An async engine (asyncpg) on the private PostgreSQL database."""
    engine = create_async_engine(f"postgresql+asyncpg://{PG_SERVER}/{pg_database}")
    yield engine
    await engine.dispose()


def _real_sqlite_transactions(engine: Engine) -> None:
    # The sqlite3 module's own transaction handling breaks SAVEPOINTs; let SQLAlchemy
    # emit BEGIN itself (the recipe from SQLAlchemy's SQLite dialect docs).
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN")


SQLITE_ARGS = {"timeout": 30}
"""Writers wait up to 30 s for SQLite's lock (the driver's default is 5 s): tests that write
from several connections at once must not fail because the machine is busy."""


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    """A sync engine on a SQLite file (stdlib driver), SAVEPOINT-capable."""
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}", connect_args=SQLITE_ARGS)
    _real_sqlite_transactions(engine)
    yield engine
    engine.dispose()


@pytest.fixture
async def sqlite_async_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An async engine on a SQLite file (aiosqlite), SAVEPOINT-capable."""
    engine = create_async_engine(
        f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}", connect_args=SQLITE_ARGS
    )
    _real_sqlite_transactions(engine.sync_engine)
    yield engine
    await engine.dispose()
