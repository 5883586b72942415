"""Issuing upload tickets: where the file goes, how the client uploads, the grant.

`prepare` decides everything before any I/O (the key, the limits the ticket records,
its lifetime, and the route: a signed `PUT`, or on S3 a `POST` form or a multipart
upload); `issuing` is the plan that signs the URL, fetches credentials for the form or
starts the multipart upload, and returns the
[`UploadGrant`][sqlalchemy_obstore.tickets.UploadGrant]. The issuer's settings come in
through the small `Issuer` protocol (`UploadTickets` satisfies it), its key and clock
through `Sealing`.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, NamedTuple, Protocol, TypeAlias

import msgspec

from ._attributes import DEFAULT_CONTENT_TYPE, content_disposition, guess_content_type
from ._errors import (
    ConfigurationError,
    InvalidContentTypeError,
    InvalidExtensionError,
    UnsupportedOperationError,
)
from ._fields import check_metadata
from ._hmac import b64encode
from ._io import Call, Plan
from ._keys import KeyFunction, build_key, check_filename, join_key
from ._prefixes import require_managed
from ._registry import BackendRegistry
from ._replay_guards import Clock
from ._s3_requests import (
    Operation,
    Target,
    credentials_now,
    credentials_now_async,
    s3_target,
    store_backend,
)
from ._s3_requests import run_async as send_async
from ._s3_requests import run_sync as send
from ._s3_uploads import MAX_POST_SIZE, PartPlan, create, plan_parts, post_form
from ._signing import HmacUrlSigner
from ._sigv4 import Credentials
from ._ticket_checks import store_serves
from ._ticket_claims import TICKET_VERSION, Claims, size_violation
from ._validation import UploadPolicy
from .backends import Backend

__all__ = (
    "INCOMING_PREFIX",
    "IssueTarget",
    "Issuer",
    "Prepared",
    "Route",
    "S3Method",
    "Sealing",
    "UploadGrant",
    "UploadMethod",
    "bucket_of",
    "check_request",
    "choose_route",
    "issuing",
    "prepare",
    "s3_bucket",
    "signing_credentials",
)

INCOMING_PREFIX = "_incoming"
"""Below the backend's prefix: where clients upload with `copy_on_redeem` (staging keys).

