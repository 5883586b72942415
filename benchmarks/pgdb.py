"""A private PostgreSQL database for one benchmark run (created, then dropped).

The server is the test suite's: `$SQLALCHEMY_OBSTORE_PG` (default
`postgres@127.0.0.1:5432`, trust auth). Like the tests, a run never touches a database
it did not create, so benchmarks and test runs can share the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import uuid
from collections.abc import Iterator

SERVER = os.environ.get("SQLALCHEMY_OBSTORE_PG", "postgres@127.0.0.1:5432")


async def _admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(f"postgresql://{SERVER}/postgres", timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def private_database(prefix: str = "sqlo_bench") -> Iterator[str | None]:
    """Yield the name of a new database, or None (with a note) when PostgreSQL is not there."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # not installed, not running, not allowed: skip its cases
        print(f"! PostgreSQL cases skipped: {SERVER}: {exc!r}", file=sys.stderr)
        yield None
        return
    try:
        yield name
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def url(driver: str, database: str) -> str:
    """A SQLAlchemy URL for `database` with `driver` ("asyncpg" or "psycopg")."""
    return f"postgresql+{driver}://{SERVER}/{database}"
