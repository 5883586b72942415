"""Direct-to-storage uploads: signed URLs and forms with tamper-proof upload tickets.

The bytes of a large file need not pass through the application server. The server
*issues* an [`UploadGrant`][sqlalchemy_obstore.tickets.UploadGrant]: how to upload a
fresh key (a signed PUT URL; on S3 a POST form whose policy the store enforces, or a
multipart upload whose part URLs are signed on demand) plus a *ticket*, a compact,
URL-safe token signed with HMAC-SHA256 that records the backend, the key, the display
filename, the size and type limits and a redeem deadline. The client uploads as the
grant says and hands the ticket back (for a multipart upload, the server completes it
first: [`complete`][sqlalchemy_obstore.tickets.UploadTickets.complete]); the server
*redeems* it:

1. the signature is checked in constant time (a forged or tampered ticket is refused
   with [`InvalidUploadTicketError`][sqlalchemy_obstore.InvalidUploadTicketError]) and
   the deadline is checked
   ([`ExpiredUploadTicketError`][sqlalchemy_obstore.ExpiredUploadTicketError]);
2. the ticket is marked used in a replay guard (a second redeem raises
   [`ReplayedUploadTicketError`][sqlalchemy_obstore.ReplayedUploadTicketError]);
3. a head request confirms the object exists (if the client never uploaded,
   [`ObjectNotFoundError`][sqlalchemy_obstore.ObjectNotFoundError] is raised and the
   ticket is *not* used up, so the client may upload and redeem again);
4. its size is checked against the limits and, when the column requires content
   types, the first bytes are read and sniffed
   ([`detect_content_type`][sqlalchemy_obstore.validation.detect_content_type]); on
   stores that serve objects themselves (S3, GCS, Azure), an object the store would
   display inline although its type is not a passive one (the client left out the
   grant's `Content-Disposition`) is refused too;
5. on a violation the object is deleted and the typed error is raised
   ([`FileTooLargeError`][sqlalchemy_obstore.FileTooLargeError],
   [`FileTooSmallError`][sqlalchemy_obstore.FileTooSmallError],
   [`InvalidContentTypeError`][sqlalchemy_obstore.InvalidContentTypeError]);
6. otherwise a saved [`FileObject`][sqlalchemy_obstore.FileObject] is returned (size,
   etag, version, content type, last-modified), ready to be assigned to a column.

On local files and memory, the PUT URL is signed by an
[`HmacUrlSigner`][sqlalchemy_obstore.signing.HmacUrlSigner] with the ticket's `max_size`
and id inside the signature: the web integrations' signed-URL route, given the
`UploadTickets` (`tickets=`), refuses bytes past the limit while they stream and any
upload once the ticket is redeemed. On S3 (by default) the grant is a POST form whose
signed policy makes the store refuse a body outside the size limits, another key, type
or disposition, or an extra field; above `multipart_threshold` it is a multipart upload
whose part URLs each accept exactly their planned length. Both are signed by the
library (SigV4) with the store's credentials; see `UploadTickets(s3_method=...)`.

Replay guards: [`MemoryReplayGuard`][sqlalchemy_obstore.tickets.MemoryReplayGuard]
(the default) remembers used tickets in one process;
[`SqlReplayGuard`][sqlalchemy_obstore.tickets.SqlReplayGuard] records them in a
database table with a unique key, so several application instances share it.

Example:
    >>> from sqlalchemy_obstore import ObstoreBackend, storages
    >>> from sqlalchemy_obstore.tickets import UploadTickets
    >>> class DemoSigner:  # S3, GCS and Azure sign natively; see signing.HmacUrlSigner
    ...     def sign_url(self, backend, path, *, method, expires_in):
    ...         return f"https://uploads.example/{path}?sig=demo"
    >>> tickets = UploadTickets("a-secret-of-at-least-32-bytes-length!")
    >>> with storages.temporary(ObstoreBackend("docs", "memory://", url_signer=DemoSigner())):
    ...     grant = tickets.issue("docs", "report.txt", max_size=1024)
    ...     _ = storages.get_backend("docs").put(grant.upload_path, b"hello")  # the client's PUT
    ...     file = tickets.redeem(grant.ticket)
    >>> file.filename, file.size, file.content_type
    ('report.txt', 5, 'text/plain')
"""

from __future__ import annotations

import binascii
import heapq
import math
import re
import secrets
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol, TypeAlias, runtime_checkable

import msgspec

from ._attributes import (
    DEFAULT_CONTENT_TYPE,
    content_disposition,
    guess_content_type,
    serves_inline,
)
from ._guard import refine
from ._hmac import (
    b64decode,
    b64encode,
    derive_key,
    matches_any,
    sign,
    signature_bytes,
)
from ._io import Call, Plan, run_async, run_on_engine, run_sync
from ._multipart import (
    Operation,
    Target,
    credentials_now,
    credentials_now_async,
    s3_target,
    store_backend,
)
from ._multipart import run_async as send_async
from ._multipart import run_sync as send
from ._s3_uploads import (
    MAX_PART_URLS,
    MAX_POST_SIZE,
    PartPlan,
    abort,
    create,
    finish,
    part_url,
    plan_parts,
    post_form,
)
from ._sigv4 import Credentials
from .backends import Backend, ObjectInfo
from .errors import (
    ConfigurationError,
    ExpiredUploadTicketError,
    FileTooLargeError,
    FileTooSmallError,
    InvalidContentTypeError,
    InvalidExtensionError,
    InvalidUploadTicketError,
    ReplayedUploadTicketError,
    StorageError,
    UnsupportedOperationError,
    UploadPartsError,
    ValidationError,
)
from .file_object import FileObject
from .keys import KeyFunction, build_key, check_filename, join_key
from .registry import BackendRegistry, storages
from .signing import HmacUrlSigner
from .validation import SNIFF_BYTES, UploadPolicy, detect_content_type, effective_policy

if TYPE_CHECKING:
    from sqlalchemy import MetaData, Table
    from sqlalchemy.engine import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = (
    "INCOMING_PREFIX",
    "TICKET_VERSION",
    "MemoryReplayGuard",
    "ReplayGuard",
    "S3Method",
    "SqlReplayGuard",
    "UploadGrant",
    "UploadMethod",
    "UploadTickets",
)

TICKET_VERSION = 1
"""Version of the ticket payload (the `"v"` field); other versions are refused."""

INCOMING_PREFIX = "_incoming"
"""Below the backend's prefix: where clients upload with `copy_on_redeem` (staging keys).

Objects left there by uploads never redeemed are collected by
[`collect_garbage`][sqlalchemy_obstore.gc.collect_garbage] like any unreferenced object.
"""

_MAX_TICKET_CHARS = 16384  # refuse absurd input before decoding anything
_KEY_CONTEXT = b"sqlalchemy-obstore/upload-ticket/v1"
_GENERIC_TYPES = frozenset({"application/octet-stream", "binary/octet-stream"})
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_LAST_SECOND = 253402300799  # 9999-12-31T23:59:59Z, the last second a datetime holds

Clock = Callable[[], datetime]
S3Method: TypeAlias = Literal["auto", "post", "put"]
"""How `UploadTickets` lets clients upload to S3 by default (see its `s3_method`)."""
UploadMethod: TypeAlias = Literal["put", "post", "multipart"]
"""How one upload goes to the store (`issue(method=...)`)."""

_MIB = 1024 * 1024
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _duration(value: int | float | timedelta, name: str, *, allow_zero: bool = False) -> timedelta:
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, (int, float))
        or seconds < 0
        or (seconds == 0 and not allow_zero)
    ):
        raise ConfigurationError(f"{name} must be a positive number of seconds or a timedelta.")
    return timedelta(seconds=seconds)