Objects left there by uploads never redeemed are collected by
[`collect_garbage`][sqlalchemy_obstore.gc.collect_garbage] like any unreferenced object.
"""

S3Method: TypeAlias = Literal["auto", "post", "put"]
"""How `UploadTickets` lets clients upload to S3 by default (see its `s3_method`)."""
UploadMethod: TypeAlias = Literal["put", "post", "multipart"]
"""How one upload goes to the store (`issue(method=...)`)."""

_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")


class Issuer(Protocol):
    """The settings of an issuer that decide how a ticket is issued (`UploadTickets`)."""

    @property
    def registry(self) -> BackendRegistry: ...
    @property
    def copy_on_redeem(self) -> bool: ...
    @property
    def s3_method(self) -> S3Method: ...
    @property
    def multipart_threshold(self) -> int: ...
    @property
    def part_size(self) -> int: ...
    @property
    def multipart_expires_in(self) -> timedelta: ...
    @property
    def expires_in(self) -> timedelta: ...
    @property
    def redeem_grace(self) -> timedelta: ...


class Sealing(NamedTuple):
    """How the grant gets its ticket (the issuer's `encode`) and its times (the clock)."""

    encode: Callable[[Claims], str]
    clock: Clock


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
class IssueTarget:
    """Where a ticket's file goes: the backend, the column's key layout and policy."""

    backend: Backend
    key_prefix: str | None
    key_function: KeyFunction | None
    policy: UploadPolicy | None


@dataclass(frozen=True, slots=True)
class Route:
    """How a client uploads: `put` (any store), `post` or `multipart` (to an S3 bucket)."""

    method: UploadMethod
    bucket: Target | None = None
    plan: PartPlan | None = None


class Prepared(NamedTuple):
    """What `prepare` decided: the target, the claims, the URL's lifetime and the route."""

    target: IssueTarget
    claims: Claims
    lifetime: timedelta
    route: Route


def check_request(filename: object, size: object, method: object) -> None:
    """Refuse a filename, declared size or method `issue` cannot take (before anything)."""
    if not isinstance(filename, str):
        raise ConfigurationError(f"filename must be a string, not {type(filename).__name__}.")
    check_filename(filename)  # InvalidFilenameError for NUL or a lone surrogate
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise ConfigurationError(f"size must be a number of bytes, not {size!r}.")
    if method is not None and method not in ("put", "post", "multipart"):
        raise ConfigurationError(f"method must be 'put', 'post' or 'multipart', not {method!r}.")


def prepare(
    issuer: Issuer,
    clock: Clock,
    resolved: IssueTarget,
    filename: str,
    max_size: int | None,
    content_types: Sequence[str] | str | None,
    expires_in: int | float | timedelta | None,
    metadata: Mapping[str, str] | None,
    size: int | None,
    method: UploadMethod | None,
) -> Prepared:
    """Everything `issue` decides before any I/O: the claims, lifetime and method.

    The arguments passed `check_request` already, and `resolved` is `issue`'s target.
    """
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
    claims = Claims(
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
        metadata=check_metadata(metadata),  # str → str, no NUL, no lone surrogate
        size=size,
    )
    if size is not None:  # refuse a declared size outside the limits before anything
        violation = size_violation(claims, size, declared=False)
        if violation is not None:
            raise violation
    route = choose_route(issuer, backend, claims, method)
    default = issuer.multipart_expires_in if route.method == "multipart" else issuer.expires_in
    lifetime = backend.check_expiry(default if expires_in is None else expires_in)
    now = clock()
    # whole seconds: what the ticket records, so grant and ticket agree
    claims = msgspec.structs.replace(
        claims,
        expires=int((now + lifetime + issuer.redeem_grace).timestamp()),
        upload_path=(
            build_key(filename, prefix=join_key(backend.prefix, INCOMING_PREFIX))
            if issuer.copy_on_redeem and route.method != "multipart"
            else None
        ),
        upload_expires=int((now + lifetime).timestamp()) if route.method == "multipart" else None,
    )
    # Every key a client may write lies under the backend's prefix (built from it
    # above), like every write of the backend's own: the POST form, the multipart
    # upload and the HMAC-signed PUT do not pass through its `put` or `sign`.
    for key in (claims.path, claims.upload_path):
        if key is not None:
            require_managed(backend, key, "let a client upload to")
    return Prepared(resolved, claims, lifetime, route)


def choose_route(
    issuer: Issuer, backend: Backend, claims: Claims, method: UploadMethod | None
) -> Route:
    """How the client uploads: `put`, `post` or `multipart` (and to which bucket)."""
    if method == "put" or (method is None and issuer.s3_method == "put"):
        return Route("put")
    bucket = s3_bucket(backend)
    if isinstance(bucket, str):
        if method is not None or (issuer.s3_method == "post" and _is_s3(backend)):
            raise UnsupportedOperationError(
                f"Backend {backend.key!r} cannot take a presigned "
                f"{'multipart upload' if method == 'multipart' else 'POST'}: {bucket}. "
                "Issue a PUT (method='put', or UploadTickets(s3_method='put')).",
                backend=backend.key,
            )
        return Route("put")  # GCS, Azure, local files, memory: a signed PUT
    size = claims.size
    if method is None:
        big = size is not None and size > min(issuer.multipart_threshold, MAX_POST_SIZE)
        method = "multipart" if big else "post"
    if method == "multipart":
        if size is None:
            raise ConfigurationError(
                "A multipart upload needs the file's size: pass size= (the client "
                "knows it, e.g. File.size in a browser).",
                backend=backend.key,
            )
        return Route("multipart", bucket, plan_parts(size, issuer.part_size))
    if size is not None and size > MAX_POST_SIZE:
        raise ConfigurationError(
            f"A POST upload creates objects up to {MAX_POST_SIZE} bytes, not {size}: "
            "use method='multipart'.",
            backend=backend.key,
        )
    return Route("post", bucket)


def _stored_type(claims: Claims, declared: str | None) -> tuple[str, str]:
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


def _upload_headers(claims: Claims, backend: Backend) -> dict[str, str]:
    headers = dict(backend.upload_headers)
    if store_serves(backend):
        # The store keeps what the client sends and serves it through signed GET
        # URLs: the disposition the library would have stored (redeem checks it).
        name = (
            "x-ms-blob-content-disposition"
            if "x-ms-blob-type" in headers
            else "Content-Disposition"
        )
        headers[name] = content_disposition(claims.filename, guess_content_type(claims.filename))
    return headers


def _hmac_signer(backend: Backend) -> HmacUrlSigner | None:
    """The HMAC signer that signs `backend`'s URLs, when the store cannot sign."""
    signer = getattr(backend, "url_signer", None)
    if isinstance(signer, HmacUrlSigner) and not getattr(backend, "supports_native_signing", True):
        return signer
    return None


def _sign_put(backend: Backend, claims: Claims, lifetime: timedelta) -> str | None:
    """Sign with the HMAC signer, binding the URL to the ticket's id and size limit.

    The signed-URL route then refuses bytes past `max_size` while they stream and
    any upload once the ticket is redeemed. `None` for stores that sign natively.
    """
    signer = _hmac_signer(backend)
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
    claims: Claims,
    url: str,
    lifetime: timedelta,
    backend: Backend,
    sealed: Sealing,
    *,
    method: str = "PUT",
    fields: Mapping[str, str] | None = None,
) -> UploadGrant:
    plan = claims.plan
    return UploadGrant(
        url=url,
        method=method,
        headers=_upload_headers(claims, backend) if method == "PUT" else {},
        expires_at=sealed.clock() + lifetime,
        ticket=sealed.encode(claims),
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
    claims: Claims,
    lifetime: timedelta,
    backend: Backend,
    route: Route,
    credentials: Credentials | None,
    content_type: str | None,
    sealed: Sealing,
) -> UploadGrant:
    """A POST form whose policy holds the ticket's limits (no I/O)."""
    assert route.bucket is not None
    stored_type, disposition = _stored_type(claims, content_type)
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
        signing_credentials(credentials, backend),
        path=claims.source,
        content_type=stored_type,
        content_disposition=disposition,
        min_size=low,
        max_size=high,
        expires_in=lifetime,
        now=sealed.clock(),
    )
    return _grant(claims, form.url, lifetime, backend, sealed, method="POST", fields=form.fields)


