"""OpenTelemetry spans and counters on real components, recorded by the real SDK.

S3 (moto) saves, signs and deletes, sync and async, without a secret in any attribute;
an orphan left by a delete that fails after a commit is counted; garbage collection,
verification and migration make one span per run (sync and async, on SQLite), with the
storage operations of the run as its children.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.trace import StatusCode
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from sqlalchemy_obstore import (
    FileObject,
    ObstoreBackend,
    StorageError,
    StoredObject,
    collect_garbage,
    collect_garbage_async,
    migrate,
    migrate_async,
    storages,
    verify_references,
    verify_references_async,
)
from sqlalchemy_obstore.telemetry import SPAN_NAMES
from sqlalchemy_obstore.testing import FaultInjectingBackend
from tests.integration.backends import s3_backend
from tests.otel import Recorded, attribute_values, recording
from tests.servers import MotoServer

pytestmark = pytest.mark.integration

UPLOAD, DELETE, SIGN = (SPAN_NAMES[n] for n in ("upload", "delete", "sign"))
GC, VERIFY, MIGRATE = (SPAN_NAMES[n] for n in ("gc", "verify", "migrate"))
ORPHANED = "sqlalchemy_obstore.orphaned_objects"
UNSAFE: dict[str, Any] = {"grace_period": timedelta(0), "allow_unsafe_grace_period": True}


@pytest.fixture
def otel() -> Iterator[Recorded]:
    with recording() as recorded:
        yield recorded


class Base(DeclarativeBase):
    pass


class Doc(Base):
    __tablename__ = "telemetry_docs"
    id: Mapped[int] = mapped_column(primary_key=True)
    file: Mapped[FileObject | None] = mapped_column(StoredObject("files"))


@dataclass
class Db:
    """A sync or an async engine on one SQLite file, driven the same way."""

    engine: Engine | AsyncEngine

    async def commit(self, *rows: Any, change: Any = None) -> None:
        """Add `rows` and commit; or change the row with `change(row)` and commit."""
        if isinstance(self.engine, AsyncEngine):
            async with AsyncSession(self.engine, expire_on_commit=False) as session:
                session.add_all(rows)
                if change is not None:
                    change(await session.get(Doc, 1))
                await session.commit()
        else:
            with Session(self.engine, expire_on_commit=False) as session:
                session.add_all(rows)
                if change is not None:
                    change(session.get(Doc, 1))
                session.commit()

    async def gc(self, **options: Any) -> Any:
        if isinstance(self.engine, AsyncEngine):
            return await collect_garbage_async(self.engine, Base, **options)
        return collect_garbage(self.engine, Base, **options)

    async def verify(self, target: Any = Base) -> Any:
        if isinstance(self.engine, AsyncEngine):
            return await verify_references_async(self.engine, target)
        return verify_references(self.engine, target)

    async def migrate(self, **options: Any) -> Any:
        if isinstance(self.engine, AsyncEngine):
            return await migrate_async(self.engine, Base, **options)
        return migrate(self.engine, Base, **options)


@pytest.fixture(params=["sync", "async"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Db]:
    path = tmp_path / "telemetry.sqlite"
    engine = create_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    if request.param == "sync":
        yield Db(engine)
    else:
        async_engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
        yield Db(async_engine)
        await async_engine.dispose()
    engine.dispose()


# -- S3 ----------------------------------------------------------------------------------------
@pytest.fixture
def s3(moto_server: MotoServer) -> ObstoreBackend:
    backend = s3_backend(moto_server, key="files", prefix=f"otel-{uuid.uuid4().hex[:10]}")
    storages.register_backend(backend, default=True)
    return backend


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_s3_operations_make_spans_without_secrets(
    otel: Recorded, s3: ObstoreBackend, moto_server: MotoServer, mode: str
) -> None:
    pending = FileObject(filename="report.pdf", content=b"%PDF" * 100)
    if mode == "sync":
        file = pending.save()
        url = file.sign()
        upload_url = FileObject(filename="incoming.pdf").sign(for_upload=True)
        file.delete()
    else:
        file = await pending.save_async()
        url = await file.sign_async()
        upload_url = await FileObject(filename="incoming.pdf").sign_async(for_upload=True)
        await file.delete_async()

    assert [s.name for s in otel.spans()] == [UPLOAD, SIGN, SIGN, DELETE]
    for span in otel.spans():
        assert span.attributes is not None
        assert span.attributes["sqlalchemy_obstore.backend"] == "files"
        assert span.attributes["sqlalchemy_obstore.store"] == "s3"
        assert span.attributes["sqlalchemy_obstore.outcome"] == "success"
    assert (otel.span(UPLOAD).attributes or {})["sqlalchemy_obstore.object.size"] == 400
    methods = [(s.attributes or {})["sqlalchemy_obstore.sign.method"] for s in otel.spans(SIGN)]
    assert methods == ["GET", "PUT"]
    values = attribute_values(otel.spans())
    secrets = [moto_server.secret_access_key, url, upload_url, "X-Amz", "?", file.path or ""]
    assert not [v for v in values for secret in secrets if secret in v], values


@pytest.mark.parametrize("record_paths", [False, True])
async def test_an_s3_failure_is_recorded_with_its_type(
    moto_server: MotoServer, record_paths: bool
) -> None:
    broken = ObstoreBackend(
        "nowhere",
        f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/",
        endpoint=moto_server.endpoint,
        access_key_id=moto_server.access_key_id,
        secret_access_key=moto_server.secret_access_key,
        region=moto_server.region,
        virtual_hosted_style_request=False,
        max_retries=0,
    )
    with recording(record_paths=record_paths) as otel, pytest.raises(StorageError) as raised:
        await broken.put_async("customer-7/contract.pdf", b"x")
    span = otel.span(UPLOAD)
    assert span.status.status_code is StatusCode.ERROR
    attributes = dict(span.attributes or {})
    assert attributes["sqlalchemy_obstore.outcome"] == "failure"
    error_type = type(raised.value)
    assert attributes["error.type"] == f"{error_type.__module__}.{error_type.__qualname__}"
    values = attribute_values([span])
    assert not any(moto_server.secret_access_key in v for v in values)
    assert any("customer-7" in v for v in values) is record_paths


# -- the session lifecycle: orphans ------------------------------------------------------------
async def test_an_orphan_left_by_a_failed_delete_is_counted(otel: Recorded, db: Db) -> None:
    storage = FaultInjectingBackend(ObstoreBackend("files", "memory://"))
    storages.register_backend(storage)
    await db.commit(Doc(id=1, file=FileObject(filename="a.txt", content=b"a")))
    assert otel.counter(ORPHANED) == {}

    storage.fail("delete")

    def replace(doc: Doc) -> None:
        doc.file = FileObject(filename="b.txt", content=b"b")

    await db.commit(change=replace)  # the commit stands; the old object stays behind

    assert otel.counter(ORPHANED) == {
        frozenset(
            {
                ("sqlalchemy_obstore.backend", "files"),
                ("sqlalchemy_obstore.orphan.reason", "after_commit"),
            }
        ): 1
    }
    assert [s.name for s in otel.spans()] == [UPLOAD, UPLOAD]  # (the failed delete never ran)


# -- runs ----------------------------------------------------------------------------------------
@pytest.fixture
def files() -> ObstoreBackend:
    backend = ObstoreBackend("files", "memory://", prefix="docs")
    storages.register_backend(backend)
    return backend


async def test_a_gc_run_is_one_span_with_its_deletes_inside(
    otel: Recorded, db: Db, files: ObstoreBackend
) -> None:
    await db.commit(Doc(id=1, file=FileObject(filename="kept.txt", content=b"kept")))
    files.put("docs/lost/a.bin", b"12345")
    files.put("docs/lost/b.bin", b"123")
    otel.clear()

    report = await db.gc(dry_run=False, **UNSAFE)

    assert report.deleted == 2
    gc = otel.span(GC)
    assert gc.attributes is not None
    assert gc.attributes["sqlalchemy_obstore.gc.dry_run"] is False
    assert gc.attributes["sqlalchemy_obstore.gc.scanned"] == 3
    assert gc.attributes["sqlalchemy_obstore.gc.deleted"] == 2
    assert gc.attributes["sqlalchemy_obstore.gc.bytes_freed"] == 8
    assert gc.attributes["sqlalchemy_obstore.gc.backends"] == ("files",)
    assert gc.attributes["sqlalchemy_obstore.outcome"] == "success"
    [delete] = otel.spans(DELETE)
    assert delete.parent is not None
    assert delete.parent.span_id == gc.context.span_id
    assert (delete.attributes or {})["sqlalchemy_obstore.object.count"] == 2
    backend = frozenset({("sqlalchemy_obstore.backend", "files")})
    assert otel.counter("sqlalchemy_obstore.gc.deleted_objects") == {backend: 2}
    assert otel.counter("sqlalchemy_obstore.gc.freed_bytes") == {backend: 8}


async def test_a_gc_run_with_errors_is_partial(otel: Recorded, db: Db) -> None:
    storage = FaultInjectingBackend(ObstoreBackend("files", "memory://", prefix="docs"))
    storages.register_backend(storage)
    storage.inner.put("docs/lost/a.bin", b"x")
    storage.fail("delete")

    report = await db.gc(dry_run=False, **UNSAFE)

    assert report.all_errors
    gc = otel.span(GC)
    assert (gc.attributes or {})["sqlalchemy_obstore.outcome"] == "partial"
    assert (gc.attributes or {})["sqlalchemy_obstore.gc.errors"] == 1
    assert otel.counter("sqlalchemy_obstore.gc.deleted_objects") == {}


async def test_a_verify_run_is_one_span(otel: Recorded, db: Db, files: ObstoreBackend) -> None:
    await db.commit(Doc(id=1, file=FileObject(filename="a.txt", content=b"a")))
    otel.clear()
    assert (await db.verify()).ok
    files.delete([info.path for info in files.list_objects()])
    assert not (await db.verify()).ok

    first, second = otel.spans(VERIFY)
    assert (first.attributes or {})["sqlalchemy_obstore.verify.checked"] == 1
    assert (first.attributes or {})["sqlalchemy_obstore.verify.findings"] == 0
    assert (second.attributes or {})["sqlalchemy_obstore.verify.findings"] == 1


async def test_a_migration_is_one_span_with_its_copies_inside(otel: Recorded, db: Db) -> None:
    storages.register_backend(ObstoreBackend("files", "memory://"))
    storages.register_backend(ObstoreBackend("new", "memory://"))
    await db.commit(Doc(id=1, file=FileObject(filename="a.txt", content=b"hello")))
    otel.clear()

    report = await db.migrate(source="files", destination="new", delete_source=True)

    assert report.ok
    run = otel.span(MIGRATE)
    assert run.attributes is not None
    assert run.attributes["sqlalchemy_obstore.migrate.source"] == "files"
    assert run.attributes["sqlalchemy_obstore.migrate.destination"] == "new"
    assert run.attributes["sqlalchemy_obstore.migrate.objects_copied"] == 1
    assert run.attributes["sqlalchemy_obstore.migrate.bytes_copied"] == 5
    assert run.attributes["sqlalchemy_obstore.migrate.objects_deleted"] == 1
    assert run.attributes["sqlalchemy_obstore.outcome"] == "success"
    inside = [s for s in otel.spans() if s.name in {UPLOAD, DELETE}]
    assert {(s.attributes or {})["sqlalchemy_obstore.backend"] for s in inside} >= {"new", "files"}
    assert all(s.parent is not None and s.parent.span_id == run.context.span_id for s in inside)


class Unmigrated(DeclarativeBase):
    pass


class Missing(Unmigrated):
    __tablename__ = "telemetry_never_created"
    id: Mapped[int] = mapped_column(primary_key=True)
    file: Mapped[FileObject | None] = mapped_column(StoredObject("files"))


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_failing_run_records_its_error(
    otel: Recorded, files: ObstoreBackend, tmp_path: Path, mode: str
) -> None:
    path = tmp_path / "empty.sqlite"
    engine: Engine | AsyncEngine = (
        create_engine(f"sqlite:///{path}")
        if mode == "sync"
        else create_async_engine(f"sqlite+aiosqlite:///{path}")
    )
    try:
        with pytest.raises(OperationalError):  # the table was never created
            await Db(engine).verify(Unmigrated)
    finally:
        if isinstance(engine, AsyncEngine):
            await engine.dispose()
        else:
            engine.dispose()

    run = otel.span(VERIFY)
    assert run.status.status_code is StatusCode.ERROR
    assert (run.attributes or {})["error.type"] == "sqlalchemy.exc.OperationalError"
    assert (run.attributes or {})["sqlalchemy_obstore.outcome"] == "failure"
