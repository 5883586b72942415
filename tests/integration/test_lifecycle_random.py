"""Randomized fault scripts against the consistency model (DESIGN.md §3).

Hypothesis generates scripts of session operations on a model with a single-file column
and a list column - add a row, replace a file, set it to `None`, append, remove, replace
and move list items, touch a file's metadata in place, merge one row into another,
delete a row, flush, commit, roll back, begin / roll back / release SAVEPOINTs - mixed
with faults: failed puts, deletes and multipart parts (`FaultInjectingBackend`), unique
violations, a commit that raises before it starts (`before_commit`) or in a `commit`
listener just before the DBAPI sends COMMIT, and crashes (the process dies: whatever the
session would still do to storage never happens). On PostgreSQL the session talks to the
server through a protocol-aware proxy (`tests/pg_proxy.py`), and a `LostCommit` step
commits while the proxy loses what the DBAPI sent: the *reply* (the server committed,
the client hears only the connection close) or the COMMIT *request* itself (cut instead
of forwarded: nothing committed, and the client cannot tell either). The outcome is then
unknown to the session, and the library must delete nothing: not a single delete may be
issued by the rollback that follows, and I1/I2 must hold either way.

After every step the invariants are checked against what is *committed*, read through a
separate engine:

- **I1** every reference in a committed row resolves to an existing object of the
  recorded size whose bytes are the ones the application gave (checksum included);
- **I2** no object referenced by a committed row is ever deleted: every delete the
  library issues is checked, at the moment it is issued, against the committed rows;
- **I3** every object in storage that no committed row references is either an upload of
  the transaction still in progress or accounted for by an injected fault (a failed
  cleanup delete, a crash, a commit of unknown outcome) - the set the garbage collector
  must find. Anything else is a
  leak. Rollbacks of SAVEPOINTs and transactions must remove exactly what they uploaded,
  and a flush that fails on storage must leave none of its uploads behind.

`SQLALCHEMY_OBSTORE_STRESS=1` (`nox -s stress`) runs ten times as many scripts.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import itertools
import os
import random
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import String, create_engine, delete, event, inspect, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from sqlalchemy_obstore import (
    FileObject,
    ObstoreBackend,
    SaveOptions,
    StorageError,
    StoredObject,
    storages,
)
from sqlalchemy_obstore.backends import UploadBody, WriteResult
from sqlalchemy_obstore.testing import FaultInjectingBackend, InjectedFault
from tests.integration.sessions import AsyncSavepoint, Savepoint, SyncSavepoint
from tests.pg_proxy import PgProxy

pytestmark = pytest.mark.integration

STRESS = os.environ.get("SQLALCHEMY_OBSTORE_STRESS") == "1"
BACKEND = "random"
PART = 256  # multipart part size of the model's columns: streams above it go multipart
MAX_SAVEPOINTS = 3
_T = TypeVar("_T")


def examples(count: int) -> int:
    return count * 10 if STRESS else count


# -- the model ----------------------------------------------------------------------------------
class SmallParts(StoredObject):
    """A `StoredObject` whose uploads switch to multipart above `PART` bytes."""

    cache_ok = True

    @property
    def save_options(self) -> SaveOptions:
        return replace(super().save_options, chunk_size=PART)


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "random_items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(40), unique=True)
    file: Mapped[FileObject | None] = mapped_column(SmallParts(BACKEND))
    pages: Mapped[list[FileObject]] = mapped_column(SmallParts(BACKEND, multiple=True))


class ScriptSession(Session):
    """The session class of the scripts; `before_commit` fails when armed."""


class InjectedCommitFault(Exception):
    """A database commit that fails on purpose."""


_ARM_BEFORE_COMMIT = "random.fail_before_commit"
_FLUSHED = "random.flushed"


@event.listens_for(ScriptSession, "before_commit")
def _before_commit(session: Session) -> None:
    if session.info.pop(_ARM_BEFORE_COMMIT, False):
        raise InjectedCommitFault("before_commit")


@event.listens_for(ScriptSession, "after_flush_postexec")
def _after_flush_postexec(session: Session, flush_context: Any) -> None:
    flushed = session.info.get(_FLUSHED)
    if flushed is not None:
        flushed()


# -- operations -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Content:
    kind: Literal["bytes", "stream", "file"]  # buffer, one-shot iterator, seekable file
    size: int


@dataclass(frozen=True)
class Add:
    file: Content | None
    pages: tuple[Content, ...]
    duplicate_name: bool


@dataclass(frozen=True)
class Replace:
    row: int
    file: Content
    flush: bool = False  # flush right after


@dataclass(frozen=True)
class SetNone:
    row: int
    flush: bool = False  # flush right after


@dataclass(frozen=True)
class Touch:
    row: int
    flush: bool = False  # flush right after


@dataclass(frozen=True)
class Append:
    row: int
    file: Content
    flush: bool = False  # flush right after


@dataclass(frozen=True)
class Remove:
    row: int
    index: int
    flush: bool = False  # flush right after


@dataclass(frozen=True)
class SetItem:
    row: int
    index: int
    file: Content
    flush: bool = False  # flush right after


@dataclass(frozen=True)
class ReassignPages:
    row: int
    files: tuple[Content, ...]
    flush: bool = False  # flush right after


@dataclass(frozen=True)
class Move:
    row: int
    index: int
    to: int
    flush: bool = False  # flush right after


@dataclass(frozen=True)
class Reattach:
    """Put a file taken out of a row earlier in this transaction into a row again."""

    row: int
    index: int
    flush: bool = False  # flush right after


@dataclass(frozen=True)
class Merge:
    row: int
    into: int
    flush: bool = False  # flush right after


@dataclass(frozen=True)
class Delete:
    row: int
    flush: bool = False  # flush right after


@dataclass(frozen=True)
class Flush:
    pass


@dataclass(frozen=True)
class Commit:
    pass


@dataclass(frozen=True)
class Rollback:
    pass


@dataclass(frozen=True)
class BeginSavepoint:
    pass


@dataclass(frozen=True)
class RollbackSavepoint:
    pass


@dataclass(frozen=True)
class ReleaseSavepoint:
    pass


@dataclass(frozen=True)
class StorageFault:
    operation: Literal["put", "part", "delete"]
    nth: int
    times: int


@dataclass(frozen=True)
class DatabaseFault:
    kind: Literal["before_commit", "commit"]


@dataclass(frozen=True)
class LostCommit:
    """Commit, and lose the COMMIT's reply or the COMMIT itself (PostgreSQL, via the proxy)."""

    lose: Literal["reply", "request"]


