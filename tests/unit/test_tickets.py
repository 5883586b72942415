"""Upload tickets on server-less backends: issue, verify, redeem, refuse.

The memory and local backends sign their PUT URLs through `signing.HmacUrlSigner`;
the "client upload" here is a put at the granted path (the HTTP round trip through a
signed URL is covered by `tests/integration/test_tickets.py` against S3). Time is an
injected clock, never a sleep.
"""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sqlalchemy_obstore import (
    ConfigurationError,
    ExpiredUploadTicketError,
    FileObject,
    FileTooLargeError,
    FileTooSmallError,
    InvalidContentTypeError,
    InvalidExtensionError,
    InvalidFilenameError,
    InvalidUploadTicketError,
    ObjectNotFoundError,
    ObstoreBackend,
    ReplayedUploadTicketError,
    StoredObject,
    UnsupportedOperationError,
    UploadTicketError,
    storages,
)
from sqlalchemy_obstore.registry import BackendRegistry
from sqlalchemy_obstore.signing import HmacUrlSigner
from sqlalchemy_obstore.tickets import (
    MemoryReplayGuard,
    ReplayGuard,
    SqlReplayGuard,
    UploadGrant,
    UploadTickets,
)
from sqlalchemy_obstore.validation import UploadPolicy

SECRET = "unit-test-upload-ticket-secret-0123456789"
OTHER_SECRET = "another-secret-that-is-long-enough-0123456789"
PDF = b"%PDF-1.7\n" + bytes(100)
HTML = b"<!doctype html><script>alert(1)</script>"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)


class Clock:
    """A settable clock (timezone-aware UTC)."""

    def __init__(self) -> None:
        self.now = datetime(2030, 5, 1, 12, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class Base(DeclarativeBase):
    pass


class Document(Base):
    __tablename__ = "ticket_documents"
    id: Mapped[int] = mapped_column(primary_key=True)
    file: Mapped[FileObject] = mapped_column(
        StoredObject(
            "docs",
            key_prefix="contracts",
            policy=UploadPolicy(
                max_size=1000, min_size=5, allowed_content_types=("application/pdf",)
            ),
        )
    )
    photo: Mapped[FileObject | None] = mapped_column(
        StoredObject(
            "docs",
            key_function=lambda name: f"photos/{name}",
            policy=UploadPolicy(allowed_content_types=("image/*",), allowed_extensions=(".png",)),
        )
    )
    plain: Mapped[FileObject | None] = mapped_column(StoredObject("docs"))


@pytest.fixture(params=["memory", "local"])
def docs(request: pytest.FixtureRequest, tmp_path: Path) -> ObstoreBackend:
    fs: Any = "memory://" if request.param == "memory" else tmp_path / "store"
    backend = ObstoreBackend(
        "docs", fs, prefix="tenant-1", url_signer=HmacUrlSigner(SECRET, base_url="/_storage")
    )
    storages.register_backend(backend)
    return backend


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def tickets(clock: Clock) -> UploadTickets:
    return UploadTickets(SECRET, clock=clock)


def upload(backend: ObstoreBackend, grant: UploadGrant, data: bytes, **attributes: str) -> None:
    """What the client's PUT to the signed URL does."""
    assert grant.method == "PUT"
    backend.put(grant.upload_path, data, attributes=attributes or None)


def _tamper(ticket: str, **changes: Any) -> str:
    payload, signature = ticket.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data.update(changes)
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode() + "." + signature


# -- configuration --------------------------------------------------------------------------------
def test_secret_must_be_long_and_stays_out_of_reprs() -> None:
    with pytest.raises(ConfigurationError, match="at least 32"):
        UploadTickets("short")
    with pytest.raises(ConfigurationError, match="str or bytes"):
        UploadTickets(12345)  # type: ignore[arg-type]
    tickets = UploadTickets(SECRET.encode())
    assert SECRET not in repr(tickets)
    assert SECRET not in repr(vars(tickets))
    with pytest.raises(ConfigurationError, match="positive"):
        UploadTickets(SECRET, expires_in=0)


def test_default_guard_is_memory() -> None:
    guard = UploadTickets(SECRET).replay_guard
    assert isinstance(guard, MemoryReplayGuard)
    assert isinstance(guard, ReplayGuard)


# -- the happy path -------------------------------------------------------------------------------
def test_issue_for_a_backend_key_and_redeem(docs: ObstoreBackend, tickets: UploadTickets) -> None:
    grant = tickets.issue("docs", "notes.txt", metadata={"owner": "ada"})
    assert grant.backend == "docs"
    assert grant.path.startswith("tenant-1/")
    assert grant.path.endswith("/notes.txt")
    assert grant.upload_path.startswith("tenant-1/_incoming/")
    assert grant.upload_path != grant.path
    assert grant.url.startswith("/_storage/docs/tenant-1/_incoming/")
    assert parse_qs(urlsplit(grant.url).query)["method"] == ["PUT"]
    assert grant.expires_at == tickets._clock() + timedelta(seconds=300)
    assert grant.redeem_before == grant.expires_at + timedelta(hours=1)
    # the URL is the signer's, for a PUT of exactly this backend and key
    query = {k: v[0] for k, v in parse_qs(urlsplit(grant.url).query).items()}
    assert isinstance(docs.url_signer, HmacUrlSigner)
    docs.url_signer.verify(
        "docs",
        grant.upload_path,
        method="PUT",
        expires=int(query["expires"]),
        signature=query["signature"],
        max_size=query.get("max_size"),
        ticket=query["ticket"],
    )
    assert query["ticket"] == tickets.inspect(grant.ticket)["id"]
    upload(docs, grant, b"hello world")
    file = tickets.redeem(grant.ticket)
    assert file.is_saved
    assert (file.backend, file.path, file.filename) == ("docs", grant.path, "notes.txt")
    assert file.size == 11
    assert file.content_type == "text/plain"
    assert file.etag is not None
    assert file.last_modified is not None
    assert file.metadata == {"owner": "ada"}
    assert file.checksum is None  # the bytes never passed through the application
    assert file.get_content() == b"hello world"


def test_grant_is_json_friendly_and_its_repr_hides_credentials(
    docs: ObstoreBackend, tickets: UploadTickets
) -> None:
    grant = tickets.issue(Document.file, "deal.pdf")
    data = json.loads(json.dumps(grant.as_dict()))
    assert data["method"] == "PUT"
    assert data["ticket"] == grant.ticket
    assert data["max_size"] == 1000
    assert data["content_types"] == ["application/pdf"]
    assert datetime.fromisoformat(data["expires_at"]) == grant.expires_at
    text = repr(grant)
    assert grant.ticket not in text
    assert "signature" not in text
    # compact and URL-safe
    assert set(grant.ticket) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
    )
    assert len(grant.ticket) < 400


