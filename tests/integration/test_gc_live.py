"""The collector beside live writers, and the grace-period floor that keeps it safe there.

The session uploads at flush, before the row that references the object commits: for
that while, a live upload looks exactly like an orphan. A collector run with too short a
grace period deletes it, and the row, once committed, references nothing (issue 14: 31
in-flight uploads deleted and 3 dangling references in one run with `--grace-period 0`).

* `test_a_grace_period_under_the_floor_*`: deleting runs refuse such a grace period
  unless told loudly; dry runs may use it and say so.
* `test_what_the_floor_prevents`: with the override, one collection during one open
  transaction makes a dangling reference, deterministically.
* `test_gc_beside_live_writers_*`: concurrent `AsyncSession`s on PostgreSQL insert,
  replace, append and roll back files on SeaweedFS while the collector runs again and
  again with the minimum grace period. Time is compressed with the collector's `clock`:
  it runs `MIN_GRACE_PERIOD - WINDOW` in the future, so every object older than `WINDOW`
  real seconds is a candidate, as objects older than `MIN_GRACE_PERIOD` are in
  production, and every writer's flush-to-commit takes well under `WINDOW`, as
  transactions take well under the floor. Afterwards: no dangling reference (checked
  with `verify_references`), the orphans made before the writers started were collected
  during the traffic, and a final collection leaves only referenced objects.
"""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from sqlalchemy_obstore import (
    ConfigurationError,
    FileObject,
    ObstoreBackend,
    collect_garbage,
    collect_garbage_async,
    storages,
    verify_references,
)
from sqlalchemy_obstore.gc import DEFAULT_GRACE_PERIOD, MIN_GRACE_PERIOD
from tests.integration.test_gc import make_models
from tests.servers import SeaweedServer

pytestmark = pytest.mark.integration

WINDOW = 6.0  # seconds: the compressed grace period (transactions here last < 0.5 s)
WRITERS = int(os.environ.get("SQLALCHEMY_OBSTORE_GC_LIVE_WRITERS", "8"))
ROUNDS = int(os.environ.get("SQLALCHEMY_OBSTORE_GC_LIVE_ROUNDS", "12"))


def shifted(seconds: float) -> Callable[[], datetime]:
    return lambda: datetime.now(timezone.utc) + timedelta(seconds=seconds)


@pytest.fixture
def seaweed(seaweed_server: SeaweedServer) -> ObstoreBackend:
    backend = ObstoreBackend(
        "live",
        f"s3://{seaweed_server.bucket}/",
        endpoint=seaweed_server.endpoint,
        access_key_id=seaweed_server.access_key_id,
        secret_access_key=seaweed_server.secret_access_key,
        region=seaweed_server.region,
        prefix=f"live-{uuid.uuid4().hex[:10]}",
    )
    storages.register_backend(backend)
    return backend


def stored(backend: ObstoreBackend) -> set[str]:
    return {info.path for info in backend.list_objects(backend.prefix)}


# -- the floor ------------------------------------------------------------------------------------
async def test_a_grace_period_under_the_floor_is_refused_for_deleting_runs(
    sqlite_engine: Engine, sqlite_async_engine: AsyncEngine
) -> None:
    backend = ObstoreBackend("uploads", "memory://")
    storages.register_backend(backend)
    base, _ = make_models("uploads")
    base.metadata.create_all(sqlite_engine)
    orphan = FileObject(filename="lost.txt", content=b"lost", backend="uploads").save()
    for grace in (timedelta(0), timedelta(minutes=5), MIN_GRACE_PERIOD - timedelta(seconds=1)):
        with pytest.raises(ConfigurationError, match="allow_unsafe_grace_period=True") as caught:
            collect_garbage(sqlite_engine, base, grace_period=grace, dry_run=False)
        assert "have not committed yet" in str(caught.value)
        with pytest.raises(ConfigurationError, match="--unsafe-grace-period"):
            await collect_garbage_async(
                sqlite_async_engine, base, grace_period=grace, dry_run=False
            )
    assert backend.exists(orphan.path or "")
    # The floor itself, and the default, are accepted.
    assert collect_garbage(sqlite_engine, base, grace_period=MIN_GRACE_PERIOD, dry_run=False)
    assert DEFAULT_GRACE_PERIOD >= MIN_GRACE_PERIOD