@dataclass(frozen=True)
class Crash:
    pass


Operation = (
    Add
    | Replace
    | SetNone
    | Touch
    | Append
    | Remove
    | SetItem
    | ReassignPages
    | Move
    | Reattach
    | Merge
    | Delete
    | Flush
    | Commit
    | Rollback
    | BeginSavepoint
    | RollbackSavepoint
    | ReleaseSavepoint
    | StorageFault
    | DatabaseFault
    | LostCommit
    | Crash
)

contents = st.one_of(
    st.builds(Content, st.just("bytes"), st.integers(0, 2 * PART)),
    st.builds(Content, st.just("stream"), st.integers(PART + 1, 4 * PART)),
    st.builds(Content, st.just("file"), st.integers(1, 4 * PART)),
)
rows = st.integers(0, 7)
indexes = st.integers(0, 3)
adds = st.builds(
    Add, st.none() | contents, st.lists(contents, max_size=2).map(tuple), st.just(False)
)
then_flush = st.integers(0, 3).map(lambda n: n == 0)
# The kinds of steps, in families; each script uses a random subset of the families
# ("swarm testing"), which makes long runs of the few steps that interact - say taking a
# file out of a row, a SAVEPOINT, putting the file into another row, a flush and a
# SAVEPOINT rollback - far more likely than a uniform mix of every kind would.
FAMILIES: dict[str, list[st.SearchStrategy[Operation]]] = {
    "add": [
        st.builds(
            Add,
            st.none() | contents,
            st.lists(contents, max_size=2).map(tuple),
            st.integers(0, 9).map(lambda n: n == 0),
        )
    ],
    "file": [
        st.builds(Replace, rows, contents, then_flush),
        st.builds(SetNone, rows, then_flush),
        st.builds(Touch, rows, then_flush),
    ],
    "list": [
        st.builds(Append, rows, contents, then_flush),
        st.builds(Remove, rows, indexes, then_flush),
        st.builds(SetItem, rows, indexes, contents, then_flush),
        st.builds(ReassignPages, rows, st.lists(contents, max_size=2).map(tuple), then_flush),
        st.builds(Touch, rows, then_flush),
    ],
    "move": [
        st.builds(Move, rows, indexes, rows, then_flush),
        st.builds(Remove, rows, indexes, then_flush),
        st.builds(SetNone, rows, then_flush),
        st.builds(Reattach, rows, indexes, then_flush),
        st.builds(Merge, rows, rows, then_flush),
    ],
    "delete": [st.builds(Delete, rows, then_flush)],
    "flush": [st.just(Flush())],
    "commit": [st.just(Commit())],
    "rollback": [st.just(Rollback())],
    "savepoint": [
        st.just(BeginSavepoint()),
        st.just(RollbackSavepoint()),
        st.just(ReleaseSavepoint()),
    ],
    "storage fault": [
        st.builds(
            StorageFault,
            st.sampled_from(["put", "part", "delete"]),
            st.integers(1, 3),
            st.integers(1, 2),
        )
    ],
    "database fault": [st.builds(DatabaseFault, st.sampled_from(["before_commit", "commit"]))],
    # COMMIT sent, outcome unknown: on PostgreSQL only (`plans(lost_commits=True)`)
    "lost commit": [st.builds(LostCommit, st.sampled_from(["reply", "request"]))],
    "crash": [st.just(Crash())],
}
ALWAYS = ("add", "commit")


