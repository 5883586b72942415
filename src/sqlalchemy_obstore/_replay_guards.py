"""Replay guards: remember which upload tickets were redeemed, so each is redeemed once.

`UploadTickets` claims a ticket's id in its guard before redeeming it. The guards here
are the public ones ([`MemoryReplayGuard`][sqlalchemy_obstore.tickets.MemoryReplayGuard],
[`SqlReplayGuard`][sqlalchemy_obstore.tickets.SqlReplayGuard]) and the protocol a custom
guard follows; they are documented, and imported, from `sqlalchemy_obstore.tickets`.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ._errors import ConfigurationError
from ._io import run_on_engine

if TYPE_CHECKING:
    from sqlalchemy import MetaData, Table
    from sqlalchemy.engine import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ("Clock", "MemoryReplayGuard", "ReplayGuard", "SqlReplayGuard", "utcnow")

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """The current time, timezone-aware (the default clock)."""
    return datetime.now(timezone.utc)


def _naive_utc(moment: datetime) -> datetime:
    """A timezone-aware moment as naive UTC (what both SQLite and PostgreSQL store alike)."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(timezone.utc).replace(tzinfo=None)


@runtime_checkable
class ReplayGuard(Protocol):
    """Remembers which tickets were redeemed, so each one is redeemed once.

    `claim` records a ticket id and answers whether this was the first claim; it must be
    atomic (two concurrent claims of one id: exactly one wins). `release` forgets a
    claim again (used when the object was not uploaded yet, so the client may retry).
    `expires_at` is the ticket's redeem deadline: after it the ticket is refused anyway,
    so the guard may forget the id. `is_claimed` answers whether an id is claimed now:
    the signed-URL route asks it to refuse uploads through the URL of a ticket that was
    redeemed (the `storage_routes` of Starlette, the Litestar plugin's route).
    """

    def claim(self, ticket_id: str, expires_at: datetime) -> bool:
        """Record `ticket_id`; `True` if it was not claimed before."""
        ...

    async def claim_async(self, ticket_id: str, expires_at: datetime) -> bool:
        """Async version of `claim`."""
        ...

    def release(self, ticket_id: str) -> None:
        """Forget a claim of `ticket_id` (no error if there is none)."""
        ...

    async def release_async(self, ticket_id: str) -> None:
        """Async version of `release`."""
        ...

    def is_claimed(self, ticket_id: str) -> bool:
        """Whether `ticket_id` is claimed (redeemed, or being redeemed) right now."""
        ...

    async def is_claimed_async(self, ticket_id: str) -> bool:
        """Async version of `is_claimed`."""
        ...


class MemoryReplayGuard:
    """A replay guard in this process's memory (the default of `UploadTickets`).

    Enough for one application process. With several processes or hosts behind a
    load balancer, use [`SqlReplayGuard`][sqlalchemy_obstore.tickets.SqlReplayGuard]:
    each process would otherwise accept a ticket once.

    Ids are forgotten after their ticket's deadline, so memory stays bounded by the
    number of tickets redeemed within one ticket lifetime.

    Args:
        clock: Returns the current time (timezone-aware); for tests.

    Example:
        >>> from datetime import datetime, timedelta, timezone
        >>> guard = MemoryReplayGuard()
        >>> deadline = datetime.now(timezone.utc) + timedelta(minutes=5)
        >>> guard.claim("t1", deadline), guard.claim("t1", deadline)
        (True, False)
    """

    def __init__(self, *, clock: Clock | None = None) -> None:
        self._clock = clock or utcnow
        self._claimed: dict[str, datetime] = {}
        self._deadlines: list[tuple[datetime, str]] = []  # a heap: the next to forget first
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._claimed)

    def claim(self, ticket_id: str, expires_at: datetime) -> bool:
        """Record `ticket_id`; `True` if it was not claimed before."""
        with self._lock:
            now = self._clock()
            while self._deadlines and self._deadlines[0][0] < now:
                deadline, stale = heapq.heappop(self._deadlines)
                if self._claimed.get(stale) == deadline:
                    del self._claimed[stale]
            if ticket_id in self._claimed:
                return False
            self._claimed[ticket_id] = expires_at
            heapq.heappush(self._deadlines, (expires_at, ticket_id))
            return True

    async def claim_async(self, ticket_id: str, expires_at: datetime) -> bool:
        """Same as `claim` (no I/O involved)."""
        return self.claim(ticket_id, expires_at)

    def release(self, ticket_id: str) -> None:
        """Forget a claim of `ticket_id`."""
        with self._lock:
            self._claimed.pop(ticket_id, None)

    async def release_async(self, ticket_id: str) -> None:
        """Same as `release`."""
        self.release(ticket_id)

    def is_claimed(self, ticket_id: str) -> bool:
        """Whether `ticket_id` is claimed (and its deadline has not passed)."""
        with self._lock:
            deadline = self._claimed.get(ticket_id)
            return deadline is not None and deadline >= self._clock()

    async def is_claimed_async(self, ticket_id: str) -> bool:
        """Same as `is_claimed`."""
        return self.is_claimed(ticket_id)