def test_issue_for_a_column_uses_its_prefix_key_function_and_policy(
    docs: ObstoreBackend, tickets: UploadTickets
) -> None:
    grant = tickets.issue(Document.file, "deal.pdf")
    assert grant.path.startswith("tenant-1/contracts/")
    claims = tickets.inspect(grant.ticket)
    assert claims["max_size"] == 1000
    assert claims["min_size"] == 5
    assert claims["content_types"] == [["application/pdf"]]
    assert claims["sniff"] is True
    photo = tickets.issue(Document.photo, "me.png")
    assert photo.path == "tenant-1/photos/me.png"
    # the column type works as well as the attribute
    column_type = Document.__table__.c.file.type
    assert tickets.issue(column_type, "x.pdf").path.startswith("tenant-1/contracts/")


def test_sniffed_type_is_recorded(docs: ObstoreBackend, tickets: UploadTickets) -> None:
    grant = tickets.issue(Document.file, "deal.pdf")
    upload(docs, grant, PDF)  # no content type sent at all
    file = tickets.redeem(grant.ticket)
    assert file.content_type == "application/pdf"
    assert file.size == len(PDF)


def test_stored_content_type_is_used_without_sniffing(tickets: UploadTickets) -> None:
    memory = ObstoreBackend("mem", "memory://", url_signer=HmacUrlSigner(SECRET))
    storages.register_backend(memory)
    grant = tickets.issue("mem", "data")
    upload(memory, grant, b"a,b\n1,2\n", **{"Content-Type": "text/csv"})
    assert tickets.redeem(grant.ticket).content_type == "text/csv"
    grant = tickets.issue("mem", "table.csv")
    upload(memory, grant, b"a,b\n", **{"Content-Type": "application/octet-stream"})
    assert tickets.redeem(grant.ticket).content_type == "text/csv"  # from the name


