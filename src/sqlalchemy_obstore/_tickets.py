"""The implementation of `sqlalchemy_obstore.tickets`, documented and imported there."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import suppress
from datetime import timedelta
from typing import Any

from ._errors import (
    ConfigurationError,
    InvalidUploadTicketError,
    ReplayedUploadTicketError,
    StorageError,
)
from ._file_object import FileObject
from ._io import Call, Plan, run_async, run_sync
from ._prefixes import require_managed
from ._registry import BackendRegistry, storages
from ._replay_guards import Clock, MemoryReplayGuard, ReplayGuard, SqlReplayGuard, utcnow
from ._s3_requests import Target, credentials_now, credentials_now_async
from ._s3_requests import run_async as send_async
from ._s3_requests import run_sync as send
from ._s3_uploads import PartPlan, abort, finish
from ._ticket_checks import garbage, verdict
from ._ticket_claims import (
    TICKET_VERSION,
    Claims,
    decode,
    encode,
    signature,
    signing_key,
    size_violation,
)
from ._ticket_issue import (
    INCOMING_PREFIX,
    IssueTarget,
    S3Method,
    Sealing,
    UploadGrant,
    UploadMethod,
    bucket_of,
    check_request,
    issuing,
    prepare,
)
from ._ticket_multipart import part_etags, requested_parts, sign_parts
from ._validation import SNIFF_BYTES, effective_policy
from .backends import Backend, ObjectInfo

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

_MIB = 1024 * 1024


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


def _byte_count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{name} must be a positive number of bytes, not {value!r}.")
    return value


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
        self._key = signing_key(secret, "secret")
        self.copy_on_redeem = copy_on_redeem
        if s3_method not in ("auto", "post", "put"):
            raise ConfigurationError(
                f"s3_method must be 'auto', 'post' or 'put', not {s3_method!r}."
            )
        self.s3_method: S3Method = s3_method
        self.multipart_threshold = _byte_count(multipart_threshold, "multipart_threshold")
        self.part_size = _byte_count(part_size, "part_size")
        self.multipart_expires_in = _duration(multipart_expires_in, "multipart_expires_in")
        older = [signing_key(old, "previous_secrets item") for old in previous_secrets]
        self._verify_keys = (self._key, *older)
        self.registry = registry
        self._clock = clock or utcnow
        self.replay_guard: ReplayGuard = (
            replay_guard if replay_guard is not None else MemoryReplayGuard(clock=self._clock)
        )
        self.expires_in = _duration(expires_in, "expires_in")
        self.redeem_grace = _duration(redeem_grace, "redeem_grace", allow_zero=True)

    def __repr__(self) -> str:
        guard = type(self.replay_guard).__name__
        return f"UploadTickets(expires_in={self.expires_in.total_seconds()}, replay_guard={guard})"

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
            metadata: Custom str→str metadata for the resulting `FileObject` (no NUL
                or lone surrogates: `InvalidFileObjectError` otherwise).
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
        request = (target, filename, max_size, content_types, expires_in, metadata, size, method)
        return run_sync(self._issuing(content_type, *request))

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
        request = (target, filename, max_size, content_types, expires_in, metadata, size, method)
        return await run_async(self._issuing(content_type, *request))

    def _issuing(
        self,
        content_type: str | None,
        target: object,
        filename: str,
        max_size: int | None,
        content_types: Sequence[str] | str | None,
        expires_in: int | float | timedelta | None,
        metadata: Mapping[str, str] | None,
        size: int | None,
        method: UploadMethod | None,
    ) -> Plan[UploadGrant]:
        """`issue`: decide everything (no I/O), then sign, or start the upload."""
        check_request(filename, size, method)
        resolved = _resolve(self.registry, target)
        prepared = prepare(
            self,
            self._clock,
            resolved,
            filename,
            max_size,
            content_types,
            expires_in,
            metadata,
            size,
            method,
        )
        return issuing(prepared, content_type, Sealing(self._encode, self._clock))

    # -- multipart uploads ------------------------------------------------------------------
    def _multipart(self, ticket: str, *, writes: bool) -> tuple[Claims, PartPlan, Target]:
        """A verified multipart ticket, its plan and bucket.

        With `writes` (part URLs, completion), the upload's key must still lie under
        its backend's prefix, as for every write (the prefix may have changed since
        the ticket was issued); an abort writes nothing and is always allowed.
        """
        claims = self._decode(ticket)
        plan = claims.plan
        if plan is None or claims.upload_id is None:
            raise InvalidUploadTicketError(
                "This upload ticket is not for a multipart upload: upload with the grant's method.",
                backend=claims.backend,
                path=claims.path,
            )
        backend = self.registry.get_backend(claims.backend)
        if writes:
            require_managed(backend, claims.path, "upload to")
        return claims, plan, bucket_of(backend)

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
            InvalidObjectPathError: The upload's key is no longer under its backend's
                prefix (the prefix changed since the ticket was issued): abort the
                upload and issue a new ticket.

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
        claims, plan, bucket = self._multipart(ticket, writes=True)
        numbers = requested_parts(claims, plan, part_numbers)
        if (yield from self._redeemed(claims.id)):
            raise self._claim_failed(claims)
        credentials = yield Call(credentials_now, credentials_now_async, bucket)
        backend = self.registry.get_backend(claims.backend)
        return sign_parts(claims, plan, bucket, numbers, credentials, backend, self._clock)

    def _completing(
        self, ticket: str, parts: Mapping[int, str] | Iterable[Any] | None
    ) -> Plan[None]:
        claims, plan, bucket = self._multipart(ticket, writes=True)
        assert claims.upload_id is not None
        etags = None if parts is None else part_etags(parts, claims)
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
            InvalidObjectPathError: The upload's key is no longer under its backend's
                prefix (the prefix changed since the ticket was issued): abort the
                upload and issue a new ticket.
            StorageError: If the store fails a request.
        """
        run_sync(self._completing(ticket, parts))

    async def complete_async(
        self, ticket: str, parts: Mapping[int, str] | Iterable[Any] | None = None
    ) -> None:
        """Async version of [`complete`][sqlalchemy_obstore.tickets.UploadTickets.complete]."""
        await run_async(self._completing(ticket, parts))

    def _aborting(self, ticket: str) -> Call[bool]:
        claims, _, bucket = self._multipart(ticket, writes=False)
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
        return signature(key, payload)

    def _encode(self, claims: Claims) -> str:
        return encode(self._key, claims)

    def _decode(self, ticket: object) -> Claims:
        """Verify the signature and deadline and return the claims."""
        return decode(self._verify_keys, ticket, self._clock())

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

    def _file(self, claims: Claims, info: ObjectInfo, content_type: str) -> FileObject:
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

    def _claim_failed(self, claims: Claims) -> ReplayedUploadTicketError:
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
            violation = size_violation(claims, info.size)
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
            content_type, violation = verdict(claims, backend, info, head)
        leftovers = garbage(claims, violation)
        if leftovers:
            with suppress(StorageError):  # leftovers are collected by collect_garbage
                yield Call(backend.delete, backend.delete_async, leftovers)
        if violation is not None:
            raise violation
        return self._file(claims, info, content_type)