def _naive_utc(moment: datetime) -> datetime:
    """A timezone-aware moment as naive UTC (what both SQLite and PostgreSQL store alike)."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(timezone.utc).replace(tzinfo=None)


# -- the ticket ---------------------------------------------------------------------------------
_Seconds = Annotated[int, msgspec.Meta(ge=0, le=_LAST_SECOND)]  # a Unix time datetime can hold


class _Version(msgspec.Struct):
    """The version field alone, read before anything else of a payload."""

    v: object = None


class _Claims(msgspec.Struct, frozen=True, omit_defaults=True):
    """What a ticket says, and its payload's JSON form (short keys): built by `issue`,
    read back (strictly: every field of its type) by `redeem`."""

    v: int
    id: str = msgspec.field(name="i")
    backend: str = msgspec.field(name="b")
    path: str = msgspec.field(name="p")  # the key the file gets
    filename: str = msgspec.field(name="n")
    expires: _Seconds = msgspec.field(name="x")  # the redeem deadline
    # where the client uploads, when it is not `path`
    upload_path: str | None = msgspec.field(default=None, name="u")
    max_size: int | None = msgspec.field(default=None, name="M")
    min_size: int | None = msgspec.field(default=None, name="m")
    # every list must allow the type
    content_types: tuple[tuple[str, ...], ...] = msgspec.field(default=(), name="t")
    sniffs: int = msgspec.field(default=0, name="s")  # 1: sniff the bytes at redeem
    metadata: dict[str, str] = msgspec.field(default_factory=dict, name="d")
    # the size the client declared: the object must have it
    size: int | None = msgspec.field(default=None, name="z")
    upload_id: str | None = msgspec.field(default=None, name="U")  # a multipart upload's id
    # ... and its part size (the plan follows from `size`)
    part_size: int | None = msgspec.field(default=None, name="P")
    upload_expires: _Seconds | None = msgspec.field(default=None, name="w")  # part URLs' end

    def to_json(self) -> bytes:
        return msgspec.json.encode(self)

    @classmethod
    def from_json(cls, raw: bytes) -> _Claims:
        """Parse a payload whose signature was already verified (shape still checked)."""
        try:
            version = msgspec.json.decode(raw, type=_Version).v
        except msgspec.ValidationError as exc:
            raise InvalidUploadTicketError("The upload ticket's payload is not an object.") from exc
        except msgspec.DecodeError as exc:
            raise InvalidUploadTicketError("The upload ticket's payload is not JSON.") from exc
        if version != TICKET_VERSION:
            raise InvalidUploadTicketError(
                f"Unsupported upload ticket version {version!r} (this library reads "
                f"version {TICKET_VERSION}); issue a new ticket."
            )
        try:
            return msgspec.json.decode(raw, type=cls)
        except msgspec.ValidationError as exc:
            raise InvalidUploadTicketError(f"Malformed upload ticket: {exc}") from exc

    @property
    def deadline(self) -> datetime:
        """When the ticket can no longer be redeemed."""
        return datetime.fromtimestamp(self.expires, timezone.utc)

    @property
    def upload_until(self) -> datetime | None:
        """Until when the part URLs of a multipart ticket are signed."""
        if self.upload_expires is None:
            return None
        return datetime.fromtimestamp(self.upload_expires, timezone.utc)

    @property
    def sniff(self) -> bool:
        """Whether redeem sniffs the first bytes."""
        return bool(self.sniffs)

    @property
    def source(self) -> str:
        """The key the client uploads to."""
        return self.upload_path if self.upload_path is not None else self.path

    def policies(self) -> list[UploadPolicy]:
        return [UploadPolicy(allowed_content_types=types) for types in self.content_types]

    @property
    def plan(self) -> PartPlan | None:
        """The part plan of a multipart ticket, else `None`."""
        if self.upload_id is None or self.part_size is None or self.size is None:
            return None
        return PartPlan(self.size, self.part_size)


# -- replay guards ------------------------------------------------------------------------------
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
        self._clock = clock or _utcnow
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
        self._clock = clock or _utcnow
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


# -- grants -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class UploadGrant:
    """What the client needs for one direct upload.

    `method` says how the client uploads:

    - `"PUT"`: send the file as the body of a `PUT` to `url`, with `headers`;
    - `"POST"` (S3): post a `multipart/form-data` form to `url` holding every entry of
      `fields`, in order, then the file in a field named `file` (last). The store
      refuses a body outside the ticket's size limits, any change to a field, and any
      extra field;
    - `"MULTIPART"` (S3): cut the file into `part_count` parts of `part_size` bytes
      (the last holds the rest), ask the application for the parts' URLs
      ([`part_urls`][sqlalchemy_obstore.tickets.UploadTickets.part_urls]), `PUT` each
      part's bytes to its URL (in parallel if you like; a part's URL accepts exactly
      that part's length), then ask the application to complete the upload
      ([`complete`][sqlalchemy_obstore.tickets.UploadTickets.complete]).

    Then hand the ticket back to be redeemed, whatever the method.

    Attributes:
        url: The signed URL to send the bytes to (`PUT`), or to post the form to
            (`POST`); empty for `MULTIPART`, whose parts have URLs of their own.
        method: `"PUT"`, `"POST"` or `"MULTIPART"` (see above).
        headers: Headers the client must send with a `PUT`: what the store needs
            (Azure's `x-ms-blob-type`) and, where the store itself serves the object
            (S3, GCS, Azure), the `Content-Disposition` it must keep
            (`x-ms-blob-content-disposition` on Azure); redeem refuses an object the
            store would display inline. Empty for the HMAC route, which sets the
            disposition itself, and for `POST` and `MULTIPART`, where the store is
            told the attributes by the form's signed fields or by the server.
        expires_at: When the URL stops being accepted (start the upload before it).
        ticket: The upload ticket to hand back to the server after the upload.
        backend: The backend key the object goes to.
        path: The key the file will have once the ticket is redeemed (fresh, laid out
            as the column lays out keys).
        filename: The display filename recorded in the ticket.
        max_size: The largest size the server accepts, if limited (for a client-side
            check before uploading; the server checks again).
        content_types: Accepted content types or patterns, if limited.
        redeem_before: The ticket's redeem deadline.
        upload_path: The key the signed URL writes to. With `copy_on_redeem` (the
            default) it is a staging key under `<backend prefix>/_incoming/`, and redeeming
            moves the object to `path`; otherwise it equals `path`. A multipart upload
            always writes to `path`: once completed, its part URLs write nothing more.
        fields: The form fields of a `POST` (signed policy included), in order.
        size: The size the client declared when asking, if it did: the upload must
            have exactly this size.
        part_size: The length of every part but the last (`MULTIPART`).
        part_count: How many parts (`MULTIPART`).
        upload_id: The store's id of the multipart upload (`MULTIPART`).
    """

    url: str
    method: str
    headers: Mapping[str, str]
    expires_at: datetime
    ticket: str
    backend: str
    path: str
    filename: str = ""
    max_size: int | None = None
    content_types: tuple[str, ...] | None = None
    redeem_before: datetime | None = None
    upload_path: str = ""
    fields: Mapping[str, str] = field(default_factory=dict)
    size: int | None = None
    part_size: int | None = None
    part_count: int | None = None
    upload_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (timestamps as ISO 8601 strings) to send to the client.

        Example:
            >>> from datetime import datetime, timezone
            >>> moment = datetime(2030, 1, 1, tzinfo=timezone.utc)
            >>> grant = UploadGrant("https://s/k", "PUT", {}, moment, "tkt", "b", "k")
            >>> grant.as_dict()["expires_at"]
            '2030-01-01T00:00:00+00:00'
        """
        return {
            "url": self.url,
            "method": self.method,
            "headers": dict(self.headers),
            "expires_at": self.expires_at.isoformat(),
            "ticket": self.ticket,
            "backend": self.backend,
            "path": self.path,
            "filename": self.filename,
            "max_size": self.max_size,
            "content_types": list(self.content_types) if self.content_types else None,
            "redeem_before": self.redeem_before.isoformat() if self.redeem_before else None,
            "upload_path": self.upload_path or self.path,
            "fields": dict(self.fields),
            "size": self.size,
            "part_size": self.part_size,
            "part_count": self.part_count,
            "upload_id": self.upload_id,
        }

    def __repr__(self) -> str:
        # The URL and the form carry signatures and the ticket is a bearer credential:
        # keep them out of logs.
        return (
            f"UploadGrant(method={self.method!r}, backend={self.backend!r}, "
            f"path={self.path!r}, expires_at={self.expires_at.isoformat()!r})"
        )


@dataclass(frozen=True, slots=True)
class _Target:
    backend: Backend
    key_prefix: str | None
    key_function: KeyFunction | None
    policy: UploadPolicy | None


# -- the issuer ---------------------------------------------------------------------------------
class UploadTickets:
    """Issues and redeems upload tickets for direct-to-storage uploads.

    Create one per application (keep the secret stable across restarts and shared by
    every instance; rotate it with `previous_secrets`).

    Args:
        secret: At least 32 bytes (str or bytes) of secret key material.
        registry: Resolves backend keys (default: `storages`).
        replay_guard: Remembers redeemed tickets; default a
            [`MemoryReplayGuard`][sqlalchemy_obstore.tickets.MemoryReplayGuard] (one
            process only — use
            [`SqlReplayGuard`][sqlalchemy_obstore.tickets.SqlReplayGuard] with several).
        expires_in: Lifetime of the signed PUT URL (seconds or timedelta).
        redeem_grace: How long after the URL expires the ticket may still be redeemed
            (an upload started just before expiry may take a while to finish).
        previous_secrets: Older secrets whose tickets are still accepted (rotation).
        copy_on_redeem: Let the client upload to a staging key (under
            `<backend prefix>/_incoming/`) and, when redeeming, copy the object to its
            final key (a server-side copy) before checking it, then delete the staging
            object. The signed URL the client holds stays valid until it expires; this
            way an upload through it after the checks changes nothing any row refers
            to. With `False` the client uploads to the final key directly (one copy
            less, and no 5 GiB limit of S3's CopyObject): keep `expires_in` short then.
            Multipart uploads always go to the final key (completing one ends what its
            part URLs can write).
        s3_method: How clients upload to S3 backends. `"auto"` (the default): a
            presigned `POST` whose policy lets the store itself refuse a body outside
            the size limits, another key, type or disposition, and a presigned
            multipart upload for files whose declared `size` passes
            `multipart_threshold` (or 5 GiB, the most one request carries). It falls
            back to a presigned `PUT` when the library cannot sign for the store (its
            credentials come from the instance or container, which only obstore can
            use). `"post"`: the same, but such a store is refused
            (`UnsupportedOperationError`) instead of falling back. `"put"`: always a
            presigned `PUT` (as for GCS, Azure and local files, which take no POST
            policies). `issue(method=...)` chooses per upload.
        multipart_threshold: Declared sizes above this go up as S3 multipart uploads
            (default 100 MiB, as Uppy's S3 plugin does).
        part_size: The preferred part size of S3 multipart uploads (default 8 MiB; at
            least 5 MiB, and larger when 10,000 parts would not hold the file).
        multipart_expires_in: How long a multipart upload may take: its part URLs are
            signed, and it may be completed, until then (default 6 hours; the ticket is
            redeemable until then plus `redeem_grace`). `issue(expires_in=...)`
            overrides it per upload.
        clock: Returns the current time (timezone-aware); for tests.

    Raises:
        ConfigurationError: For a secret shorter than 32 bytes, a bad lifetime, size or
            method.

    Example:
        >>> import secrets
        >>> tickets = UploadTickets(secrets.token_bytes(32), expires_in=120)
        >>> tickets
        UploadTickets(expires_in=120.0, replay_guard=MemoryReplayGuard)
    """

    def __init__(
        self,
        secret: str | bytes,
        *,
        registry: BackendRegistry = storages,
        replay_guard: ReplayGuard | None = None,
        expires_in: int | float | timedelta = 300,
        redeem_grace: int | float | timedelta = timedelta(hours=1),
        previous_secrets: Iterable[str | bytes] = (),
        copy_on_redeem: bool = True,
        s3_method: S3Method = "auto",
        multipart_threshold: int = 100 * _MIB,
        part_size: int = 8 * _MIB,
        multipart_expires_in: int | float | timedelta = timedelta(hours=6),
        clock: Clock | None = None,
    ) -> None:
        self._key = derive_key(secret, "secret", _KEY_CONTEXT)
        self.copy_on_redeem = copy_on_redeem
        if s3_method not in ("auto", "post", "put"):
            raise ConfigurationError(
                f"s3_method must be 'auto', 'post' or 'put', not {s3_method!r}."
            )
        self.s3_method: S3Method = s3_method
        self.multipart_threshold = _byte_count(multipart_threshold, "multipart_threshold")
        self.part_size = _byte_count(part_size, "part_size")
        self.multipart_expires_in = _duration(multipart_expires_in, "multipart_expires_in")
        older = [derive_key(old, "previous_secrets item", _KEY_CONTEXT) for old in previous_secrets]
        self._verify_keys = (self._key, *older)
        self.registry = registry
        self._clock = clock or _utcnow
        self.replay_guard: ReplayGuard = (
            replay_guard if replay_guard is not None else MemoryReplayGuard(clock=self._clock)
        )
        self.expires_in = _duration(expires_in, "expires_in")
        self.redeem_grace = _duration(redeem_grace, "redeem_grace", allow_zero=True)

    def __repr__(self) -> str:
        guard = type(self.replay_guard).__name__
        return f"UploadTickets(expires_in={self.expires_in.total_seconds()}, replay_guard={guard})"

    # -- issuing --------------------------------------------------------------------------
    def _resolve(self, target: object) -> _Target:
        from .types import StoredObject

        column_type = _column_type(target)
        if isinstance(column_type, StoredObject):
            if column_type.registry is not None and column_type.registry is not self.registry:
                raise ConfigurationError(
                    f"{column_type!r} resolves backends in its own registry; create "
                    "UploadTickets(registry=...) with that registry to issue tickets for it."
                )
            backend = self.registry.get_backend(column_type.backend)
            return _Target(
                backend,
                column_type.key_prefix,
                column_type.key_function,
                effective_policy(backend.policy, column_type.policy),
            )
        if isinstance(target, Backend):
            backend = self.registry.get_backend(target.key)
            if backend is not target:
                raise ConfigurationError(
                    f"Backend {target.key!r} is not the one registered under that key; "
                    "register it first (tickets are redeemed through the registry).",
                    backend=target.key,
                )
            return _Target(backend, None, None, backend.policy)
        if isinstance(target, str):
            backend = self.registry.get_backend(target)
            return _Target(backend, None, None, backend.policy)
        raise ConfigurationError(
            "issue() takes a StoredObject column (e.g. Document.file), a StoredObject type, "
            f"a backend or a backend key, not {type(target).__name__}."
        )

    def _prepare(
        self,
        target: object,
        filename: str,
        max_size: int | None,
        content_types: Sequence[str] | str | None,
        expires_in: int | float | timedelta | None,
        metadata: Mapping[str, str] | None,
        size: int | None,
        method: UploadMethod | None,
    ) -> tuple[_Target, _Claims, timedelta, _Route]:
        """Everything `issue` decides before any I/O: the claims, lifetime and method."""
        if not isinstance(filename, str):
            raise ConfigurationError(f"filename must be a string, not {type(filename).__name__}.")
        check_filename(filename)  # InvalidFilenameError for NUL or a lone surrogate
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            raise ConfigurationError(f"size must be a number of bytes, not {size!r}.")
        if method is not None and method not in ("put", "post", "multipart"):
            raise ConfigurationError(
                f"method must be 'put', 'post' or 'multipart', not {method!r}."
            )
        resolved = self._resolve(target)
        backend, policy = resolved.backend, resolved.policy
        if policy is not None and (policy.image is not None or policy.validators):
            raise ConfigurationError(
                f"The upload policy of this target has "
                f"{'an ImagePolicy' if policy.image is not None else 'custom validators'}, "
                "which need the bytes to pass through the application; a direct upload "
                "never does. Use FileObject.from_upload for this column, or issue tickets "
                "for a column without them.",
                backend=backend.key,
            )
        requested = UploadPolicy(max_size=max_size, allowed_content_types=_tuple(content_types))
        if policy is not None and not policy.allows_filename(filename):
            allowed = ", ".join(policy.allowed_extensions or ())
            raise InvalidExtensionError(
                f"The extension of {filename!r} is not allowed (allowed: {allowed}).",
                backend=backend.key,
            )
        policy_max = policy.max_size if policy is not None else None
        sizes = [limit for limit in (requested.max_size, policy_max) if limit is not None]
        type_lists = tuple(
            types
            for types in (
                policy.allowed_content_types if policy is not None else None,
                requested.allowed_content_types,
            )
            if types is not None
        )
        sniff = (policy.sniffs if policy is not None else False) or bool(
            requested.allowed_content_types
        )
        path = build_key(
            filename,
            prefix=join_key(backend.prefix, resolved.key_prefix),
            key_function=resolved.key_function or backend.key_function,
        )
        claims = _Claims(
            v=TICKET_VERSION,
            id=b64encode(secrets.token_bytes(16)),
            backend=backend.key,
            path=path,
            filename=filename,
            expires=0,  # set below, once the lifetime is known
            max_size=min(sizes) if sizes else None,
            min_size=policy.min_size if policy is not None else None,
            content_types=type_lists,
            sniffs=int(sniff),
            metadata=dict(metadata or {}),
            size=size,
        )
        if size is not None:  # refuse a declared size outside the limits before anything
            violation = _size_violation(claims, size, declared=False)
            if violation is not None:
                raise violation
        route = self._route(backend, claims, method)
        default = self.multipart_expires_in if route.method == "multipart" else self.expires_in
        lifetime = backend.check_expiry(default if expires_in is None else expires_in)
        now = self._clock()
        # whole seconds: what the ticket records, so grant and ticket agree
        claims = msgspec.structs.replace(
            claims,
            expires=int((now + lifetime + self.redeem_grace).timestamp()),
            upload_path=(
                build_key(filename, prefix=join_key(backend.prefix, INCOMING_PREFIX))
                if self.copy_on_redeem and route.method != "multipart"
                else None
            ),
            upload_expires=int((now + lifetime).timestamp())
            if route.method == "multipart"
            else None,
        )
        return resolved, claims, lifetime, route

    def _route(self, backend: Backend, claims: _Claims, method: UploadMethod | None) -> _Route:
        """How the client uploads: `put`, `post` or `multipart` (and to which bucket)."""
        if method == "put" or (method is None and self.s3_method == "put"):
            return _Route("put")
        bucket = _s3_bucket(backend)
        if isinstance(bucket, str):
            if method is not None or (self.s3_method == "post" and _is_s3(backend)):
                raise UnsupportedOperationError(
                    f"Backend {backend.key!r} cannot take a presigned "
                    f"{'multipart upload' if method == 'multipart' else 'POST'}: {bucket}. "
                    "Issue a PUT (method='put', or UploadTickets(s3_method='put')).",
                    backend=backend.key,
                )
            return _Route("put")  # GCS, Azure, local files, memory: a signed PUT
        size = claims.size
        if method is None:
            big = size is not None and size > min(self.multipart_threshold, MAX_POST_SIZE)
            method = "multipart" if big else "post"
        if method == "multipart":
            if size is None:
                raise ConfigurationError(
                    "A multipart upload needs the file's size: pass size= (the client "
                    "knows it, e.g. File.size in a browser).",
                    backend=backend.key,
                )
            return _Route("multipart", bucket, plan_parts(size, self.part_size))
        if size is not None and size > MAX_POST_SIZE:
            raise ConfigurationError(
                f"A POST upload creates objects up to {MAX_POST_SIZE} bytes, not {size}: "
                "use method='multipart'.",
                backend=backend.key,
            )
        return _Route("post", bucket)

    @staticmethod
    def _stored_type(claims: _Claims, declared: str | None) -> tuple[str, str]:
        """The `Content-Type` and `Content-Disposition` a POST or multipart upload keeps.

        The client's declared type if the ticket's lists allow it (else refused now),
        otherwise the type of the filename's extension if allowed, otherwise
        `application/octet-stream` (a download; redeem sniffs the bytes anyway). The
        disposition follows the inline rule, as for every object the library stores.
        """
        policies = claims.policies()
        if declared is not None:
            content_type = declared.split(";", 1)[0].strip().lower()
            if not _MEDIA_TYPE.fullmatch(content_type) or not all(
                policy.allows_content_type(content_type) for policy in policies
            ):
                raise InvalidContentTypeError(
                    f"Content type {declared!r} is not allowed here.",
                    declared=declared,
                    backend=claims.backend,
                    path=claims.path,
                )
        else:
            content_type = guess_content_type(claims.filename)
            if not all(policy.allows_content_type(content_type) for policy in policies):
                content_type = DEFAULT_CONTENT_TYPE
        return content_type, content_disposition(claims.filename, content_type)

    @staticmethod
    def _upload_headers(claims: _Claims, backend: Backend) -> dict[str, str]:
        headers = dict(backend.upload_headers)
        if _store_serves(backend):
            # The store keeps what the client sends and serves it through signed GET
            # URLs: the disposition the library would have stored (redeem checks it).
            name = (
                "x-ms-blob-content-disposition"
                if "x-ms-blob-type" in headers
                else "Content-Disposition"
            )
            headers[name] = content_disposition(
                claims.filename, guess_content_type(claims.filename)
            )
        return headers

    @staticmethod
    def _hmac_signer(backend: Backend) -> HmacUrlSigner | None:
        """The HMAC signer that signs `backend`'s URLs, when the store cannot sign."""
        signer = getattr(backend, "url_signer", None)
        if isinstance(signer, HmacUrlSigner) and not getattr(
            backend, "supports_native_signing", True
        ):
            return signer
        return None

    def _sign_put(self, backend: Backend, claims: _Claims, lifetime: timedelta) -> str | None:
        """Sign with the HMAC signer, binding the URL to the ticket's id and size limit.

        The signed-URL route then refuses bytes past `max_size` while they stream and
        any upload once the ticket is redeemed. `None` for stores that sign natively.
        """
        signer = self._hmac_signer(backend)
        if signer is None:
            return None
        return signer.sign_url(
            backend.key,
            claims.source,
            method="PUT",
            expires_in=lifetime,
            max_size=claims.max_size,
            ticket=claims.id,
        )

    def _grant(
        self,
        claims: _Claims,
        url: str,
        lifetime: timedelta,
        backend: Backend,
        *,
        method: str = "PUT",
        fields: Mapping[str, str] | None = None,
    ) -> UploadGrant:
        plan = claims.plan
        return UploadGrant(
            url=url,
            method=method,
            headers=self._upload_headers(claims, backend) if method == "PUT" else {},
            expires_at=self._clock() + lifetime,
            ticket=self._encode(claims),
            backend=claims.backend,
            path=claims.path,
            filename=claims.filename,
            max_size=claims.max_size,
            content_types=claims.content_types[-1] if claims.content_types else None,
            redeem_before=claims.deadline,
            upload_path=claims.source,
            fields=dict(fields or {}),
            size=claims.size,
            part_size=None if plan is None else plan.part_size,
            part_count=None if plan is None else plan.count,
            upload_id=claims.upload_id,
        )

    def _post_grant(
        self,
        claims: _Claims,
        lifetime: timedelta,
        backend: Backend,
        route: _Route,
        credentials: Credentials | None,
        content_type: str | None,
    ) -> UploadGrant:
        """A POST form whose policy holds the ticket's limits (no I/O)."""
        assert route.bucket is not None
        stored_type, disposition = self._stored_type(claims, content_type)
        low = claims.min_size or 0
        high = MAX_POST_SIZE if claims.max_size is None else min(claims.max_size, MAX_POST_SIZE)
        if claims.size is not None:
            low = high = claims.size  # checked against the limits already
        if low > high:
            raise ConfigurationError(
                f"The policy's min_size ({low} bytes) is above what one POST creates "
                f"({MAX_POST_SIZE} bytes): declare the size to get a multipart upload.",
                backend=backend.key,
            )
        form = post_form(
            route.bucket,
            _signing(credentials, backend),
            path=claims.source,
            content_type=stored_type,
            content_disposition=disposition,
            min_size=low,
            max_size=high,
            expires_in=lifetime,
            now=self._clock(),
        )
        return self._grant(claims, form.url, lifetime, backend, method="POST", fields=form.fields)

    def _started(self, claims: _Claims, route: _Route, upload_id: str) -> _Claims:
        assert route.plan is not None
        return msgspec.structs.replace(claims, upload_id=upload_id, part_size=route.plan.part_size)

    def issue(
        self,
        target: object,
        filename: str,
        *,
        max_size: int | None = None,
        content_types: Sequence[str] | str | None = None,
        expires_in: int | float | timedelta | None = None,
        metadata: Mapping[str, str] | None = None,
        size: int | None = None,
        content_type: str | None = None,
        method: UploadMethod | None = None,
    ) -> UploadGrant:
        """Sign an upload for a fresh key and a ticket to redeem after the upload.

        Args:
            target: Where the file goes: a `StoredObject` column attribute
                (`Document.file`: its backend, key prefix, key function and upload
                policy are used), a `StoredObject` type, a registered backend or a
                backend key (its default policy is used).
            filename: The display name (usually the client's file name); only a
                sanitised form appears in the key.
            max_size: A size limit for this upload; the smaller of it and the policy's
                limit applies.
            content_types: Allowed types or patterns (`"image/*"`) for this upload; the
                bytes are sniffed at redeem time. The policy's list applies as well.
            expires_in: Lifetime of the signed URL or form (default: the issuer's
                `expires_in`), or of a multipart upload (default: its
                `multipart_expires_in`).
            metadata: Custom str→str metadata for the resulting `FileObject`.
            size: The file's size, as the client declares it. Refused now when outside
                the limits; the upload must then have exactly this size (a POST's
                policy and a multipart upload's part URLs make the store refuse any
                other). Needed for multipart uploads, and it picks one on S3 when above
                `multipart_threshold`.
            content_type: The file's type, as the client declares it (e.g. `File.type`
                in a browser): the type a POST or multipart upload stores; refused now
                if the lists do not allow it. Default: from the filename's extension.
                (A PUT's type is the request's; redeem sniffs either way when the
                column lists types.)
            method: `"put"`, `"post"` (S3) or `"multipart"` (S3) for this upload;
                default per the issuer's `s3_method`: POST on S3, multipart above
                `multipart_threshold`, PUT elsewhere.

        Returns:
            The grant: how to upload (`method`), where (`url`, `fields`, `headers`, the
            part plan) and the ticket.

        Raises:
            ConfigurationError: For an unusable target, or a policy with an
                `ImagePolicy` or custom validators (they need the bytes); for a
                multipart upload without `size`, or a POST above 5 GiB.
            InvalidExtensionError: If the policy does not allow the filename.
            InvalidFilenameError: If the filename holds NUL or a lone surrogate.
            FileTooLargeError, FileTooSmallError: If the declared `size` is outside the
                limits.
            InvalidContentTypeError: If the declared `content_type` is not allowed
                (POST and multipart).
            UnsupportedOperationError: If the backend cannot sign URLs (attach a URL
                signer to local and memory backends, see `signing.HmacUrlSigner`), or
                cannot take the POST or multipart upload asked for.
            InvalidExpiryError: If the lifetime exceeds the store's limit.
            StorageError: If the store refuses to start a multipart upload.

        Example:
            >>> from sqlalchemy_obstore import ObstoreBackend, storages
            >>> class DemoSigner:
            ...     def sign_url(self, backend, path, *, method, expires_in):
            ...         return f"https://uploads.example/{path}?sig=demo"
            >>> tickets = UploadTickets("0123456789abcdef0123456789abcdef")
            >>> with storages.temporary(
            ...     ObstoreBackend("docs", "memory://", prefix="in", url_signer=DemoSigner())
            ... ):
            ...     grant = tickets.issue("docs", "cv.pdf", content_types=["application/pdf"])
            >>> grant.method, grant.path.startswith("in/"), grant.content_types
            ('PUT', True, ('application/pdf',))
        """
        prepared = self._prepare(
            target, filename, max_size, content_types, expires_in, metadata, size, method
        )
        return run_sync(self._issuing(prepared, content_type))

    async def issue_async(
        self,
        target: object,
        filename: str,
        *,
        max_size: int | None = None,
        content_types: Sequence[str] | str | None = None,
        expires_in: int | float | timedelta | None = None,
        metadata: Mapping[str, str] | None = None,
        size: int | None = None,
        content_type: str | None = None,
        method: UploadMethod | None = None,
    ) -> UploadGrant:
        """Async version of [`issue`][sqlalchemy_obstore.tickets.UploadTickets.issue]."""
        prepared = self._prepare(
            target, filename, max_size, content_types, expires_in, metadata, size, method
        )
        return await run_async(self._issuing(prepared, content_type))

    def _issuing(
        self, prepared: tuple[_Target, _Claims, timedelta, _Route], content_type: str | None
    ) -> Plan[UploadGrant]:
        """`issue` once `_prepare` decided everything: sign, or start the upload."""
        resolved, claims, lifetime, route = prepared
        backend = resolved.backend
        if route.bucket is None:
            url = self._sign_put(backend, claims, lifetime) or (
                yield Call(
                    backend.sign,
                    backend.sign_async,
                    claims.source,
                    method="PUT",
                    expires_in=lifetime,
                )
            )
            return self._grant(claims, url, lifetime, backend)
        if route.method == "post":
            credentials = yield Call(credentials_now, credentials_now_async, route.bucket)
            return self._post_grant(claims, lifetime, backend, route, credentials, content_type)
        creating = self._create(claims, route, content_type)
        upload_id = yield Call(send, send_async, route.bucket, creating)
        started = self._started(claims, route, upload_id)
        return self._grant(started, "", lifetime, backend, method="MULTIPART")

    def _create(self, claims: _Claims, route: _Route, content_type: str | None) -> Operation[str]:
        """Start the multipart upload of `claims.path`, with the attributes it keeps."""
        assert route.bucket is not None
        stored_type, disposition = self._stored_type(claims, content_type)
        return create(
            route.bucket,
            claims.path,
            content_type=stored_type,
            content_disposition=disposition,
        )

    # -- multipart uploads ------------------------------------------------------------------
    def _multipart(self, ticket: str) -> tuple[_Claims, PartPlan, Target]:
        """A verified multipart ticket, its plan and bucket."""
        claims = self._decode(ticket)
        plan = claims.plan
        if plan is None or claims.upload_id is None:
            raise InvalidUploadTicketError(
                "This upload ticket is not for a multipart upload: upload with the grant's method.",
                backend=claims.backend,
                path=claims.path,
            )
        return claims, plan, _bucket_of(self.registry.get_backend(claims.backend))

    def _part_numbers(
        self, claims: _Claims, plan: PartPlan, part_numbers: Iterable[int] | None
    ) -> list[int]:
        numbers = (
            list(range(1, min(plan.count, MAX_PART_URLS) + 1))
            if part_numbers is None
            else list(dict.fromkeys(part_numbers))
        )
        wrong = [
            n
            for n in numbers
            if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= plan.count
        ]
        if wrong or len(numbers) > MAX_PART_URLS:
            raise UploadPartsError(
                f"Ask for at most {MAX_PART_URLS} part URLs at a time, numbered 1 to "
                f"{plan.count}"
                + (f" (not {', '.join(repr(n) for n in wrong[:5])})" if wrong else "")
                + ".",
                backend=claims.backend,
                path=claims.path,
            )
        return numbers

    def _part_window(self, claims: _Claims) -> timedelta:
        """How long part URLs signed now live: until the upload's window closes."""
        assert claims.upload_until is not None
        left = claims.upload_until - self._clock()
        if left.total_seconds() < 1:
            raise ExpiredUploadTicketError(
                f"The time for this multipart upload ended at "
                f"{claims.upload_until.isoformat()}; no more part URLs are signed. "
                "Complete it if every part is uploaded, or ask for a new ticket.",
                expired_at=claims.upload_until,
                backend=claims.backend,
                path=claims.path,
            )
        return timedelta(seconds=math.ceil(left.total_seconds()))

    def _sign_parts(
        self,
        claims: _Claims,
        plan: PartPlan,
        bucket: Target,
        numbers: list[int],
        credentials: Credentials | None,
    ) -> dict[int, str]:
        assert claims.upload_id is not None
        lifetime = self._part_window(claims)
        signer = _signing(credentials, self.registry.get_backend(claims.backend))
        now = self._clock()
        return {
            number: part_url(
                bucket,
                signer,
                path=claims.path,
                upload_id=claims.upload_id,
                number=number,
                length=plan.length(number),
                expires_in=lifetime,
                now=now,
            )
            for number in numbers
        }

    def part_urls(self, ticket: str, part_numbers: Iterable[int] | None = None) -> dict[int, str]:
        """Presigned `PUT` URLs for parts of a multipart upload (a grant's `MULTIPART`).

        Each URL accepts exactly its part's bytes (its length is signed: S3 refuses a
        body of any other length) for this upload only, until the upload's time ends
        (`multipart_expires_in`). Ask for them on demand, in batches of at most 1000.

        Args:
            ticket: The grant's ticket, as the client sent it back.
            part_numbers: The parts wanted (1-based); default the first 1000.

        Returns:
            `{part number: URL}`.

        Raises:
            InvalidUploadTicketError: A malformed, forged or tampered ticket, or one
                for another method.
            ExpiredUploadTicketError: The ticket or the upload's time has ended.
            ReplayedUploadTicketError: The ticket was redeemed already.
            UploadPartsError: A part number outside the plan, or too many at once.

        Example:
            >>> tickets = UploadTickets("0123456789abcdef0123456789abcdef")
            >>> try:
            ...     tickets.part_urls("not-a-ticket", [1])
            ... except InvalidUploadTicketError:
            ...     print("refused")
            refused
        """
        return run_sync(self._signing_parts(ticket, part_numbers))

    async def part_urls_async(
        self, ticket: str, part_numbers: Iterable[int] | None = None
    ) -> dict[int, str]:
        """Async version of [`part_urls`][sqlalchemy_obstore.tickets.UploadTickets.part_urls]."""
        return await run_async(self._signing_parts(ticket, part_numbers))

    def _signing_parts(
        self, ticket: str, part_numbers: Iterable[int] | None
    ) -> Plan[dict[int, str]]:
        claims, plan, bucket = self._multipart(ticket)
        numbers = self._part_numbers(claims, plan, part_numbers)
        if (yield from self._redeemed(claims.id)):
            raise self._claim_failed(claims)
        credentials = yield Call(credentials_now, credentials_now_async, bucket)
        return self._sign_parts(claims, plan, bucket, numbers, credentials)

    def _completing(
        self, ticket: str, parts: Mapping[int, str] | Iterable[Any] | None
    ) -> Plan[None]:
        claims, plan, bucket = self._multipart(ticket)
        assert claims.upload_id is not None
        etags = None if parts is None else _etags(parts, claims)
        if (yield from self._redeemed(claims.id)):
            raise self._claim_failed(claims)
        finishing = finish(bucket, claims.path, claims.upload_id, plan, etags)
        yield Call(send, send_async, bucket, finishing)

    def complete(self, ticket: str, parts: Mapping[int, str] | Iterable[Any] | None = None) -> None:
        """Complete a multipart upload once its parts match the ticket's plan.

        Lists the parts the store holds (`ListParts`) and checks them against the plan:
        every part present, each of its planned length (so the whole has the declared
        size, within the ticket's limits); with `parts`, each ETag must be the store's.
        Then asks the store to assemble the object (`CompleteMultipartUpload`). Redeem
        the ticket afterwards, as for any upload. Completing twice is harmless.

        Args:
            ticket: The grant's ticket.
            parts: The client's view, optional: `{part number: ETag}`, or a list of
                `{"PartNumber": n, "ETag": "..."}` (S3's names) or
                `{"part_number": n, "etag": "..."}`. Without it the parts the store
                holds are used (the client need not read ETags, which a browser may
                only do when the bucket's CORS rule exposes the header).

        Raises:
            InvalidUploadTicketError: A malformed, forged or tampered ticket, or one
                for another method.
            ExpiredUploadTicketError: Past the ticket's redeem deadline.
            ReplayedUploadTicketError: The ticket was redeemed already.
            UploadPartsError: Parts missing, shorter than planned, or not the client's
                (upload them and complete again).
            FileTooLargeError: The parts hold more than planned (the store did not
                check the signed lengths); the upload was aborted.
            ObjectNotFoundError: The upload no longer exists (aborted, or collected).
            StorageError: If the store fails a request.
        """
        run_sync(self._completing(ticket, parts))

    async def complete_async(
        self, ticket: str, parts: Mapping[int, str] | Iterable[Any] | None = None
    ) -> None:
        """Async version of [`complete`][sqlalchemy_obstore.tickets.UploadTickets.complete]."""
        await run_async(self._completing(ticket, parts))

    def _aborting(self, ticket: str) -> Call[bool]:
        claims, _, bucket = self._multipart(ticket)
        assert claims.upload_id is not None
        return Call(send, send_async, bucket, abort(bucket, claims.path, claims.upload_id))

    def abort(self, ticket: str) -> bool:
        """Abort a multipart upload: the store drops its parts; nothing is kept.

        Uploads that are neither completed nor aborted are aborted by
        [`collect_garbage`][sqlalchemy_obstore.gc.collect_garbage] once they have been
        idle longer than its grace period, so a client that disappears leaves nothing
        behind for long.

        Returns:
            `False` if the upload was gone already (completed, or aborted before).

        Raises:
            InvalidUploadTicketError: A malformed, forged or tampered ticket, or one
                for another method.
            ExpiredUploadTicketError: Past the ticket's redeem deadline.
            StorageError: If the store fails the request.
        """
        return run_sync(self._aborting(ticket))

    async def abort_async(self, ticket: str) -> bool:
        """Async version of [`abort`][sqlalchemy_obstore.tickets.UploadTickets.abort]."""
        return await run_async(self._aborting(ticket))

    # -- the token ------------------------------------------------------------------------
    @staticmethod
    def _signature(key: bytes, payload: str) -> bytes:
        return sign(key, payload.encode("ascii"))

    def _encode(self, claims: _Claims) -> str:
        payload = b64encode(claims.to_json())
        return f"{payload}.{b64encode(self._signature(self._key, payload))}"

    def _decode(self, ticket: object) -> _Claims:
        """Verify the signature and deadline and return the claims."""
        if not isinstance(ticket, str) or len(ticket) > _MAX_TICKET_CHARS:
            raise InvalidUploadTicketError("An upload ticket is a string issued by this server.")
        payload, dot, signature = ticket.partition(".")
        # Strictly base64url, and only the issuer's spelling of the signature: the
        # decoder would skip other characters, letting many spellings of one ticket through.
        try:
            if not dot or not _B64URL.fullmatch(payload):
                raise ValueError("payload")
            given = signature_bytes(signature)
            raw = b64decode(payload)
        except (binascii.Error, ValueError):
            raise InvalidUploadTicketError("The upload ticket is malformed.") from None
        if not matches_any(self._verify_keys, payload.encode("ascii"), given):
            raise InvalidUploadTicketError(
                "The upload ticket's signature is not valid: it was changed, or issued with "
                "another secret. Ask the server for a new ticket."
            )
        claims = _Claims.from_json(raw)
        if self._clock() >= claims.deadline:
            raise ExpiredUploadTicketError(
                f"The upload ticket expired at {claims.deadline.isoformat()}; ask the server "
                "for a new ticket and upload again.",
                expired_at=claims.deadline,
                backend=claims.backend,
                path=claims.path,
            )
        return claims

    def inspect(self, ticket: str) -> dict[str, Any]:
        """Verify a ticket and return what it says, without redeeming it.

        Returns:
            `id` (the ticket's id, also carried by its HMAC-signed URL), `backend`,
            `path`, `filename`, `max_size`, `min_size`, `content_types`, `sniff`,
            `redeem_before`, `metadata`, the declared `size`, and for a multipart
            upload its `upload_id`, `part_size`, `part_count` and `upload_until`.

        Raises:
            InvalidUploadTicketError: If the ticket is malformed, forged or tampered.
            ExpiredUploadTicketError: If its deadline has passed.
        """
        claims = self._decode(ticket)
        return {
            "id": claims.id,
            "backend": claims.backend,
            "path": claims.path,
            "filename": claims.filename,
            "max_size": claims.max_size,
            "min_size": claims.min_size,
            "content_types": [list(types) for types in claims.content_types],
            "sniff": claims.sniff,
            "redeem_before": claims.deadline,
            "metadata": dict(claims.metadata),
            "size": claims.size,
            "upload_id": claims.upload_id,
            "part_size": claims.part_size,
            "part_count": None if claims.plan is None else claims.plan.count,
            "upload_until": claims.upload_until,
        }

    def is_redeemed(self, ticket_id: str) -> bool:
        """Whether the ticket with this id was redeemed (or is being redeemed) already.

        The signed-URL route asks this before accepting an upload through a ticket's
        URL; it does not verify anything else. `ticket_id` is the id the ticket
        carries (the `ticket` parameter of its HMAC-signed URL).

        Raises:
            ConfigurationError: If the replay guard cannot answer (a custom guard
                without `is_claimed`).
        """
        return run_sync(self._redeemed(ticket_id))

    async def is_redeemed_async(self, ticket_id: str) -> bool:
        """Async version of
        [`is_redeemed`][sqlalchemy_obstore.tickets.UploadTickets.is_redeemed].
        """
        return await run_async(self._redeemed(ticket_id))

    def _redeemed(self, ticket_id: str) -> Plan[bool]:
        return bool((yield self._ask_guard("is_claimed", ticket_id)))

    def _ask_guard(self, method: str, *args: Any) -> Call[Any]:
        """A call of the replay guard's `method` (or `<method>_async`), looked up when made."""
        return Call(
            lambda: self._guard_lookup(method)(*args),
            lambda: self._guard_lookup(f"{method}_async")(*args),
        )

    def _guard_lookup(self, method: str) -> Any:
        lookup = getattr(self.replay_guard, method, None)
        if lookup is None:
            raise ConfigurationError(
                f"The replay guard {type(self.replay_guard).__name__} has no {method}(); "
                "implement it (see ReplayGuard) so that uploads through the URL of a "
                "redeemed ticket can be refused."
            )
        return lookup

    # -- redeeming --------------------------------------------------------------------------
    @staticmethod
    def _declared_type(claims: _Claims, info: ObjectInfo) -> str:
        stored = (info.content_type or "").split(";", 1)[0].strip().lower()
        if stored and stored not in _GENERIC_TYPES:
            return info.content_type or stored
        return guess_content_type(claims.filename)

    def _content_type(
        self, claims: _Claims, info: ObjectInfo, head: bytes | None
    ) -> tuple[str, ValidationError | None]:
        """The content type to record, and the violation, if any (plain code)."""
        declared = self._declared_type(claims, info)
        policies = claims.policies()
        if head is None:  # not sniffing: the declared type must be allowed
            for policy in policies:
                if not policy.allows_content_type(declared):
                    return declared, InvalidContentTypeError(
                        f"Content type {declared!r} is not allowed.",
                        declared=declared,
                        backend=claims.backend,
                        path=claims.path,
                    )
            return declared, None
        detected = detect_content_type(head)
        stored = refine(detected, declared)
        for policy in policies:
            if not policy.allows_content_type(stored):
                allowed = ", ".join(policy.allowed_content_types or ())
                return stored, InvalidContentTypeError(
                    f"Content type refused: the file declares {declared!r} but its bytes are "
                    f"{repr(detected) if detected else 'of an unknown type'} "
                    f"(allowed: {allowed}).",
                    declared=declared,
                    detected=detected,
                    backend=claims.backend,
                    path=claims.path,
                )
        return stored, None

    @staticmethod
    def _rendered_by_store(
        claims: _Claims, backend: Backend, info: ObjectInfo
    ) -> ValidationError | None:
        """A violation if the store would display the object inline in a browser.

        The client chose the attributes of its own PUT, and the store serves them
        through signed GET URLs: unless the object is an `attachment` or of a passive
        type (see `serves_inline`), it is refused. Stores that do not serve objects
        themselves (local files, memory: the signed-URL route applies the rule when it
        serves them) are not concerned; a missing type is sent by the stores as
        `application/octet-stream`, which browsers download.
        """
        if not _store_serves(backend):
            return None
        disposition = info.attributes.get("Content-Disposition", "")
        stored = (info.content_type or "").split(";", 1)[0].strip().lower()
        if (
            disposition.strip().lower().startswith("attachment")
            or not stored
            or stored in _GENERIC_TYPES
            or serves_inline(stored)
        ):
            return None
        return InvalidContentTypeError(
            f"The upload was stored as {stored!r} without an 'attachment' "
            "Content-Disposition, so the store would display it in the browser. Upload it "
            "again sending the grant's headers (they include the Content-Disposition).",
            declared=stored,
            backend=claims.backend,
            path=claims.path,
        )

    def _verdict(
        self, claims: _Claims, backend: Backend, info: ObjectInfo, head: bytes | None
    ) -> tuple[str, ValidationError | None]:
        """The content type to record and the violation, if any, once the size passed."""
        content_type, violation = self._content_type(claims, info, head)
        if violation is None:
            violation = self._rendered_by_store(claims, backend, info)
        return content_type, violation

    def _file(self, claims: _Claims, info: ObjectInfo, content_type: str) -> FileObject:
        return FileObject(
            backend=claims.backend,
            path=claims.path,
            filename=claims.filename,
            content_type=content_type,
            size=info.size,
            etag=info.etag,
            version=info.version,
            last_modified=info.last_modified,
            metadata=claims.metadata,
            registry=None if self.registry is storages else self.registry,
        )

    @staticmethod
    def _garbage(claims: _Claims, violation: ValidationError | None) -> list[str]:
        """What to delete after the checks: the staging object, and a refused file."""
        paths = [] if claims.upload_path is None else [claims.upload_path]
        if violation is not None:
            paths.append(claims.path)
        return paths

    def _claim_failed(self, claims: _Claims) -> ReplayedUploadTicketError:
        return ReplayedUploadTicketError(
            "This upload ticket was already redeemed; each ticket turns into one file once.",
            backend=claims.backend,
            path=claims.path,
        )

    def redeem(self, ticket: str) -> FileObject:
        """Turn a ticket into a saved `FileObject` once its object is uploaded and valid.

        Args:
            ticket: The ticket from the grant, as the client sent it back.

        Returns:
            A saved file (size, etag, version, content type, last-modified from the
            store); assign it to a column and commit. It has no checksum: the bytes
            never passed through the application.

        Raises:
            InvalidUploadTicketError: Malformed, forged or tampered ticket.
            ExpiredUploadTicketError: Past its redeem deadline.
            ReplayedUploadTicketError: Already redeemed.
            ObjectNotFoundError: Nothing was uploaded yet; the ticket is not used up.
            FileTooLargeError, FileTooSmallError, InvalidContentTypeError: The upload
                breaks the limits; the object was deleted and the ticket is used up.

        Example:
            >>> from sqlalchemy_obstore import ObstoreBackend, storages
            >>> from sqlalchemy_obstore.errors import ReplayedUploadTicketError
            >>> class DemoSigner:
            ...     def sign_url(self, backend, path, *, method, expires_in):
            ...         return f"https://uploads.example/{path}?sig=demo"
            >>> tickets = UploadTickets("0123456789abcdef0123456789abcdef")
            >>> with storages.temporary(ObstoreBackend("b", "memory://", url_signer=DemoSigner())):
            ...     grant = tickets.issue("b", "a.txt")
            ...     _ = storages.get_backend("b").put(grant.upload_path, b"hi")
            ...     tickets.redeem(grant.ticket).size
            ...     try:
            ...         tickets.redeem(grant.ticket)
            ...     except ReplayedUploadTicketError:
            ...         print("refused")
            2
            refused
        """
        return run_sync(self._redeeming(ticket))

    async def redeem_async(self, ticket: str) -> FileObject:
        """Async version of [`redeem`][sqlalchemy_obstore.tickets.UploadTickets.redeem]."""
        return await run_async(self._redeeming(ticket))

    def _redeeming(self, ticket: str) -> Plan[FileObject]:
        claims = self._decode(ticket)
        backend = self.registry.get_backend(claims.backend)
        if not (yield self._ask_guard("claim", claims.id, claims.deadline)):
            raise self._claim_failed(claims)
        try:
            if claims.upload_path is not None:
                source, path = claims.upload_path, claims.path
                yield Call(backend.copy, backend.copy_async, source, path, overwrite=True)
            info: ObjectInfo = yield Call(backend.head, backend.head_async, claims.path)
            violation = _size_violation(claims, info.size)
            head = None
            if violation is None and claims.sniff:
                reading = Call(
                    backend.get_range, backend.get_range_async, claims.path, 0, SNIFF_BYTES
                )
                head = (yield reading) if info.size else b""
        except BaseException:
            yield self._ask_guard("release", claims.id)  # nothing was decided: the client may retry
            raise
        if violation is None:
            content_type, violation = self._verdict(claims, backend, info, head)
        garbage = self._garbage(claims, violation)
        if garbage:
            with suppress(StorageError):  # leftovers are collected by collect_garbage
                yield Call(backend.delete, backend.delete_async, garbage)
        if violation is not None:
            raise violation
        return self._file(claims, info, content_type)


def _store_serves(backend: Backend) -> bool:
    """Whether the store itself serves objects, with the attributes they were put with.

    S3, GCS and Azure do, through the URLs they sign; local files and memory do not
    (the signed-URL route serves them and applies the inline rule itself).
    """
    native = getattr(backend, "supports_native_signing", backend.supports_signing)
    return bool(native) and backend.supports_attributes


def _size_violation(claims: _Claims, size: int, *, declared: bool = True) -> ValidationError | None:
    """The violation of the ticket's limits by an object of `size` bytes, if any.

    With `declared`, the size the client declared at issue must be met exactly too.
    """
    if declared and claims.size is not None and size != claims.size:
        if size > claims.size:
            return FileTooLargeError(
                limit=claims.size,
                size_seen=size,
                declared=True,
                backend=claims.backend,
                path=claims.path,
            )
        return FileTooSmallError(
            minimum=claims.size, size=size, declared=True, backend=claims.backend, path=claims.path
        )
    if claims.max_size is not None and size > claims.max_size:
        return FileTooLargeError(
            limit=claims.max_size, size_seen=size, backend=claims.backend, path=claims.path
        )
    if claims.min_size is not None and size < claims.min_size:
        return FileTooSmallError(
            minimum=claims.min_size, size=size, backend=claims.backend, path=claims.path
        )
    return None


@dataclass(frozen=True, slots=True)
class _Route:
    """How a client uploads: `put` (any store), `post` or `multipart` (to an S3 bucket)."""

    method: UploadMethod
    bucket: Target | None = None
    plan: PartPlan | None = None


def _is_s3(backend: Backend) -> bool:
    store = store_backend(backend)
    return store is not None and store.kind == "s3"


def _s3_bucket(backend: Backend) -> Target | str:
    """The S3 bucket the library signs POST forms and part URLs for, or why not."""
    store = store_backend(backend)
    if store is None or store.kind != "s3":
        return "only S3 stores take POST policies and presigned multipart uploads"
    if not store.supports_native_signing:
        return "the store does not sign (skip_signature, or no credentials)"
    return s3_target(store)


def _bucket_of(backend: Backend) -> Target:
    bucket = _s3_bucket(backend)
    if isinstance(bucket, str):
        raise UnsupportedOperationError(
            f"Backend {backend.key!r} cannot take this upload: {bucket}.", backend=backend.key
        )
    return bucket


def _signing(credentials: Credentials | None, backend: Backend) -> Credentials:
    if credentials is None:
        raise UnsupportedOperationError(
            f"Backend {backend.key!r} has no credentials to sign an upload with.",
            backend=backend.key,
        )
    return credentials


def _etags(parts: Mapping[int, str] | Iterable[Any], claims: _Claims) -> dict[int, str]:
    """`{part number: ETag}` from the shapes a client may send (see `complete`)."""
    items: list[Any] = (
        [{"PartNumber": number, "ETag": etag} for number, etag in parts.items()]
        if isinstance(parts, Mapping)
        else list(parts)
    )
    out: dict[int, str] = {}
    for item in items:
        given = item if isinstance(item, Mapping) else {}
        number = given.get("PartNumber", given.get("part_number"))
        etag = given.get("ETag", given.get("etag"))
        if isinstance(number, str) and number.isdigit():
            number = int(number)
        if isinstance(number, bool) or not isinstance(number, int) or not isinstance(etag, str):
            raise UploadPartsError(
                'Name each part as {part number: ETag}, or as {"PartNumber": n, "ETag": "..."}.',
                backend=claims.backend,
                path=claims.path,
            )
        out[number] = etag
    return out


def _byte_count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{name} must be a positive number of bytes, not {value!r}.")
    return value


def _tuple(values: Sequence[str] | str | None) -> tuple[str, ...] | None:
    if values is None:
        return None
    return (values,) if isinstance(values, str) else tuple(values)


def _column_type(target: object) -> object:
    """The column type behind a mapped attribute or `Column`, else `target` itself."""
    prop = getattr(target, "property", None)
    columns = getattr(prop, "columns", None)
    if columns:
        return columns[0].type
    column_type = getattr(target, "type", None)
    if column_type is not None and hasattr(target, "table"):
        return column_type
    return target