async def test_async_issue_and_redeem(docs: ObstoreBackend, tickets: UploadTickets) -> None:
    grant = await tickets.issue_async(Document.file, "deal.pdf")
    await docs.put_async(grant.upload_path, PDF)
    file = await tickets.redeem_async(grant.ticket)
    assert file.size == len(PDF)
    assert await file.get_content_async() == PDF
    with pytest.raises(ReplayedUploadTicketError):
        await tickets.redeem_async(grant.ticket)


# -- refusals at issue time -----------------------------------------------------------------------
def test_issue_refuses_what_cannot_work(
    docs: ObstoreBackend, tickets: UploadTickets, tmp_path: Path
) -> None:
    with pytest.raises(InvalidExtensionError, match=r"me\.jpg"):
        tickets.issue(Document.photo, "me.jpg")
    with pytest.raises(ConfigurationError, match="StoredObject column"):
        tickets.issue(42, "a.txt")
    with pytest.raises(ConfigurationError, match="filename must be a string"):
        tickets.issue("docs", None)  # type: ignore[arg-type]
    unsigned = ObstoreBackend("plain", tmp_path)  # local files without a signer
    storages.register_backend(unsigned)
    with pytest.raises(UnsupportedOperationError):
        tickets.issue("plain", "a.txt")
    stranger = ObstoreBackend("plain", "memory://")
    with pytest.raises(ConfigurationError, match="not the one registered"):
        tickets.issue(stranger, "a.txt")


def test_issue_refuses_policies_that_need_the_bytes(tickets: UploadTickets) -> None:
    def validator(file: FileObject, head: bytes) -> None:
        return None

    backend = ObstoreBackend(
        "validated",
        "memory://",
        url_signer=HmacUrlSigner(SECRET),
        policy=UploadPolicy(validators=(validator,)),
    )
    storages.register_backend(backend)
    with pytest.raises(ConfigurationError, match="custom validators"):
        tickets.issue("validated", "a.txt")


def test_issue_refuses_a_column_of_another_registry(tickets: UploadTickets) -> None:
    other = BackendRegistry()
    column = StoredObject("docs", registry=other)
    with pytest.raises(ConfigurationError, match="own registry"):
        tickets.issue(column, "a.txt")


# -- forged, expired, replayed --------------------------------------------------------------------
def test_tampered_tickets_are_refused(docs: ObstoreBackend, tickets: UploadTickets) -> None:
    grant = tickets.issue(Document.file, "deal.pdf")
    upload(docs, grant, PDF)
    forged = [
        _tamper(grant.ticket, M=10**9),  # lift the size limit
        _tamper(grant.ticket, p="tenant-1/someone-elses/file.pdf"),  # another object
        _tamper(grant.ticket, t=[]),  # drop the type limits
        _tamper(grant.ticket, x=2**40),  # extend the deadline
        grant.ticket[:-2] + ("AA" if not grant.ticket.endswith("AA") else "BB"),
        grant.ticket.split(".")[0],
        "",
        "not a ticket",
        "a.b.c",
        "!!!.???",
        "x" * 20000,
        grant.ticket + "!",  # the decoder would skip it: refused anyway
        grant.ticket.replace(".", ".=", 1),
        " " + grant.ticket,
    ]
    for ticket in forged:
        with pytest.raises(InvalidUploadTicketError):
            tickets.redeem(ticket)
    with pytest.raises(InvalidUploadTicketError):
        tickets.redeem(None)  # type: ignore[arg-type]
    # nothing was consumed or deleted by the forgeries
    assert docs.exists(grant.upload_path)
    assert tickets.redeem(grant.ticket).size == len(PDF)


def test_ticket_of_another_secret_is_refused(docs: ObstoreBackend, clock: Clock) -> None:
    theirs = UploadTickets(OTHER_SECRET, clock=clock)
    ours = UploadTickets(SECRET, clock=clock)
    grant = theirs.issue("docs", "a.txt")
    upload(docs, grant, b"data")
    with pytest.raises(InvalidUploadTicketError, match="another secret"):
        ours.redeem(grant.ticket)
    # a rotated secret keeps its tickets valid
    rotated = UploadTickets(SECRET, previous_secrets=[OTHER_SECRET], clock=clock)
    assert rotated.redeem(grant.ticket).size == 4