class SqlReplayGuard:
    """A replay guard backed by a database table, shared by every application instance.

    A claim inserts the ticket id into a table whose primary key is that id; the
    database's unique constraint makes exactly one of several concurrent claims win,
    across processes and hosts. Expired ids are deleted from time to time (and by
    `purge()`).

    Works with a sync `Engine` (used by `redeem`) or an `AsyncEngine` (used by
    `redeem_async`; `redeem_async` with a sync engine runs the statement in a worker
    thread).

    Args:
        engine: The `Engine` or `AsyncEngine` to record claims with.
        table_name: Name of the table.
        metadata: Define the table on this `MetaData` (for example your declarative
            base's, so Alembic autogenerate picks it up); a private one by default.
        schema: Database schema of the table.
        create_table: Create the table on first use if it does not exist. Turn off when
            migrations manage it.
        purge_every: Delete expired rows after this many claims of this instance.
        clock: Returns the current time (timezone-aware); for tests.

    Raises:
        ConfigurationError: If `engine` is neither an `Engine` nor an `AsyncEngine`.

    Example:
        >>> from datetime import datetime, timedelta, timezone
        >>> from sqlalchemy import create_engine
        >>> engine = create_engine("sqlite://")
        >>> guard = SqlReplayGuard(engine)
        >>> deadline = datetime.now(timezone.utc) + timedelta(minutes=5)
        >>> guard.claim("t1", deadline), guard.claim("t1", deadline)
        (True, False)
        >>> engine.dispose()
    """

    def __init__(
        self,
        engine: Engine | AsyncEngine,
        *,
        table_name: str = "sqlalchemy_obstore_upload_tickets",
        metadata: MetaData | None = None,
        schema: str | None = None,
        create_table: bool = True,
        purge_every: int = 256,
        clock: Clock | None = None,
    ) -> None:
        from sqlalchemy import Column, DateTime, MetaData, String, Table
        from sqlalchemy.engine import Engine
        from sqlalchemy.ext.asyncio import AsyncEngine

        if not isinstance(engine, (Engine, AsyncEngine)):
            raise ConfigurationError(
                f"SqlReplayGuard needs an Engine or AsyncEngine, not {type(engine).__name__}."
            )
        self.engine = engine
        self.table: Table = Table(
            table_name,
            metadata if metadata is not None else MetaData(),
            Column("ticket_id", String(64), primary_key=True),
            Column("expires_at", DateTime(), nullable=False, index=True),
            Column("claimed_at", DateTime(), nullable=False),
            schema=schema,
        )
        self._create = create_table
        self._purge_every = max(1, purge_every)
        self._claims = 0
        self._clock = clock or utcnow
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SqlReplayGuard(table={self.table.fullname!r})"

    # statements: decided here, executed by the operations below
    def _insert(self, ticket_id: str, expires_at: datetime) -> Any:
        return self.table.insert().values(
            ticket_id=ticket_id,
            expires_at=_naive_utc(expires_at),
            claimed_at=_naive_utc(self._clock()),
        )

    def _delete(self, ticket_id: str) -> Any:
        return self.table.delete().where(self.table.c.ticket_id == ticket_id)

    def _expired(self) -> Any:
        return self.table.delete().where(self.table.c.expires_at < _naive_utc(self._clock()))

    def _due_for_purge(self) -> bool:
        with self._lock:
            self._claims += 1
            return self._claims % self._purge_every == 0

    def _sync_engine(self, operation: str) -> Engine:
        from sqlalchemy.engine import Engine

        if not isinstance(self.engine, Engine):
            raise ConfigurationError(
                f"This SqlReplayGuard has an AsyncEngine: {operation} needs the async "
                "variant (UploadTickets.redeem_async, guard.claim_async)."
            )
        return self.engine

    def _create_table(self, engine: Engine) -> None:
        from sqlalchemy.exc import DBAPIError

        with engine.connect() as connection:
            try:
                self.table.create(connection, checkfirst=True)
            except DBAPIError:
                # Another instance created it between the check and the CREATE.
                connection.rollback()
                if not connection.dialect.has_table(
                    connection, self.table.name, schema=self.table.schema
                ):
                    raise
            else:
                connection.commit()
        self._create = False

    def _claim(self, engine: Engine, ticket_id: str, expires_at: datetime) -> bool:
        from sqlalchemy.exc import IntegrityError

        if self._create:
            self._create_table(engine)
        try:
            with engine.begin() as connection:
                connection.execute(self._insert(ticket_id, expires_at))
        except IntegrityError:
            return False
        if self._due_for_purge():
            self._purge(engine)
        return True

    def _release(self, engine: Engine, ticket_id: str) -> None:
        with engine.begin() as connection:
            connection.execute(self._delete(ticket_id))

    def _is_claimed(self, engine: Engine, ticket_id: str) -> bool:
        from sqlalchemy import select

        if self._create:
            self._create_table(engine)
        lookup = select(self.table.c.ticket_id).where(self.table.c.ticket_id == ticket_id)
        with engine.connect() as connection:
            return connection.execute(lookup).first() is not None

    def _purge(self, engine: Engine) -> int:
        with engine.begin() as connection:
            return int(connection.execute(self._expired()).rowcount)

    # Each operation is written once, over a sync `Engine`. The async methods run it with
    # `_io.run_on_engine`: an AsyncEngine's sync engine in SQLAlchemy's greenlet bridge,
    # a sync Engine (whose driver blocks) in a worker thread.
    def create_table(self) -> None:
        """Create the table now if it does not exist (sync engine)."""
        self._create_table(self._sync_engine("create_table"))

    async def create_table_async(self) -> None:
        """Create the table now if it does not exist."""
        await run_on_engine(self.engine, self._create_table)

    def claim(self, ticket_id: str, expires_at: datetime) -> bool:
        """Insert `ticket_id`; `True` if no row had it (this claim won)."""
        return self._claim(self._sync_engine("claim"), ticket_id, expires_at)

    async def claim_async(self, ticket_id: str, expires_at: datetime) -> bool:
        """Async version of `claim`."""
        return await run_on_engine(self.engine, self._claim, ticket_id, expires_at)

    def release(self, ticket_id: str) -> None:
        """Delete the claim of `ticket_id`."""
        self._release(self._sync_engine("release"), ticket_id)

    async def release_async(self, ticket_id: str) -> None:
        """Async version of `release`."""
        await run_on_engine(self.engine, self._release, ticket_id)

    def is_claimed(self, ticket_id: str) -> bool:
        """Whether a row records `ticket_id`."""
        return self._is_claimed(self._sync_engine("is_claimed"), ticket_id)

    async def is_claimed_async(self, ticket_id: str) -> bool:
        """Async version of `is_claimed`."""
        return await run_on_engine(self.engine, self._is_claimed, ticket_id)

    def purge(self) -> int:
        """Delete the rows of tickets past their deadline; returns how many."""
        return self._purge(self._sync_engine("purge"))

    async def purge_async(self) -> int:
        """Async version of `purge`."""
        return await run_on_engine(self.engine, self._purge)