def _resolve(registry: BackendRegistry, target: object) -> IssueTarget:
    """The backend, key layout and policy of `issue`'s target."""
    from ._types import StoredObject

    column_type = _column_type(target)
    if isinstance(column_type, StoredObject):
        if column_type.registry is not None and column_type.registry is not registry:
            raise ConfigurationError(
                f"{column_type!r} resolves backends in its own registry; create "
                "UploadTickets(registry=...) with that registry to issue tickets for it."
            )
        if column_type.key_prefix is not None and not isinstance(column_type.key_prefix, str):
            raise ConfigurationError(
                f"{column_type!r} derives its key prefix from the row, and a ticket is "
                "issued before there is one. Upload through the application "
                "(FileObject.from_upload) for this column, or issue tickets for the backend "
                "and keep the row's prefix out of the key.",
                backend=column_type.backend,
            )
        backend = registry.get_backend(column_type.backend)
        return IssueTarget(
            backend,
            column_type.key_prefix,
            column_type.key_function,
            effective_policy(backend.policy, column_type.policy),
        )
    if isinstance(target, Backend):
        backend = registry.get_backend(target.key)
        if backend is not target:
            raise ConfigurationError(
                f"Backend {target.key!r} is not the one registered under that key; "
                "register it first (tickets are redeemed through the registry).",
                backend=target.key,
            )
        return IssueTarget(backend, None, None, backend.policy)
    if isinstance(target, str):
        backend = registry.get_backend(target)
        return IssueTarget(backend, None, None, backend.policy)
    raise ConfigurationError(
        "issue() takes a StoredObject column (e.g. Document.file), a StoredObject type, "
        f"a backend or a backend key, not {type(target).__name__}."
    )


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