def test_unknown_version_is_refused(docs: ObstoreBackend, tickets: UploadTickets) -> None:
    grant = tickets.issue("docs", "a.txt")
    claims = tickets._decode(grant.ticket)
    payload = json.loads(claims.to_json())
    payload["v"] = 2
    raw = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    signature = base64.urlsafe_b64encode(tickets._signature(tickets._key, raw)).rstrip(b"=")
    with pytest.raises(InvalidUploadTicketError, match="version 2"):
        tickets.redeem(f"{raw}.{signature.decode()}")


def _signed(tickets: UploadTickets, raw: bytes) -> str:
    """A ticket with this exact payload, signed with the issuer's key."""
    payload = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    signature = base64.urlsafe_b64encode(tickets._signature(tickets._key, payload)).rstrip(b"=")
    return f"{payload}.{signature.decode()}"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"M": "10"}, "Malformed"),  # a limit as a string
        ({"M": True}, "Malformed"),  # a boolean is not a number
        ({"x": 2**63}, "Malformed"),  # past the last moment a datetime holds
        ({"x": -1}, "Malformed"),
        ({"t": [["text/plain", 3]]}, "Malformed"),
        ({"d": {"k": 1}}, "Malformed"),  # metadata maps str to str
        ({"i": None}, "Malformed"),
    ],
)
def test_claims_are_decoded_strictly(
    docs: ObstoreBackend, tickets: UploadTickets, change: dict[str, Any], message: str
) -> None:
    """A genuine signature over a payload of the wrong shape is still refused, typed."""
    grant = tickets.issue("docs", "a.txt")
    payload = json.loads(tickets._decode(grant.ticket).to_json())
    with pytest.raises(InvalidUploadTicketError, match=message):
        tickets.redeem(_signed(tickets, json.dumps({**payload, **change}).encode()))


@pytest.mark.parametrize(
    ("raw", "message"),
    [(b"[1, 2]", "not an object"), (b"{not json", "not JSON"), (b"\xff\xfe", "not JSON")],
)
def test_a_payload_that_is_no_json_object_is_refused(
    tickets: UploadTickets, raw: bytes, message: str
) -> None:
    with pytest.raises(InvalidUploadTicketError, match=message):
        tickets.redeem(_signed(tickets, raw))


def test_unknown_payload_fields_are_ignored(docs: ObstoreBackend, tickets: UploadTickets) -> None:
    """A later version of the issuer may add fields; this one reads what it knows."""
    grant = tickets.issue("docs", "a.txt")
    upload(docs, grant, b"data")
    payload = json.loads(tickets._decode(grant.ticket).to_json())
    extended = _signed(tickets, json.dumps({**payload, "future": [1, {"x": 2}]}).encode())
    assert tickets.inspect(extended) == tickets.inspect(grant.ticket)
    assert tickets.redeem(extended).size == 4


def test_expired_ticket_is_refused(
    docs: ObstoreBackend, tickets: UploadTickets, clock: Clock
) -> None:
    grant = tickets.issue("docs", "a.txt", expires_in=60)
    upload(docs, grant, b"data")
    clock.advance(seconds=60 + 3600)  # URL lifetime + redeem grace
    with pytest.raises(ExpiredUploadTicketError) as caught:
        tickets.redeem(grant.ticket)
    assert caught.value.expired_at == grant.redeem_before
    assert isinstance(caught.value, UploadTicketError)
    clock.advance(seconds=-1)  # one second earlier it was still fine
    assert tickets.redeem(grant.ticket).size == 4


def test_redeem_grace_can_be_zero(docs: ObstoreBackend, clock: Clock) -> None:
    strict = UploadTickets(SECRET, redeem_grace=0, clock=clock)
    grant = strict.issue("docs", "a.txt", expires_in=30)
    assert grant.redeem_before == grant.expires_at
    clock.advance(seconds=30)
    with pytest.raises(ExpiredUploadTicketError):
        strict.redeem(grant.ticket)


def test_replayed_ticket_is_refused(docs: ObstoreBackend, tickets: UploadTickets) -> None:
    grant = tickets.issue("docs", "a.txt")
    upload(docs, grant, b"data")
    tickets.redeem(grant.ticket)
    with pytest.raises(ReplayedUploadTicketError, match="already redeemed"):
        tickets.redeem(grant.ticket)