def test_a_grace_period_under_the_floor_is_fine_for_a_dry_run(sqlite_engine: Engine) -> None:
    backend = ObstoreBackend("uploads", "memory://")
    storages.register_backend(backend)
    base, _ = make_models("uploads")
    base.metadata.create_all(sqlite_engine)
    orphan = FileObject(filename="lost.txt", content=b"lost", backend="uploads").save()
    report = collect_garbage(sqlite_engine, base, grace_period=timedelta(0))
    assert report.unsafe_grace_period
    assert report.backends["uploads"].orphan_paths == [orphan.path]
    # With the default grace period the same object is kept, and named as kept.
    safe = collect_garbage(sqlite_engine, base)
    assert not safe.unsafe_grace_period
    result = safe.backends["uploads"]
    assert (result.too_young, result.orphaned) == (1, 0)
    assert result.too_young_paths == [orphan.path]
    # The override deletes (nobody writes here).
    forced = collect_garbage(
        sqlite_engine, base, grace_period=timedelta(0), dry_run=False,
        allow_unsafe_grace_period=True,
    )  # fmt: skip
    assert (forced.deleted, forced.unsafe_grace_period) == (1, True)


def test_too_young_paths_are_bounded_by_the_report_limit(sqlite_engine: Engine) -> None:
    backend = ObstoreBackend("uploads", "memory://")
    storages.register_backend(backend)
    base, _ = make_models("uploads")
    base.metadata.create_all(sqlite_engine)
    for i in range(7):
        FileObject(filename=f"young-{i}.txt", content=b"y", backend="uploads").save()
    report = collect_garbage(sqlite_engine, base, report_limit=3, batch_size=2)
    result = report.backends["uploads"]
    assert result.too_young == 7
    assert len(result.too_young_paths) == 3
    assert result.too_young_paths_truncated


async def test_what_the_floor_prevents(
    pg_async_engine: AsyncEngine, pg_engine: Engine, seaweed: ObstoreBackend
) -> None:
    """One collection with the override, during one open transaction: a dangling row."""
    base, doc = make_models("live")
    async with pg_async_engine.begin() as conn:
        await conn.run_sync(base.metadata.create_all)
    async with AsyncSession(pg_async_engine) as session:
        row = doc(id=1, file=FileObject(filename="in-flight.txt", content=b"in flight"))
        session.add(row)
        await session.flush()  # uploaded; the INSERT is not committed
        path = row.file.path
        report = await collect_garbage_async(
            pg_async_engine,
            base,
            grace_period=timedelta(0),
            allow_unsafe_grace_period=True,
            dry_run=False,
        )
        assert report.deleted == 1
        await session.commit()
    findings = verify_references(pg_engine, base).findings
    assert [(f.path, f.problem) for f in findings] == [(path, "missing")]
    # The floor refuses that run outright.
    with pytest.raises(ConfigurationError):
        await collect_garbage_async(pg_async_engine, base, grace_period=timedelta(0), dry_run=False)


