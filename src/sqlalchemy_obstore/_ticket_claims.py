"""What an upload ticket says, and the token that carries it.

A ticket is `<payload>.<signature>`, both unpadded base64url: the payload is the JSON
form of `Claims` (short keys), the signature its HMAC-SHA256 under the issuer's key
(`_hmac`). `encode` makes one; `decode` verifies the signature in constant time against
the current and previous keys, reads the payload strictly with msgspec (every field of
its type, the version first) and checks the redeem deadline. `size_violation` is the
ticket's size rule, applied to a declared size at issue and to the object at redeem.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Annotated

import msgspec

from ._errors import (
    ExpiredUploadTicketError,
    FileTooLargeError,
    FileTooSmallError,
    InvalidUploadTicketError,
    ValidationError,
)
from ._hmac import b64decode, b64encode, derive_key, matches_any, sign, signature_bytes
from ._s3_uploads import PartPlan
from ._validation import UploadPolicy

__all__ = (
    "TICKET_VERSION",
    "Claims",
    "decode",
    "encode",
    "signature",
    "signing_key",
    "size_violation",
)

TICKET_VERSION = 1
"""Version of the ticket payload (the `"v"` field); other versions are refused."""

_MAX_TICKET_CHARS = 16384  # refuse absurd input before decoding anything
_KEY_CONTEXT = b"sqlalchemy-obstore/upload-ticket/v1"
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_LAST_SECOND = 253402300799  # 9999-12-31T23:59:59Z, the last second a datetime holds
_Seconds = Annotated[int, msgspec.Meta(ge=0, le=_LAST_SECOND)]  # a Unix time datetime can hold


class _Version(msgspec.Struct):
    """The version field alone, read before anything else of a payload."""

    v: object = None


class Claims(msgspec.Struct, frozen=True, omit_defaults=True):
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
    def from_json(cls, raw: bytes) -> Claims:
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


def signing_key(secret: str | bytes, name: str) -> bytes:
    """The ticket key derived from `secret` (`name` is the argument's, for errors)."""
    return derive_key(secret, name, _KEY_CONTEXT)


def signature(key: bytes, payload: str) -> bytes:
    """The signature of a ticket's base64url `payload` under `key`."""
    return sign(key, payload.encode("ascii"))


def encode(key: bytes, claims: Claims) -> str:
    """The ticket carrying `claims`, signed with `key`."""
    payload = b64encode(claims.to_json())
    return f"{payload}.{b64encode(signature(key, payload))}"


def decode(keys: Sequence[bytes], ticket: object, now: datetime) -> Claims:
    """Verify the signature (under any of `keys`) and deadline and return the claims."""
    if not isinstance(ticket, str) or len(ticket) > _MAX_TICKET_CHARS:
        raise InvalidUploadTicketError("An upload ticket is a string issued by this server.")
    payload, dot, given_signature = ticket.partition(".")
    # Strictly base64url, and only the issuer's spelling of the signature: the
    # decoder would skip other characters, letting many spellings of one ticket through.
    try:
        if not dot or not _B64URL.fullmatch(payload):
            raise ValueError("payload")
        given = signature_bytes(given_signature)
        raw = b64decode(payload)
    except (binascii.Error, ValueError):
        raise InvalidUploadTicketError("The upload ticket is malformed.") from None
    if not matches_any(keys, payload.encode("ascii"), given):
        raise InvalidUploadTicketError(
            "The upload ticket's signature is not valid: it was changed, or issued with "
            "another secret. Ask the server for a new ticket."
        )
    claims = Claims.from_json(raw)
    if now >= claims.deadline:
        raise ExpiredUploadTicketError(
            f"The upload ticket expired at {claims.deadline.isoformat()}; ask the server "
            "for a new ticket and upload again.",
            expired_at=claims.deadline,
            backend=claims.backend,
            path=claims.path,
        )
    return claims


def size_violation(claims: Claims, size: int, *, declared: bool = True) -> ValidationError | None:
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