async def test_concurrent_redeems_let_exactly_one_win(
    docs: ObstoreBackend, tickets: UploadTickets
) -> None:
    grant = tickets.issue("docs", "a.txt")
    upload(docs, grant, b"data")
    results = await asyncio.gather(
        *(tickets.redeem_async(grant.ticket) for _ in range(8)), return_exceptions=True
    )
    files = [r for r in results if isinstance(r, FileObject)]
    refused = [r for r in results if isinstance(r, ReplayedUploadTicketError)]
    assert len(files) == 1
    assert len(refused) == 7


def test_missing_object_does_not_use_the_ticket_up(
    docs: ObstoreBackend, tickets: UploadTickets
) -> None:
    grant = tickets.issue("docs", "a.txt")
    with pytest.raises(ObjectNotFoundError):
        tickets.redeem(grant.ticket)
    with pytest.raises(ObjectNotFoundError):
        tickets.redeem(grant.ticket)
    upload(docs, grant, b"late")
    assert tickets.redeem(grant.ticket).size == 4


# -- limits ---------------------------------------------------------------------------------------
def test_oversized_upload_is_deleted_and_the_ticket_used_up(
    docs: ObstoreBackend, tickets: UploadTickets
) -> None:
    grant = tickets.issue(Document.file, "deal.pdf")
    upload(docs, grant, PDF + bytes(1000))
    with pytest.raises(FileTooLargeError) as caught:
        tickets.redeem(grant.ticket)
    assert caught.value.limit == 1000
    assert caught.value.size_seen == len(PDF) + 1000
    assert not docs.exists(grant.path)
    assert not docs.exists(grant.upload_path)
    with pytest.raises(ReplayedUploadTicketError):
        tickets.redeem(grant.ticket)


def test_undersized_upload_is_deleted(docs: ObstoreBackend, tickets: UploadTickets) -> None:
    grant = tickets.issue(Document.file, "deal.pdf")
    upload(docs, grant, b"%PDF")
    with pytest.raises(FileTooSmallError):
        tickets.redeem(grant.ticket)
    assert not docs.exists(grant.path)
    assert not docs.exists(grant.upload_path)


def test_wrong_type_is_deleted_whatever_the_client_declares(
    docs: ObstoreBackend, tickets: UploadTickets
) -> None:
    grant = tickets.issue(Document.file, "deal.pdf")
    upload(docs, grant, HTML, **{"Content-Type": "application/pdf"})
    with pytest.raises(InvalidContentTypeError) as caught:
        tickets.redeem(grant.ticket)
    assert caught.value.detected == "text/html"
    assert not docs.exists(grant.path)
    assert not docs.exists(grant.upload_path)


def test_wildcards_never_admit_active_types(docs: ObstoreBackend, tickets: UploadTickets) -> None:
    grant = tickets.issue(Document.photo, "me.png")
    upload(docs, grant, b'<svg xmlns="http://www.w3.org/2000/svg"><script/></svg>')
    with pytest.raises(InvalidContentTypeError):
        tickets.redeem(grant.ticket)
    grant = tickets.issue(Document.photo, "me.png")
    upload(docs, grant, PNG)
    assert tickets.redeem(grant.ticket).content_type == "image/png"


async def test_async_refusals_delete_too(docs: ObstoreBackend, tickets: UploadTickets) -> None:
    grant = await tickets.issue_async(Document.file, "deal.pdf")
    await docs.put_async(grant.upload_path, HTML)
    with pytest.raises(InvalidContentTypeError):
        await tickets.redeem_async(grant.ticket)
    assert not await docs.exists_async(grant.path)
    assert not await docs.exists_async(grant.upload_path)
    grant = await tickets.issue_async(Document.file, "deal.pdf")
    with pytest.raises(ObjectNotFoundError):
        await tickets.redeem_async(grant.ticket)
    await docs.put_async(grant.upload_path, PDF)
    assert (await tickets.redeem_async(grant.ticket)).size == len(PDF)


def test_per_ticket_limits_narrow_the_column(docs: ObstoreBackend, tickets: UploadTickets) -> None:
    grant = tickets.issue(Document.file, "deal.pdf", max_size=50)
    assert grant.max_size == 50
    upload(docs, grant, PDF)  # 110 bytes: fine for the column, not for this ticket
    with pytest.raises(FileTooLargeError):
        tickets.redeem(grant.ticket)
    # a larger per-ticket limit never widens the column's
    assert tickets.issue(Document.file, "deal.pdf", max_size=10**9).max_size == 1000
    # per-ticket types apply on top of the column's (and turn sniffing on)
    grant = tickets.issue(Document.plain, "pic.png", content_types=["image/png"])
    upload(docs, grant, PDF)
    with pytest.raises(InvalidContentTypeError):
        tickets.redeem(grant.ticket)