# -- beside live writers -------------------------------------------------------------------
async def writer(
    engine: AsyncEngine, doc: Any, first_id: int, rounds: int, seed: int, stats: dict[str, int]
) -> None:
    """Inserts, replaces, appends to lists and rolls back, each transaction < 0.5 s."""
    rnd = random.Random(seed)
    ids: list[int] = []
    async with AsyncSession(engine, expire_on_commit=False) as session:
        for n in range(rounds):
            choice = rnd.random()
            if not ids or choice < 0.4:
                row = doc(
                    id=first_id + n,
                    file=FileObject(filename=f"w{seed}-{n}.txt", content=rnd.randbytes(40)),
                    pages=[],
                )
                session.add(row)
                ids.append(first_id + n)
            else:
                row = await session.get(doc, rnd.choice(ids))
                if choice < 0.7:
                    row.file = FileObject(filename=f"r{seed}-{n}.bin", content=rnd.randbytes(30))
                else:
                    row.pages.append(FileObject(filename=f"p{seed}-{n}.txt", content=b"page"))
            await session.flush()  # the upload happens here ...
            await asyncio.sleep(rnd.uniform(0.0, 0.4))  # ... and the row is not committed yet
            if rnd.random() < 0.15:
                await session.rollback()
                stats["rollbacks"] += 1
                ids = [i for i in ids if i != first_id + n]
            else:
                await session.commit()
                stats["commits"] += 1


async def test_gc_beside_live_writers_on_postgresql_and_seaweedfs(
    pg_async_engine: AsyncEngine, pg_database: str, seaweed: ObstoreBackend
) -> None:
    base, doc = make_models("live")
    async with pg_async_engine.begin() as conn:
        await conn.run_sync(base.metadata.create_all)
    # Orphans from "crashed" processes, older than the (compressed) grace period.
    old = {
        FileObject(filename=f"crashed-{i}.txt", content=b"lost", backend="live").save().path
        for i in range(5)
    }
    await asyncio.sleep(WINDOW + 1.5)

    gc_engine = create_engine(pg_async_engine.url.set(drivername="postgresql+psycopg"))
    stats = {"commits": 0, "rollbacks": 0, "gc runs": 0, "deleted": 0, "too young": 0}
    clock = shifted(MIN_GRACE_PERIOD.total_seconds() - WINDOW)
    writing = asyncio.gather(
        *(writer(pg_async_engine, doc, 10_000 * (w + 1), ROUNDS, w, stats) for w in range(WRITERS))
    )

    async def collect_async() -> None:
        report = await collect_garbage_async(
            pg_async_engine, base, grace_period=MIN_GRACE_PERIOD, dry_run=False, clock=clock
        )
        assert report.all_errors == [], report.all_errors
        stats["gc runs"] += 1
        stats["deleted"] += report.deleted
        stats["too young"] += report.too_young

    def collect_sync() -> None:
        report = collect_garbage(
            gc_engine, base, grace_period=MIN_GRACE_PERIOD, dry_run=False, clock=clock
        )
        assert report.all_errors == [], report.all_errors
        stats["gc runs"] += 1
        stats["deleted"] += report.deleted

    try:
        while not writing.done():
            # The async collector in this event loop, the sync one in a thread: both run
            # while the writers flush and commit.
            await asyncio.gather(collect_async(), asyncio.to_thread(collect_sync))
        await writing
    finally:
        gc_engine.dispose()

    assert stats["gc runs"] >= 2, stats
    assert stats["too young"] > 0, stats  # in-flight uploads were seen, and kept
    assert stats["commits"] > WRITERS, stats
    sync_engine = create_engine(pg_async_engine.url.set(drivername="postgresql+psycopg"))
    try:
        report = verify_references(sync_engine, base, check_checksums=True)
        assert report.findings == [], report.findings  # 0 dangling references
        assert report.checked >= stats["commits"] // 2
        assert not (old & stored(seaweed)), "the old orphans were collected during the traffic"
        # I3: after a final collection only referenced objects remain.
        final = collect_garbage(sync_engine, base, dry_run=False, clock=shifted(3 * 86400))
        assert final.all_errors == []
        with Session(sync_engine) as session:
            referenced = set()
            for row in session.scalars(select(doc)):
                referenced.update(f.path for f in [row.file, *row.pages] if f is not None)
        assert stored(seaweed) == referenced
    finally:
        sync_engine.dispose()