@dataclass(frozen=True)
class Plan:
    """Rows committed before the script starts (without faults), then the script."""

    setup: tuple[Add, ...]
    ops: tuple[Operation, ...]


@st.composite
def plans(draw: st.DrawFn, lost_commits: bool = False) -> Plan:
    setup = draw(st.lists(adds, min_size=1, max_size=3))
    optional = sorted(set(FAMILIES) - set(ALWAYS) - (set() if lost_commits else {"lost commit"}))
    families = [*ALWAYS, *draw(st.lists(st.sampled_from(optional), min_size=1, unique=True))]
    if "savepoint" not in families and draw(st.booleans()):
        families.append("savepoint")  # where most of the bookkeeping is: in half the scripts
    if lost_commits and "lost commit" not in families and draw(st.booleans()):
        families.append("lost commit")  # the fault only PostgreSQL can have: in 3/4 of them
    steps = st.one_of([step for family in families for step in FAMILIES[family]])
    ops = draw(st.lists(steps, min_size=6, max_size=40))
    return Plan(tuple(setup), tuple(ops))


# -- sessions, sync or async -----------------------------------------------------------------------
class Driver(ABC):
    is_async: ClassVar[bool]

    @property
    @abstractmethod
    def sync_session(self) -> Session: ...

    def add(self, row: Item) -> None:
        self.sync_session.add(row)

    @abstractmethod
    async def load(self, row: Item) -> None:
        """Make the row's attributes usable without I/O."""

    @abstractmethod
    async def all_rows(self) -> list[Item]: ...

    @abstractmethod
    async def commit(self) -> None: ...

    @abstractmethod
    async def flush(self) -> None: ...

    @abstractmethod
    async def rollback(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def delete(self, row: Item) -> None: ...

    @abstractmethod
    async def begin_nested(self) -> Savepoint: ...


class SyncDriver(Driver):
    """A plain `Session` (expiring on commit, autoflushing: the defaults)."""

    is_async = False

    def __init__(self, engine: Engine) -> None:
        self.session = ScriptSession(engine)

    @property
    def sync_session(self) -> Session:
        return self.session

    async def load(self, row: Item) -> None:
        pass  # lazy loading does it

    async def all_rows(self) -> list[Item]:
        return list(self.session.scalars(select(Item).order_by(Item.id)))

    async def commit(self) -> None:
        self.session.commit()

    async def flush(self) -> None:
        self.session.flush()

    async def rollback(self) -> None:
        self.session.rollback()

    async def close(self) -> None:
        self.session.close()

    async def delete(self, row: Item) -> None:
        if inspect(row).pending:
            self.session.expunge(row)
        else:
            self.session.delete(row)

    async def begin_nested(self) -> Savepoint:
        return SyncSavepoint(self.session.begin_nested())


class AsyncDriver(Driver):
    """An `AsyncSession`: every flush and commit hook runs in the greenlet bridge."""

    is_async = True

    def __init__(self, engine: AsyncEngine) -> None:
        self.session = AsyncSession(
            engine, expire_on_commit=False, sync_session_class=ScriptSession
        )

    @property
    def sync_session(self) -> Session:
        return self.session.sync_session

    async def load(self, row: Item) -> None:
        state = inspect(row)
        if state.persistent and state.expired_attributes:
            await self.session.refresh(row, attribute_names=list(state.expired_attributes))

    async def all_rows(self) -> list[Item]:
        return list(await self.session.scalars(select(Item).order_by(Item.id)))

    async def commit(self) -> None:
        await self.session.commit()

    async def flush(self) -> None:
        await self.session.flush()

    async def rollback(self) -> None:
        await self.session.rollback()

    async def close(self) -> None:
        await self.session.close()

    async def delete(self, row: Item) -> None:
        if inspect(row).pending:
            self.session.expunge(row)
        else:
            await self.session.delete(row)

    async def begin_nested(self) -> Savepoint:
        return AsyncSavepoint(await self.session.begin_nested())


# -- storage that reports to the script ------------------------------------------------------------
class RecordingBackend(FaultInjectingBackend):
    """Injects faults, and tells the running script about every put and delete."""

    def __init__(self, inner: ObstoreBackend, script: Script) -> None:
        super().__init__(inner)
        self.script = script
        self.blackout = False  # a crashed process: deletes never reach the store
        self.twins: Counter[str] = Counter()  # sync and async calls, told apart

    def put(self, path: str, body: UploadBody, **kwargs: Any) -> WriteResult:
        self.twins["sync"] += 1
        result = super().put(path, body, **kwargs)
        self.script.uploaded(path)
        return result

    async def put_async(self, path: str, body: UploadBody, **kwargs: Any) -> WriteResult:
        self.twins["async"] += 1
        result = await super().put_async(path, body, **kwargs)
        self.script.uploaded(path)
        return result

    def delete(self, paths: str | Sequence[str]) -> None:
        self.twins["sync"] += 1
        batch = self.script.deleting(paths)
        if self.blackout:
            self.script.allowed.update(batch)
            return
        try:
            super().delete(paths)
        except InjectedFault:
            self.script.allowed.update(batch)
            raise
        self.script.ever_deleted.update(batch)

    async def delete_async(self, paths: str | Sequence[str]) -> None:
        self.twins["async"] += 1
        batch = self.script.deleting(paths)
        if self.blackout:
            self.script.allowed.update(batch)
            return
        try:
            await super().delete_async(paths)
        except InjectedFault:
            self.script.allowed.update(batch)
            raise
        self.script.ever_deleted.update(batch)


# -- one generated script --------------------------------------------------------------------------
@dataclass(frozen=True)
class Committed:
    path: str
    size: int | None
    filename: str
    checksum: str | None


class Harness:
    """Engines and counters shared by every script of one test."""

    def __init__(
        self,
        check: Engine,
        new_driver: Callable[[], Driver],
        session_engine: Engine,
        stats: Counter[str],
        proxy: PgProxy | None = None,
    ) -> None:
        self.check = check
        self.new_driver = new_driver
        self.stats = stats
        self.proxy = proxy  # between the session and PostgreSQL: loses COMMITs on demand
        self.lost_seen = (0, 0)
        self.fail_next_commit = False
        event.listen(session_engine, "commit", self._on_commit)

    def commits_lost(self) -> int:
        """COMMITs the proxy has lost so far (their reply or themselves), counted."""
        proxy = self.proxy
        if proxy is None:
            return 0
        replies, requests = proxy.replies_lost, proxy.requests_lost
        self.stats["fault.lost_reply"] += replies - self.lost_seen[0]
        self.stats["fault.lost_request"] += requests - self.lost_seen[1]
        self.lost_seen = (replies, requests)
        return replies + requests

    def _on_commit(self, connection: Any) -> None:
        if self.fail_next_commit:
            self.fail_next_commit = False
            self.stats["fault.commit"] += 1
            raise InjectedCommitFault("COMMIT")

    def reset(self) -> None:
        self.fail_next_commit = False
        if self.proxy is not None:
            self.proxy.disarm()
        with self.check.begin() as conn:
            conn.execute(delete(Item.__table__))

    def committed(self) -> tuple[list[str], list[Committed]]:
        """Names and file references of the committed rows."""
        table = Item.__table__
        with self.check.connect() as conn:
            found = conn.execute(select(table.c.name, table.c.file, table.c.pages)).all()
        names, files = [], []
        for name, file, pages in found:
            names.append(name)
            for stored in [file, *(pages or [])]:
                if stored is not None:
                    assert stored.path is not None
                    files.append(
                        Committed(stored.path, stored.size, stored.filename, stored.checksum)
                    )
        return names, files

    def committed_paths(self) -> set[str]:
        return {c.path for c in self.committed()[1]}


class Script:
    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.stats = harness.stats
        self.backend = RecordingBackend(ObstoreBackend(BACKEND, "memory://"), self)
        self.driver = harness.new_driver()
        self.rows: list[Item] = []
        self.levels: list[set[str]] = [set()]  # uploads of the transaction, by SAVEPOINT
        # files taken out of rows in this transaction, by SAVEPOINT; once the transaction
        # or SAVEPOINT ends they may be gone (or still referenced), so they are dropped
        self.detached: list[list[FileObject]] = [[]]
        self.savepoints: list[Savepoint] = []
        self.allowed: set[str] = set()  # orphans accounted for by injected faults
        self.ever_deleted: set[str] = set()
        self.expected: dict[str, str] = {}  # filename -> sha256 of the content given
        self.verified: dict[str, str | None] = {}  # path -> etag when first verified
        self.violations: list[str] = []
        self.put_log: list[str] = []
        self.deletes_issued = 0  # delete calls the library made
        self.duplicate_added = False
        self.counter = itertools.count()
        self.injected_seen = 0
        self.flushed_puts = 0  # puts done by the flushes that succeeded
        self.driver.sync_session.info[_FLUSHED] = self.flushed

    # -- reports from storage ----------------------------------------------------------------
    def flushed(self) -> None:
        self.flushed_puts = len(self.put_log)

    def uploaded(self, path: str) -> None:
        self.put_log.append(path)
        self.levels[-1].add(path)

    def deleting(self, paths: str | Sequence[str]) -> list[str]:
        self.deletes_issued += 1
        batch = [paths] if isinstance(paths, str) else list(paths)
        referenced = set(batch) & self.harness.committed_paths()
        if referenced:  # I2, checked when the delete is issued
            self.violations.append(f"I2: deleting committed objects {sorted(referenced)}")
        return batch

    # -- content ------------------------------------------------------------------------------
    def new_file(self, content: Content) -> FileObject:
        n = next(self.counter)
        filename = f"f{n}.bin"
        data = random.Random(n).randbytes(content.size)
        self.expected[filename] = hashlib.sha256(data).hexdigest()
        source: Any
        if content.kind == "bytes":
            source = data
        elif content.kind == "stream":
            source = (data[i : i + 100] for i in range(0, len(data), 100))
        else:
            source = io.BytesIO(data)
        return FileObject(filename=filename, content=source)

    # -- rows -----------------------------------------------------------------------------------
    def live_rows(self) -> list[Item]:
        session = self.driver.sync_session
        live = []
        for row in self.rows:
            state = inspect(row)
            if (state.persistent or state.pending) and row not in session.deleted:
                live.append(row)
        return live

    async def row(self, index: int) -> Item | None:
        live = self.live_rows()
        if not live:
            self.stats["skipped"] += 1
            return None
        row = live[index % len(live)]
        await self.driver.load(row)
        return row

    async def other_row(self, row: Item, index: int) -> Item | None:
        live = [r for r in self.live_rows() if r is not row]
        if not live:
            self.stats["skipped"] += 1
            return None
        other = live[index % len(live)]
        await self.driver.load(other)
        return other

    def taken_names(self) -> list[str]:
        pending = [r.name for r in self.driver.sync_session.new if isinstance(r, Item)]
        return self.harness.committed()[0] + pending

    # -- running ----------------------------------------------------------------------------------
    async def run(self, plan: Plan) -> None:
        self.harness.reset()
        self.stats["scripts"] += 1
        with storages.temporary(self.backend):
            try:
                for add in plan.setup:
                    await self.apply(add)
                await self.apply(Commit())
                self.verify(None)
                for op in plan.ops:
                    self.stats["steps"] += 1
                    self.stats[f"op.{type(op).__name__}"] += 1
                    await self.step(op)
                    self.count_faults()
                    self.verify(op)
                await self.finish()
            finally:
                await self.driver.close()

    async def step(self, op: Operation) -> None:
        puts_before = len(self.put_log)
        lost_before = self.harness.commits_lost()
        try:
            await self.apply(op)
            if getattr(op, "flush", False):
                await self.driver.flush()
        except StorageError as exc:
            self.stats[f"error.{type(exc).__name__}"] += 1
            # The flush failed before any SQL: none of its uploads may stay behind (an
            # autoflush of the same step may have succeeded before it).
            failed_flush = self.put_log[max(puts_before, self.flushed_puts) :]
            left = set(failed_flush) & self.stored().keys() - self.allowed
            assert not left, f"a failed flush left its uploads behind: {sorted(left)}"
        except IntegrityError:
            assert self.duplicate_added, "unexpected IntegrityError"
            self.stats["fault.unique"] += 1
            await self.rollback_innermost()
        except InjectedCommitFault as exc:
            if str(exc) == "before_commit":
                self.stats["fault.before_commit"] += 1
            await self.rollback_all()
        except DBAPIError as exc:
            if not exc.connection_invalidated or self.harness.commits_lost() == lost_before:
                raise
            await self.outcome_unknown()

    async def apply(self, op: Operation) -> None:
        driver = self.driver
        if isinstance(op, Add):
            taken = self.taken_names() if op.duplicate_name else []
            name = taken[0] if taken else f"n{next(self.counter)}"
            self.duplicate_added |= bool(taken)
            row = Item(
                name=name,
                file=self.new_file(op.file) if op.file else None,
                pages=[self.new_file(c) for c in op.pages],
            )
            driver.add(row)
            self.rows.append(row)
        elif isinstance(op, Replace):
            if row := await self.row(op.row):
                self.detach(row.file)
                row.file = self.new_file(op.file)
        elif isinstance(op, SetNone):
            if row := await self.row(op.row):
                self.detach(row.file)
                row.file = None
        elif isinstance(op, Touch):
            if row := await self.row(op.row):
                stamp = str(next(self.counter))
                if row.file is not None:
                    row.file.metadata["touched"] = stamp
                if row.pages:
                    row.pages[0].metadata["touched"] = stamp
        elif isinstance(op, Append):
            if row := await self.row(op.row):
                row.pages.append(self.new_file(op.file))
        elif isinstance(op, Remove):
            if (row := await self.row(op.row)) and row.pages:
                page = row.pages[op.index % len(row.pages)]
                row.pages.remove(page)
                self.detach(page)
        elif isinstance(op, SetItem):
            if (row := await self.row(op.row)) and row.pages:
                self.detach(row.pages[op.index % len(row.pages)])
                row.pages[op.index % len(row.pages)] = self.new_file(op.file)
        elif isinstance(op, Reattach):
            detached = [f for level in self.detached for f in level]
            if detached and (row := await self.row(op.row)):
                file = detached[op.index % len(detached)]
                self.detached = [[f for f in level if f is not file] for level in self.detached]
                row.pages.append(file)
        elif isinstance(op, ReassignPages):
            if row := await self.row(op.row):
                row.pages = [*row.pages[:1], *(self.new_file(c) for c in op.files)]
        elif isinstance(op, Move):
            if (row := await self.row(op.row)) and row.pages:
                target = await self.other_row(row, op.to) or row
                target.pages.append(row.pages.pop(op.index % len(row.pages)))
        elif isinstance(op, Merge):
            if (row := await self.row(op.row)) and (target := await self.other_row(row, op.into)):
                target.pages.extend(row.pages)
                if row.file is not None:
                    target.file = row.file
                await driver.delete(row)
        elif isinstance(op, Delete):
            if row := await self.row(op.row):
                await driver.delete(row)
        elif isinstance(op, Flush):
            await driver.flush()
        elif isinstance(op, Commit):
            await driver.commit()
            self.stats["commits"] += 1
            self.transaction_ended()
        elif isinstance(op, Rollback):
            await self.rollback_all()
        elif isinstance(op, BeginSavepoint):
            if len(self.savepoints) < MAX_SAVEPOINTS:
                self.savepoints.append(await driver.begin_nested())
                self.levels.append(set())
                self.detached.append([])
        elif isinstance(op, RollbackSavepoint):
            if self.savepoints:
                await self.rollback_innermost()
        elif isinstance(op, ReleaseSavepoint):
            if self.savepoints:
                await self.savepoints[-1].commit()
                self.savepoints.pop()
                released = self.levels.pop()
                self.levels[-1] |= released
                self.detached[-2].extend(self.detached.pop())
        elif isinstance(op, StorageFault):
            self.backend.fail(op.operation, nth=op.nth, times=op.times)
        elif isinstance(op, DatabaseFault):
            if op.kind == "commit":
                self.harness.fail_next_commit = True
            else:
                driver.sync_session.info[_ARM_BEFORE_COMMIT] = True
        elif isinstance(op, LostCommit):
            proxy = self.harness.proxy
            assert proxy is not None
            if op.lose == "reply":
                proxy.lose_commit_replies(1)
            else:
                proxy.lose_commits(1)
            try:
                await self.apply(Commit())
            finally:
                proxy.disarm()  # no COMMIT went out: nothing to commit, or the flush failed
        elif isinstance(op, Crash):
            await self.crash()
        else:  # pragma: no cover
            raise AssertionError(op)

    # -- transactions ------------------------------------------------------------------------------
    def detach(self, file: FileObject | None) -> None:
        if file is not None and not any(file is f for level in self.detached for f in level):
            self.detached[-1].append(file)

    def transaction_ended(self) -> None:
        self.levels = [set()]
        self.detached = [[]]
        self.savepoints = []
        self.duplicate_added = False
        self.driver.sync_session.info.pop(_ARM_BEFORE_COMMIT, None)

    def assert_undone(self, uploads: set[str], what: str) -> None:
        left = uploads & self.stored().keys() - self.allowed
        assert not left, f"{what} left its uploads behind: {sorted(left)}"

    async def rollback_innermost(self) -> None:
        if not self.savepoints:
            await self.rollback_all()
            return
        await self.savepoints.pop().rollback()
        self.detached.pop()
        self.stats["savepoint rollbacks"] += 1
        self.assert_undone(self.levels.pop(), "a SAVEPOINT rollback")

    async def rollback_all(self) -> None:
        await self.driver.rollback()
        self.stats["rollbacks"] += 1
        self.assert_undone(set().union(*self.levels), "a rollback")
        self.transaction_ended()

    async def outcome_unknown(self) -> None:
        """COMMIT was sent and the connection died: whether it committed is unknown.

        The session rolls back; the library must issue no delete at all (the uploads may
        be referenced, the replaced files may still be), and whatever is then stored and
        not committed is left for the garbage collector.
        """
        deletes_before = self.deletes_issued
        await self.driver.rollback()
        assert self.deletes_issued == deletes_before, "a commit of unknown outcome deleted files"
        self.allowed |= self.stored().keys() - self.harness.committed_paths()
        self.stats["commits of unknown outcome"] += 1
        self.transaction_ended()
        self.verify(None)  # I1 and I2 hold whether or not the server committed
        # the rows the session held are expired or transient now: load them again
        self.rows = await self.driver.all_rows()
        await self.driver.rollback()

    async def crash(self) -> None:
        """The process dies: the database rolls back, storage cleanup never happens."""
        self.stats["fault.crash"] += 1
        self.backend.blackout = True
        try:
            await self.driver.close()
        finally:
            self.backend.blackout = False
        self.allowed |= set().union(*self.levels)
        self.transaction_ended()
        self.driver = self.harness.new_driver()  # a new process
        self.driver.sync_session.info[_FLUSHED] = self.flushed
        self.rows = await self.driver.all_rows()
        await self.driver.rollback()  # do not keep the loading transaction open

    async def finish(self) -> None:
        if self.driver.sync_session.in_transaction():
            await self.rollback_all()
        self.verify(None)
        orphans = self.stored().keys() - self.harness.committed_paths()
        assert orphans <= self.allowed
        self.stats["orphans for the garbage collector"] += len(orphans)
        # the session hooks used obstore's API of the session's kind, never the other
        used, other = ("async", "sync") if self.driver.is_async else ("sync", "async")
        assert self.backend.twins[other] == 0, self.backend.twins
        self.stats[f"{used} obstore calls"] += self.backend.twins[used]

    # -- invariants --------------------------------------------------------------------------------
    def stored(self) -> dict[str, Any]:
        return {info.path: info for info in self.backend.inner.list_objects()}

    def count_faults(self) -> None:
        for fault in self.backend.injected[self.injected_seen :]:
            self.stats[f"fault.{fault.operation}"] += 1
        self.injected_seen = len(self.backend.injected)

    def verify(self, op: Operation | None) -> None:
        assert not self.violations, self.violations
        stored = self.stored()
        _names, committed = self.harness.committed()
        committed_paths = {c.path for c in committed}
        for ref in committed:  # I1
            info = stored.get(ref.path)
            assert info is not None, f"I1: committed {ref.path} is missing (after {op})"
            assert info.size == ref.size, f"I1: size of {ref.path}"
            if ref.path not in self.verified:
                expected = self.expected[ref.filename]
                data = self.backend.inner.get_bytes(ref.path)
                assert hashlib.sha256(data).hexdigest() == expected, f"I1: bytes of {ref}"
                assert ref.checksum == f"sha256:{expected}", f"I1: checksum of {ref}"
                self.verified[ref.path] = info.etag
            else:
                assert info.etag == self.verified[ref.path], f"{ref.path} was overwritten"
        deleted = committed_paths & self.ever_deleted  # I2, over the whole history
        assert not deleted, f"I2: committed objects were deleted: {sorted(deleted)}"
        in_flight = set().union(*self.levels)
        leaked = stored.keys() - committed_paths - in_flight - self.allowed  # I3
        assert not leaked, f"I3: leaked {sorted(leaked)} (after {op})"
        session = self.driver.sync_session
        if not session.in_transaction():
            assert self.levels == [set()]
            assert not self.savepoints
        nested = session.get_nested_transaction()
        depth = 0
        while nested is not None:
            depth += nested.nested
            nested = nested.parent
        assert depth == len(self.savepoints), "the script lost track of its SAVEPOINTs"


# -- engines ---------------------------------------------------------------------------------------
def _sqlite_session_engine(engine: Engine) -> None:
    # SAVEPOINT-capable (SQLAlchemy's recipe), WAL so that the checking engine reads
    # committed data while a transaction is open, no fsync.
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=OFF")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN")