# -- replay guards --------------------------------------------------------------------------------
def test_memory_guard_forgets_only_expired_ids(clock: Clock) -> None:
    guard = MemoryReplayGuard(clock=clock)
    assert guard.claim("a", clock.now + timedelta(minutes=1))
    assert guard.claim("b", clock.now + timedelta(minutes=10))
    assert not guard.claim("a", clock.now + timedelta(minutes=1))
    clock.advance(minutes=5)
    assert guard.claim("c", clock.now + timedelta(minutes=1))
    assert len(guard) == 2  # "a" is past its deadline and gone; "b" is kept
    assert not guard.claim("b", clock.now)
    guard.release("b")
    assert guard.claim("b", clock.now + timedelta(minutes=1))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'guard.sqlite'}"


def test_sql_guard_shared_by_two_instances(
    docs: ObstoreBackend, sqlite_url: str, clock: Clock
) -> None:
    engine = create_engine(sqlite_url)
    try:
        first = UploadTickets(SECRET, replay_guard=SqlReplayGuard(engine, clock=clock), clock=clock)
        second = UploadTickets(
            SECRET, replay_guard=SqlReplayGuard(engine, clock=clock), clock=clock
        )
        grant = first.issue("docs", "a.txt")
        upload(docs, grant, b"data")
        assert second.redeem(grant.ticket).size == 4
        with pytest.raises(ReplayedUploadTicketError):
            first.redeem(grant.ticket)
        # a missing object releases the claim in the shared table too
        pending = first.issue("docs", "b.txt")
        with pytest.raises(ObjectNotFoundError):
            second.redeem(pending.ticket)
        upload(docs, pending, b"b")
        assert first.redeem(pending.ticket).size == 1
    finally:
        engine.dispose()


def test_sql_guard_purges_expired_rows(sqlite_url: str, clock: Clock) -> None:
    engine = create_engine(sqlite_url)
    try:
        guard = SqlReplayGuard(engine, clock=clock, purge_every=3)
        assert guard.claim("old", clock.now + timedelta(minutes=1))
        assert guard.claim("new", clock.now + timedelta(hours=1))
        clock.advance(minutes=2)
        assert guard.claim("third", clock.now + timedelta(hours=1))  # 3rd claim purges
        with engine.connect() as connection:
            ids = set(connection.scalars(select(guard.table.c.ticket_id)))
        assert ids == {"new", "third"}
        assert guard.purge() == 0
    finally:
        engine.dispose()


async def test_sql_guard_with_an_async_engine(tmp_path: Path, clock: Clock) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'guard.sqlite'}")
    try:
        guard = SqlReplayGuard(engine, clock=clock)
        deadline = clock.now + timedelta(minutes=5)
        assert await guard.claim_async("t", deadline)
        assert not await guard.claim_async("t", deadline)
        await guard.release_async("t")
        assert await guard.claim_async("t", deadline)
        with pytest.raises(ConfigurationError, match="claim_async"):
            guard.claim("u", deadline)
        clock.advance(minutes=6)
        assert await guard.purge_async() == 1
        async with engine.connect() as connection:
            count = await connection.scalar(select(func.count()).select_from(guard.table))
        assert count == 0
    finally:
        await engine.dispose()


async def test_sql_guard_sync_engine_from_async_code(sqlite_url: str, clock: Clock) -> None:
    engine = create_engine(sqlite_url)
    try:
        guard = SqlReplayGuard(engine, clock=clock)
        deadline = clock.now + timedelta(minutes=5)
        assert await guard.claim_async("t", deadline)
        assert not await guard.claim_async("t", deadline)
        await guard.release_async("t")
        assert guard.claim("t", deadline)
    finally:
        engine.dispose()


def test_sql_guard_on_the_applications_metadata(sqlite_url: str) -> None:
    from sqlalchemy import MetaData

    metadata = MetaData()
    guard = SqlReplayGuard(
        create_engine(sqlite_url), metadata=metadata, table_name="used_tickets", create_table=False
    )
    assert "used_tickets" in metadata.tables
    metadata.create_all(guard.engine)  # what a migration would do  # type: ignore[arg-type]
    assert guard.claim("t", datetime.now(timezone.utc) + timedelta(minutes=1))
    assert repr(guard) == "SqlReplayGuard(table='used_tickets')"
    with pytest.raises(ConfigurationError, match="Engine or AsyncEngine"):
        SqlReplayGuard("sqlite://")  # type: ignore[arg-type]
    guard.engine.dispose()  # type: ignore[union-attr]