def _started(claims: Claims, route: Route, upload_id: str) -> Claims:
    assert route.plan is not None
    return msgspec.structs.replace(claims, upload_id=upload_id, part_size=route.plan.part_size)


def issuing(prepared: Prepared, content_type: str | None, sealed: Sealing) -> Plan[UploadGrant]:
    """`issue` once `prepare` decided everything: sign, or start the upload."""
    resolved, claims, lifetime, route = prepared
    backend = resolved.backend
    if route.bucket is None:
        url = _sign_put(backend, claims, lifetime) or (
            yield Call(
                backend.sign,
                backend.sign_async,
                claims.source,
                method="PUT",
                expires_in=lifetime,
            )
        )
        return _grant(claims, url, lifetime, backend, sealed)
    if route.method == "post":
        credentials = yield Call(credentials_now, credentials_now_async, route.bucket)
        return _post_grant(claims, lifetime, backend, route, credentials, content_type, sealed)
    creating = _create(claims, route, content_type)
    upload_id = yield Call(send, send_async, route.bucket, creating)
    started = _started(claims, route, upload_id)
    return _grant(started, "", lifetime, backend, sealed, method="MULTIPART")


def _create(claims: Claims, route: Route, content_type: str | None) -> Operation[str]:
    """Start the multipart upload of `claims.path`, with the attributes it keeps."""
    assert route.bucket is not None
    stored_type, disposition = _stored_type(claims, content_type)
    return create(
        route.bucket,
        claims.path,
        content_type=stored_type,
        content_disposition=disposition,
    )


def _is_s3(backend: Backend) -> bool:
    store = store_backend(backend)
    return store is not None and store.kind == "s3"


def s3_bucket(backend: Backend) -> Target | str:
    """The S3 bucket the library signs POST forms and part URLs for, or why not."""
    store = store_backend(backend)
    if store is None or store.kind != "s3":
        return "only S3 stores take POST policies and presigned multipart uploads"
    if not store.supports_native_signing:
        return "the store does not sign (skip_signature, or no credentials)"
    return s3_target(store)


def bucket_of(backend: Backend) -> Target:
    """The S3 bucket of a multipart upload's backend (`UnsupportedOperationError` if none)."""
    bucket = s3_bucket(backend)
    if isinstance(bucket, str):
        raise UnsupportedOperationError(
            f"Backend {backend.key!r} cannot take this upload: {bucket}.", backend=backend.key
        )
    return bucket


def signing_credentials(credentials: Credentials | None, backend: Backend) -> Credentials:
    """The credentials to sign with (`UnsupportedOperationError` without any)."""
    if credentials is None:
        raise UnsupportedOperationError(
            f"Backend {backend.key!r} has no credentials to sign an upload with.",
            backend=backend.key,
        )
    return credentials


def _tuple(values: Sequence[str] | str | None) -> tuple[str, ...] | None:
    if values is None:
        return None
    return (values,) if isinstance(values, str) else tuple(values)