def _sqlite_check_engine(path: Path) -> Engine:
    engine = create_engine(f"sqlite:///{path}")

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.close()

    return engine


SETTINGS = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
    "print_blob": True,
}


class Loop:
    """One event loop for every script of a test (`asyncio.Runner` needs Python 3.11)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        return self.loop.run_until_complete(coroutine)

    def __enter__(self) -> Loop:
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        finally:
            self.loop.close()


_SMALL = Content("bytes", 10)
REGRESSIONS: dict[str, Plan] = {
    # Bugs these scripts found, replayed on every run on top of the generated scripts.
    "in-place change after a replace lost the old file": Plan(
        (Add(_SMALL, (_SMALL,), False),),
        (Replace(0, _SMALL), Touch(0), ReassignPages(0, (_SMALL,)), Append(0, _SMALL), Commit()),
    ),
    "retrying a failed one-shot stream stored what was left of it": Plan(
        (Add(None, (), False),),
        (StorageFault("put", 1, 1), Replace(0, Content("stream", 600)), Commit(), Commit()),
    ),
    "retrying a failed seekable upload stored an empty object": Plan(
        (Add(None, (), False),),
        (StorageFault("part", 1, 1), Replace(0, Content("file", 600)), Commit(), Commit()),
    ),
    "a failed upload forgot what the flush replaced": Plan(
        (Add(_SMALL, (_SMALL,), False),),
        (
            StorageFault("put", 2, 1),
            Replace(0, _SMALL),
            Remove(0, 0),
            Append(0, _SMALL),
            Commit(),
            Commit(),
        ),
    ),
    "files handed over by a deleted row were deleted": Plan(
        (Add(_SMALL, (_SMALL,), False), Add(None, (), False)),
        (Merge(0, 0), Commit()),
    ),
    "a pending file handed over by a deleted row was deleted": Plan(
        (Add(None, (), False), Add(None, (), False)),
        (Replace(0, _SMALL), Merge(0, 0), Commit()),
    ),
    "a SAVEPOINT rollback did not restore the delete it had cancelled": Plan(
        (Add(None, (_SMALL,), False), Add(None, (), False)),
        (Remove(0, 0), BeginSavepoint(), Reattach(1, 0, flush=True), RollbackSavepoint(), Commit()),
    ),
}


LOST_COMMIT_REGRESSIONS: dict[str, Plan] = {
    # COMMIT sent, reply lost: the server committed everything below, the session rolls
    # back; before the fix the rollback deleted the uploads the committed rows reference.
    "a lost COMMIT reply deleted the uploads of a committed transaction": Plan(
        (Add(_SMALL, (_SMALL,), False),),
        (
            BeginSavepoint(),
            Replace(0, _SMALL),
            ReleaseSavepoint(),
            BeginSavepoint(),
            Append(0, Content("stream", 600)),
            RollbackSavepoint(),
            Add(_SMALL, (), False),
            Remove(0, 0),
            LostCommit("reply"),
            Replace(0, _SMALL),
            Commit(),
        ),
    ),
    # COMMIT cut before the server got it: nothing committed; deleting what the
    # transaction replaced would break the old rows.
    "a lost COMMIT request deleted files the old rows still reference": Plan(
        (Add(_SMALL, (_SMALL,), False), Add(_SMALL, (), False)),
        (Replace(0, _SMALL), Delete(1), LostCommit("request"), Commit()),
    ),
}


def _run_scripts(
    harness: Harness, runner: Loop, max_examples: int, *, lost_commits: bool = False
) -> None:
    """Run the regressions and `max_examples` generated scripts.

    `lost_commits` adds the faults that need the PostgreSQL proxy (`harness.proxy`).
    """

    def run(plan: Plan) -> None:
        runner.run(Script(harness).run(plan))

    regressions = {**REGRESSIONS, **(LOST_COMMIT_REGRESSIONS if lost_commits else {})}
    for plan in regressions.values():
        run = example(plan)(run)
    strategy = plans(lost_commits=lost_commits)
    settings(max_examples=max_examples, **SETTINGS)(given(strategy)(run))()  # type: ignore[arg-type]


def _variant_stats(stats: dict[str, Counter[str]], variant: str) -> Counter[str]:
    return stats.setdefault(variant, Counter())


# -- the tests -------------------------------------------------------------------------------------
def test_sqlite_sync(tmp_path: Path, lifecycle_stats: dict[str, Counter[str]]) -> None:
    path = tmp_path / "random.sqlite"
    check = _sqlite_check_engine(path)
    engine = create_engine(f"sqlite:///{path}")
    _sqlite_session_engine(engine)
    Base.metadata.create_all(check)
    harness = Harness(
        check, lambda: SyncDriver(engine), engine, _variant_stats(lifecycle_stats, "sqlite-sync")
    )
    try:
        with Loop() as runner:
            _run_scripts(harness, runner, examples(1000))
    finally:
        engine.dispose()
        check.dispose()


def test_sqlite_async(tmp_path: Path, lifecycle_stats: dict[str, Counter[str]]) -> None:
    path = tmp_path / "random.sqlite"
    check = _sqlite_check_engine(path)
    Base.metadata.create_all(check)
    with Loop() as runner:
        engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
        _sqlite_session_engine(engine.sync_engine)
        harness = Harness(
            check,
            lambda: AsyncDriver(engine),
            engine.sync_engine,
            _variant_stats(lifecycle_stats, "sqlite-async"),
        )
        try:
            _run_scripts(harness, runner, examples(200))
        finally:
            runner.run(engine.dispose())
            check.dispose()


@pytest.fixture
def pg_url(pg_engine: Engine) -> Iterator[str]:
    """The URL of the private PostgreSQL database, with the scripts' table created."""
    Base.metadata.drop_all(pg_engine)
    Base.metadata.create_all(pg_engine)
    yield pg_engine.url.render_as_string(hide_password=False)
    Base.metadata.drop_all(pg_engine)