# -- copy on redeem -------------------------------------------------------------------------------
def test_uploading_again_after_redeem_changes_nothing(
    docs: ObstoreBackend, tickets: UploadTickets
) -> None:
    grant = tickets.issue(Document.file, "deal.pdf")
    upload(docs, grant, PDF)
    file = tickets.redeem(grant.ticket)
    assert file.path == grant.path
    assert not docs.exists(grant.upload_path)  # the staging object is gone
    # The signed URL is still valid: a client that uploads something else through it
    # reaches the staging key, which no row refers to.
    upload(docs, grant, HTML)
    assert file.get_content() == PDF
    assert docs.exists(grant.upload_path)  # left for collect_garbage


def test_without_copy_the_client_uploads_to_the_final_key(
    docs: ObstoreBackend, clock: Clock
) -> None:
    direct = UploadTickets(SECRET, copy_on_redeem=False, clock=clock)
    grant = direct.issue(Document.file, "deal.pdf")
    assert grant.upload_path == grant.path
    assert grant.as_dict()["upload_path"] == grant.path
    upload(docs, grant, PDF)
    assert direct.redeem(grant.ticket).get_content() == PDF
    refused = direct.issue(Document.file, "deal.pdf")
    upload(docs, refused, HTML)
    with pytest.raises(InvalidContentTypeError):
        direct.redeem(refused.ticket)
    assert not docs.exists(refused.path)


def test_grant_and_ticket_agree_on_the_deadline(docs: ObstoreBackend) -> None:
    tickets = UploadTickets(SECRET)  # the real clock, with microseconds
    grant = tickets.issue("docs", "a.txt")
    assert grant.redeem_before == tickets.inspect(grant.ticket)["redeem_before"]
    assert grant.redeem_before is not None
    assert grant.redeem_before.microsecond == 0


# -- one spelling, upload-time limits, what the store would serve (issue 13) ----------------------
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def test_only_the_issued_spelling_of_a_ticket_is_accepted(
    docs: ObstoreBackend, tickets: UploadTickets
) -> None:
    tried = 0
    for _ in range(12):  # signatures whose last character leaves unused bits to set
        grant = tickets.issue("docs", "a.txt")
        payload, signature = grant.ticket.split(".")
        digest = base64.urlsafe_b64decode(signature + "=")
        standard = base64.b64encode(digest).decode()
        variants = [
            f"{payload}.{signature}=",  # padded
            f"{payload}.{standard}",  # "+" and "/" (when the digest has them), padded
            f"{payload}.{standard.rstrip('=')}",
        ]
        index = _B64.index(signature[-1])
        if index | 0b11 != index:  # the same digest with the 2 unused low bits set
            variants.append(f"{payload}.{signature[:-1]}{_B64[index | 0b11]}")
        for variant in variants:
            if variant == grant.ticket:
                continue
            with pytest.raises(InvalidUploadTicketError, match="malformed"):
                tickets.redeem(variant)
            tried += 1
        upload(docs, grant, b"data")
        assert tickets.redeem(grant.ticket).size == 4
    assert tried >= 24


def test_ticket_urls_carry_the_size_limit_and_the_ticket(
    docs: ObstoreBackend, tickets: UploadTickets
) -> None:
    grant = tickets.issue(Document.file, "deal.pdf", max_size=700)
    query = {k: v[0] for k, v in parse_qs(urlsplit(grant.url).query).items()}
    assert query["max_size"] == "700"
    assert query["ticket"] == tickets.inspect(grant.ticket)["id"]
    # a plain signed PUT (FileObject.sign_upload) carries neither
    plain = FileObject(filename="x.bin", backend="docs").sign_upload(expires_in=60)
    assert "max_size" not in plain.url
    assert "ticket" not in plain.url


