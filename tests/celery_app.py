"""The fork tests' Celery app: `celery -A tests.celery_app worker`, configured by environment.

A real Celery worker runs this module (`tests/integration/test_fork.py` starts it as a
subprocess, with Redis as broker and result backend); the test process only sends tasks
by name and never imports it. Environment:

- ``SQLO_CELERY_CONFIG``: Celery settings as JSON, the same the test's client uses
  (broker and result backend URLs, a key prefix unique to the test for every Redis key,
  and the test's own queue), so that test runs sharing a Redis server never meet;
- ``S3_ENDPOINT``, ``S3_BUCKET``: the moto server; ``WORKDIR``: a folder for SQLite files;
- ``STORE_AT``: where the app makes its start-up storage call (the deployment guide's
  check that the bucket answers): ``import`` - at module level, so in the prefork
  pool's parent before it forks its pool processes (the pattern that breaks),
  ``worker_process_init`` - in each pool process after the fork (the supported
  pattern), or ``nowhere``.

Backends are registered at import time in every case: building them starts nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from typing import Any

from celery import Celery
from celery.signals import worker_process_init
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from sqlalchemy_obstore import FileObject, storages
from tests.fork_workers import KEY, Base, Doc, backend

STORE_AT = os.environ["STORE_AT"]
WORKDIR = os.environ["WORKDIR"]

app = Celery("sqlo_fork_tests")
app.conf.update(
    json.loads(os.environ["SQLO_CELERY_CONFIG"]),
    worker_enable_remote_control=False,  # no broadcast queues: only the test's own keys
)

storages.register_backend(backend(os.environ["S3_ENDPOINT"], os.environ["S3_BUCKET"]))

started_in: int | None = None
"""The pid whose start-up check ran (`worker_process_init` sets it in each pool process)."""


def startup_check() -> None:
    """The start-up storage call of the deployment guide: a HEAD request to the bucket."""
    global started_in
    storages.get_backend(KEY).exists(".startup-check")
    started_in = os.getpid()


if STORE_AT == "import":
    startup_check()


@worker_process_init.connect
def _check_storage_in_each_pool_process(**kwargs: Any) -> None:
    if STORE_AT == "worker_process_init":
        startup_check()


@app.task
def store_and_read(content: str) -> dict[str, Any]:
    """Commit a row with a file (SQLite), load it in a new session and read the file back."""
    engine = create_engine(f"sqlite:///{WORKDIR}/{uuid.uuid4().hex}.sqlite")
    try:
        Base.metadata.create_all(engine)
        with Session(engine) as session:
            doc = Doc(file=FileObject(filename="task.txt", content=content.encode()))
            session.add(doc)
            session.flush()
            doc_id = doc.id
            session.commit()
        with Session(engine) as session:
            loaded = session.get(Doc, doc_id)
            assert loaded is not None
            assert loaded.file is not None
            read = loaded.file.get_content().decode()
    finally:
        engine.dispose()
    return {"pid": os.getpid(), "read": read, "started_in": started_in}


@app.task
def store_and_read_async(content: str) -> dict[str, Any]:
    """`store_and_read` with an `AsyncSession` under `asyncio.run` (aiosqlite)."""

    async def run() -> str:
        engine = create_async_engine(f"sqlite+aiosqlite:///{WORKDIR}/{uuid.uuid4().hex}.sqlite")
        try:
            async with engine.begin() as conn:
                await conn.run_sync(Base.metadata.create_all)
            async with AsyncSession(engine) as session:
                doc = Doc(file=FileObject(filename="task.txt", content=content.encode()))
                session.add(doc)
                await session.flush()
                doc_id = doc.id
                await session.commit()
            async with AsyncSession(engine) as session:
                loaded = await session.get(Doc, doc_id)
                assert loaded is not None
                assert loaded.file is not None
                return (await loaded.file.get_content_async()).decode()
        finally:
            await engine.dispose()

    return {"pid": os.getpid(), "read": asyncio.run(run()), "started_in": started_in}