def _pg_check_engine(url: str) -> Engine:
    return create_engine(url, connect_args={"options": "-c lock_timeout=5000"})


@pytest.fixture
def pg_proxy(pg_engine: Engine) -> Iterator[PgProxy]:
    """A proxy in front of the test server that loses COMMITs on demand."""
    url = pg_engine.url
    with PgProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        yield proxy


def test_postgresql_sync(
    pg_url: str, pg_proxy: PgProxy, lifecycle_stats: dict[str, Counter[str]]
) -> None:
    """A `Session` on psycopg, through the proxy."""
    check = _pg_check_engine(pg_url)
    engine = create_engine(pg_proxy.url(pg_url))
    harness = Harness(
        check,
        lambda: SyncDriver(engine),
        engine,
        _variant_stats(lifecycle_stats, "postgresql-sync"),
        pg_proxy,
    )
    try:
        with Loop() as runner:
            _run_scripts(harness, runner, examples(100), lost_commits=True)
    finally:
        engine.dispose()
        check.dispose()


def test_postgresql_async(
    pg_url: str, pg_proxy: PgProxy, lifecycle_stats: dict[str, Counter[str]]
) -> None:
    """An `AsyncSession` on asyncpg, through the proxy."""
    check = _pg_check_engine(pg_url)
    with Loop() as runner:
        engine = create_async_engine(pg_proxy.url(pg_url.replace("+psycopg", "+asyncpg", 1)))
        harness = Harness(
            check,
            lambda: AsyncDriver(engine),
            engine.sync_engine,
            _variant_stats(lifecycle_stats, "postgresql-async"),
            pg_proxy,
        )
        try:
            _run_scripts(harness, runner, examples(60), lost_commits=True)
        finally:
            runner.run(engine.dispose())
            check.dispose()
