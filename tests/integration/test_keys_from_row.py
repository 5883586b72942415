"""Key prefixes taken from the row, through a real session: the lifecycle still owns them.

Every scenario runs with a `Session` and an `AsyncSession` (the key prefix function then
runs in SQLAlchemy's greenlet bridge), on SQLite and PostgreSQL (psycopg, asyncpg), and
against a memory store and S3 (moto). The backend has a managed prefix, so every check
that the keys stay under it is also a check that delete confinement and garbage
collection still cover them.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import ForeignKey, String, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from sqlalchemy_obstore import (
    FileObject,
    InvalidKeySegmentError,
    KeyContext,
    ObstoreBackend,
    StoredObject,
    UploadPolicy,
    collect_garbage,
    storages,
)
from sqlalchemy_obstore.processing import ImagePolicy, Rendition
from tests.integration.backends import s3_backend
from tests.servers import MotoServer

pytestmark = pytest.mark.integration

BACKEND = "rowkeys"


class Base(DeclarativeBase):
    pass


def invoice_prefix(ctx: KeyContext) -> tuple[Any, ...]:
    return ("tenants", ctx.instance.tenant_id, "invoices")


class Invoice(Base):
    __tablename__ = "rk_invoices"
    # A client-generated key: known before the INSERT, so a prefix may use it too.
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    tenant_id: Mapped[str | None] = mapped_column(String(200))
    pdf: Mapped[FileObject | None] = mapped_column(StoredObject(BACKEND, key_prefix=invoice_prefix))
    scans: Mapped[list[FileObject]] = mapped_column(
        StoredObject(BACKEND, multiple=True, key_prefix=invoice_prefix), default=list
    )


class Numbered(Base):
    """A prefix from an autoincrement id: not assigned before the INSERT."""

    __tablename__ = "rk_numbered"
    id: Mapped[int] = mapped_column(primary_key=True)
    file: Mapped[FileObject | None] = mapped_column(
        StoredObject(BACKEND, key_prefix=lambda ctx: ("rows", ctx.instance.id))
    )


class Customer(Base):
    __tablename__ = "rk_customers"
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64))


class Order(Base):
    __tablename__ = "rk_orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("rk_customers.id"))
    customer: Mapped[Customer] = relationship()
    receipt: Mapped[FileObject | None] = mapped_column(
        StoredObject(
            BACKEND, key_prefix=lambda ctx: ("tenants", ctx.instance.customer.tenant, "orders")
        )
    )


class Photo(Base):
    __tablename__ = "rk_photos"
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    image: Mapped[FileObject | None] = mapped_column(
        StoredObject(
            BACKEND,
            key_prefix=lambda ctx: ("tenants", ctx.instance.tenant_id, "photos"),
            policy=UploadPolicy(image=ImagePolicy(renditions=(Rendition("thumb", 16, 16),))),
        )
    )


def invoice(tenant_id: Any, **files: Any) -> Invoice:
    return Invoice(id=uuid.uuid4(), tenant_id=tenant_id, **files)


def pdf(name: str = "invoice.pdf") -> FileObject:
    return FileObject(filename=name, content=b"%PDF-1.7 " + uuid.uuid4().bytes)


# -- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(params=["memory", "s3"])
def backend(request: pytest.FixtureRequest) -> ObstoreBackend:
    prefix = f"managed-{uuid.uuid4().hex[:8]}"
    if request.param == "memory":
        made = ObstoreBackend(BACKEND, "memory://", prefix=prefix)
    else:
        server: MotoServer = request.getfixturevalue("moto_server")
        made = s3_backend(server, key=BACKEND, prefix=prefix)
    storages.register_backend(made, replace=True)
    return made


class Runner:
    """One session, sync or async, driven with `await` either way."""

    def __init__(self, session: Session | AsyncSession, check: Engine) -> None:
        self.session = session
        self.check = check

    async def _do(self, name: str, *args: Any) -> Any:
        result = getattr(self.session, name)(*args)
        if isinstance(self.session, AsyncSession):
            result = await result
        return result

    def add(self, *objects: Base) -> None:
        self.session.add_all(objects)

    async def commit(self) -> None:
        await self._do("commit")

    async def flush(self) -> None:
        await self._do("flush")

    async def rollback(self) -> None:
        await self._do("rollback")

    async def delete(self, obj: Base) -> None:
        await self._do("delete", obj)

    def count(self, model: type[Base]) -> int:
        with self.check.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


@pytest.fixture(params=["sqlite-sync", "sqlite-async", "postgresql-sync", "postgresql-async"])
def engines(request: pytest.FixtureRequest) -> tuple[Engine, AsyncEngine | None]:
    """(sync engine, async engine or None) on one fresh database."""
    database, mode = request.param.split("-")
    sync_engine: Engine = request.getfixturevalue(
        "sqlite_engine" if database == "sqlite" else "pg_engine"
    )
    async_engine: AsyncEngine | None = None
    if mode == "async":
        async_engine = request.getfixturevalue(
            "sqlite_async_engine" if database == "sqlite" else "pg_async_engine"
        )
    return sync_engine, async_engine


@pytest.fixture
async def db(
    engines: tuple[Engine, AsyncEngine | None], backend: ObstoreBackend
) -> AsyncIterator[Runner]:
    sync_engine, async_engine = engines
    Base.metadata.drop_all(sync_engine)
    Base.metadata.create_all(sync_engine)
    session: Session | AsyncSession = (
        Session(sync_engine, expire_on_commit=False)
        if async_engine is None
        else AsyncSession(async_engine, expire_on_commit=False)
    )
    try:
        yield Runner(session, sync_engine)
    finally:
        if isinstance(session, AsyncSession):
            await session.close()
        else:
            session.close()
        Base.metadata.drop_all(sync_engine)


def stored(backend: ObstoreBackend) -> set[str]:
    return {info.path for info in backend.list_objects(backend.prefix)}


# -- scenarios ------------------------------------------------------------------------------------
async def test_files_go_under_the_rows_prefix_and_a_rollback_undoes_them(
    db: Runner, backend: ObstoreBackend
) -> None:
    row = invoice("acme", pdf=pdf(), scans=[pdf("p1.pdf"), pdf("p2.pdf")])
    db.add(row)
    await db.flush()
    folder = f"{backend.prefix}/tenants/acme/invoices/"
    files = [row.pdf, *row.scans]
    paths = {f.path for f in files if f is not None}
    assert len(paths) == 3
    assert all(p is not None and p.startswith(folder) for p in paths)
    assert stored(backend) == paths

    await db.rollback()
    assert stored(backend) == set()  # the lifecycle owned the uploads: undone
    assert all(f is not None and f.has_pending_content and f.path is None for f in files)

    db.add(row)  # a retry uploads again, under new keys in the same folder
    await db.commit()
    retried = {f.path for f in (row.pdf, *row.scans) if f is not None}
    assert retried.isdisjoint(paths)
    assert all(p is not None and p.startswith(folder) for p in retried)
    assert stored(backend) == retried


@pytest.mark.parametrize("bad", ["../x", "a/b", "", None, ".", "acme corp"])
async def test_hostile_row_values_are_refused_before_anything_is_stored(
    db: Runner, backend: ObstoreBackend, bad: Any
) -> None:
    db.add(invoice(bad, pdf=pdf()))
    with pytest.raises(InvalidKeySegmentError, match=r"Invoice\.pdf"):
        await db.commit()
    await db.rollback()
    assert stored(backend) == set()
    assert db.count(Invoice) == 0


async def test_one_bad_row_stores_nothing_of_the_flush(db: Runner, backend: ObstoreBackend) -> None:
    good = invoice("acme", pdf=pdf())
    db.add(good, invoice("../../escape", pdf=pdf()))
    with pytest.raises(InvalidKeySegmentError):
        await db.commit()
    await db.rollback()
    assert stored(backend) == set()
    assert good.pdf is not None
    assert good.pdf.has_pending_content


async def test_an_autoincrement_id_is_not_there_yet(db: Runner, backend: ObstoreBackend) -> None:
    db.add(Numbered(file=pdf()))
    with pytest.raises(InvalidKeySegmentError, match="autoincrement"):
        await db.commit()
    await db.rollback()
    assert stored(backend) == set()
    # An id the application assigns is there.
    db.add(Numbered(id=41, file=pdf()))
    await db.commit()
    (path,) = stored(backend)
    assert path.startswith(f"{backend.prefix}/rows/41/")


async def test_a_loaded_relationship_gives_the_prefix(db: Runner, backend: ObstoreBackend) -> None:
    order = Order(customer=Customer(tenant="globex"), receipt=pdf("receipt.pdf"))
    db.add(order)
    await db.commit()
    assert order.receipt is not None
    assert order.receipt.path is not None
    assert order.receipt.path.startswith(f"{backend.prefix}/tenants/globex/orders/")


async def test_rows_without_uploads_never_call_the_function(
    db: Runner, backend: ObstoreBackend
) -> None:
    db.add(invoice(None))  # no file: a tenant-less row is fine
    await db.commit()
    assert db.count(Invoice) == 1


async def test_replaced_and_deleted_files_go_after_commit_and_gc_sees_them(
    db: Runner, backend: ObstoreBackend
) -> None:
    row = invoice("acme", pdf=pdf())
    kept = invoice("initech", pdf=pdf())
    db.add(row, kept)
    await db.commit()
    first = row.pdf.path if row.pdf is not None else None
    row.pdf = pdf("v2.pdf")
    await db.commit()
    assert first is not None
    assert first not in stored(backend)
    await db.delete(row)
    await db.commit()
    assert kept.pdf is not None
    assert stored(backend) == {kept.pdf.path}

    orphan = f"{backend.prefix}/tenants/acme/invoices/{uuid.uuid4().hex}/lost.pdf"
    backend.put(orphan, b"lost")
    report = collect_garbage(db.check, Base, backends=[BACKEND], grace_period=timedelta(0))
    found = report.backends[BACKEND]
    assert found.referenced == 1
    assert found.orphan_paths == [orphan]


async def test_renditions_stay_beside_their_original(db: Runner, backend: ObstoreBackend) -> None:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(out, "PNG")
    photo = Photo(tenant_id="acme", image=FileObject(filename="cat.png", content=out.getvalue()))
    db.add(photo)
    await db.flush()
    assert photo.image is not None
    paths = {photo.image.path, *(r.path for r in photo.image.renditions.values())}
    assert len(paths) == 2
    folder = f"{backend.prefix}/tenants/acme/photos/"
    assert all(p is not None and p.startswith(folder) for p in paths)
    await db.rollback()
    assert stored(backend) == set()