def test_is_redeemed_follows_the_replay_guard(
    docs: ObstoreBackend, tickets: UploadTickets, clock: Clock
) -> None:
    grant = tickets.issue(Document.file, "deal.pdf")
    ticket_id = tickets.inspect(grant.ticket)["id"]
    assert not tickets.is_redeemed(ticket_id)
    with pytest.raises(ObjectNotFoundError):  # not uploaded: the claim is released
        tickets.redeem(grant.ticket)
    assert not tickets.is_redeemed(ticket_id)
    upload(docs, grant, PDF)
    tickets.redeem(grant.ticket)
    assert tickets.is_redeemed(ticket_id)
    refused = tickets.issue(Document.file, "fake.pdf")
    upload(docs, refused, HTML)
    with pytest.raises(InvalidContentTypeError):
        tickets.redeem(refused.ticket)
    assert tickets.is_redeemed(tickets.inspect(refused.ticket)["id"])  # used up as well
    clock.advance(hours=2)  # past the redeem deadline the guard may forget
    assert not tickets.replay_guard.is_claimed(ticket_id)


async def test_sql_guard_answers_is_claimed(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'guard.sqlite'}")
    guard = SqlReplayGuard(engine)
    deadline = datetime.now(timezone.utc) + timedelta(minutes=5)
    assert not guard.is_claimed("t1")
    assert guard.claim("t1", deadline)
    assert guard.is_claimed("t1")
    assert await guard.is_claimed_async("t1")
    guard.release("t1")
    assert not guard.is_claimed("t1")
    engine.dispose()
    async_engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'guard2.sqlite'}")
    async_guard = SqlReplayGuard(async_engine)
    assert not await async_guard.is_claimed_async("t2")
    assert await async_guard.claim_async("t2", deadline)
    assert await async_guard.is_claimed_async("t2")
    await async_engine.dispose()


def test_a_guard_without_is_claimed_is_a_configuration_error(docs: ObstoreBackend) -> None:
    class OldGuard:
        def claim(self, ticket_id: str, expires_at: datetime) -> bool:
            return True

        async def claim_async(self, ticket_id: str, expires_at: datetime) -> bool:
            return True

        def release(self, ticket_id: str) -> None: ...

        async def release_async(self, ticket_id: str) -> None: ...

    tickets = UploadTickets(SECRET, replay_guard=OldGuard())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="is_claimed"):
        tickets.is_redeemed("x")


def test_a_lone_surrogate_in_the_filename_is_a_typed_error(tickets: UploadTickets) -> None:
    storages.register_backend(ObstoreBackend("mem", "memory://", url_signer=HmacUrlSigner(SECRET)))
    with pytest.raises(InvalidFilenameError):
        tickets.issue("mem", "bad\ud800.txt")


@pytest.mark.parametrize(
    ("filename", "kind"),
    [("report.pdf", "attachment"), ("page.xsl", "attachment"), ("photo.png", "inline")],
)
def test_grants_for_stores_that_serve_objects_carry_the_disposition(
    tickets: UploadTickets, filename: str, kind: str
) -> None:
    """S3 (signing needs no server) keeps what the client sends: the grant says what to send."""
    s3 = ObstoreBackend(
        "s3",
        "s3://bucket/",
        access_key_id="AKIDEXAMPLE",
        secret_access_key="secret-example-key",
        region="us-east-1",
        endpoint="http://127.0.0.1:9",
    )
    storages.register_backend(s3)
    grant = tickets.issue("s3", filename, method="put")
    disposition = grant.headers["Content-Disposition"]
    assert disposition.startswith(f"{kind};")
    assert disposition.endswith(f"filename*=UTF-8''{filename}")
    # the HMAC route sets the disposition itself: nothing to send there
    memory = ObstoreBackend("mem", "memory://", url_signer=HmacUrlSigner(SECRET))
    storages.register_backend(memory)
    assert tickets.issue("mem", filename).headers == {}


def test_redeem_records_what_the_bytes_prove(docs: ObstoreBackend, tickets: UploadTickets) -> None:
    text_only = tickets.issue("docs", "style.xsl", content_types=["text/*"])
    upload(docs, text_only, b"<x>y</x><script>alert(1)</script>", **{"Content-Type": "text/xsl"})
    assert tickets.redeem(text_only.ticket).content_type == "text/plain"
    anything = tickets.issue("docs", "page.html", content_types=["*/*"])
    upload(
        docs, anything, b"\xff\xfe\x00<script>alert(1)</script>", **{"Content-Type": "text/html"}
    )
    assert tickets.redeem(anything.ticket).content_type == "application/octet-stream"
