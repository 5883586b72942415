"""Incomplete multipart uploads: find and abort them, and read the rule that expires them.

A multipart upload that is neither completed nor aborted keeps its parts, invisible to
an object listing and billed as storage, until someone aborts it. obstore aborts the
uploads it sees fail, but a process killed during an upload (or a completion that
fails) leaves one behind, and obstore has no call to list them. This module makes the
few S3 requests needed, signed by [`_sigv4`][sqlalchemy_obstore._sigv4]:

- `ListMultipartUploads` under a prefix and `AbortMultipartUpload` of one upload, used
  by the garbage collector;
- `GetBucketLifecycleConfiguration`, to tell whether the bucket expires incomplete
  uploads itself (an `AbortIncompleteMultipartUpload` rule), used by
  `sqlalchemy-obstore backends --check`.

What applies elsewhere (see [`support`][sqlalchemy_obstore._multipart.support]):
Azure discards uncommitted blocks after seven days on its own; GCS keeps XML-API
multipart uploads until they are aborted, but the library does not list them there (a
lifecycle rule, `AbortIncompleteMultipartUpload` exists on GCS too, is the remedy);
local files: obstore stages a multipart upload in a `<key>#<n>` file that its listing
hides, so those files are found by walking the directory; memory stores lose
everything with the process.

**Shape.** Each operation is a generator that yields unsigned
[`Request`][sqlalchemy_obstore._multipart.Request]s and receives
[`Response`][sqlalchemy_obstore._multipart.Response]s: the decisions (which URL, which
page next, what the XML says) are plain code without I/O. Two small drivers send the
requests: httpx's `Client` in sync code, its `AsyncClient` in async code (and inside
SQLAlchemy's greenlet bridge); each public function picks the driver for its caller.
httpx is the project's HTTP client already (the `http` extra), offers both APIs over one
request model, and understands proxies, TLS options and timeouts as obstore's
`client_options` describe them; the standard library has no async HTTP client.

The request model, the drivers and the bucket's address
([`Target`][sqlalchemy_obstore._multipart.Target],
[`s3_target`][sqlalchemy_obstore._multipart.s3_target],
[`run_sync`][sqlalchemy_obstore._multipart.run_sync],
[`run_async`][sqlalchemy_obstore._multipart.run_async]) serve the direct uploads of
[`_s3_uploads`][sqlalchemy_obstore._s3_uploads] too (create, list the parts of,
complete and abort a browser's multipart upload).

**Credentials** are the store's: explicit keys in its configuration, a
`credential_provider`, else the `AWS_*` environment variables obstore reads too. A store
that gets its credentials from the instance or container (IMDS, ECS, web identity)
cannot be checked this way; the lifecycle rule is then the way to expire leftovers.
"""

from __future__ import annotations

import inspect
import os
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Awaitable, Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, TypeVar

from . import _io
from ._sigv4 import Credentials, encode_path, encode_query, sign_headers
from ._stores import truthy
from .backends import Backend, ObstoreBackend
from .errors import (
    MissingDependencyError,
    StorageError,
    StorageOperationError,
    StoragePermissionError,
    UnsupportedOperationError,
    redact,
)

if TYPE_CHECKING:
    import httpx

__all__ = (
    "IncompleteUpload",
    "LifecycleRule",
    "Operation",
    "Request",
    "Response",
    "Target",
    "abort_operation",
    "abort_upload",
    "abort_upload_async",
    "credentials_now",
    "credentials_now_async",
    "failure",
    "last_activity",
    "lifecycle_rule",
    "lifecycle_rule_async",
    "list_incomplete_uploads",
    "list_incomplete_uploads_async",
    "may_hold_uploads",
    "parse_time",
    "parse_xml",
    "run_async",
    "run_sync",
    "s3_target",
    "store_backend",
    "support",
)

_T = TypeVar("_T")
_MAX_BODY = 16 * 1024 * 1024  # no S3 answer we read comes close; refuse anything bigger
_PAGE = 1000
_DEFAULT_TIMEOUT = 30.0  # obstore's default request timeout
_DEFAULT_CONNECT_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class IncompleteUpload:
    """A multipart upload that was started and neither completed nor aborted.

    Attributes:
        path: The object key it would create, relative to the backend's store (as the
            backend's other paths are).
        upload_id: The store's id of the upload.
        initiated: When the upload was started (the store's clock).
    """

    path: str
    upload_id: str
    initiated: datetime


RuleState: TypeAlias = Literal["set", "missing", "not_checked", "not_needed"]


@dataclass(frozen=True, slots=True)
class LifecycleRule:
    """Whether the store expires incomplete multipart uploads under a backend's prefix.

    Attributes:
        state: `set` (an enabled `AbortIncompleteMultipartUpload` rule covers the
            prefix), `missing` (none does), `not_checked` (it could not be read, see
            `detail`) or `not_needed` (the store discards leftovers itself, or has
            none).
        days: The rule's `DaysAfterInitiation`, when set.
        detail: A readable explanation.
    """

    state: RuleState
    days: int | None
    detail: str


# -- requests and responses (no I/O) --------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Request:
    """An unsigned request: the driver signs and sends it.

    Attributes:
        method: The HTTP method.
        url: The absolute URL, built with `Target.url` (canonical encoding).
        body: The body (hashed into the signature).
        headers: Further headers to sign and send (`Content-Type`, ...).
    """

    method: str
    url: str
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Response:
    """What came back: status, body (bounded) and headers (names in lower case)."""

    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


Operation: TypeAlias = Generator[Request, Response, _T]


@dataclass(frozen=True, slots=True)
class Target:
    """Where and how to reach one bucket, from the store's own configuration.

    Built by [`s3_target`][sqlalchemy_obstore._multipart.s3_target]; `key` and `path`
    translate between the backend's paths and the bucket's keys (a store prefix, as in
    `s3://bucket/prefix/`, lies between them), `url` builds request URLs.
    """

    backend: str
    bucket: str
    bucket_url: str  # path-style `https://host/bucket` or virtual-hosted `https://bucket.host`
    region: str
    store_prefix: str  # the store's own key prefix (`s3://bucket/prefix/`), "" if none
    credentials: Callable[[], Credentials | Awaitable[Credentials] | None]
    timeout: float
    connect_timeout: float
    verify: bool
    proxy: str | None

    def key(self, path: str) -> str:
        """The bucket key of a backend path."""
        return f"{self.store_prefix}/{path}" if self.store_prefix else path

    def path(self, key: str) -> str | None:
        """The backend path of a bucket key; `None` outside the store's prefix."""
        if not self.store_prefix:
            return key
        head = self.store_prefix + "/"
        return key[len(head) :] if key.startswith(head) else None

    def url(self, key: str = "", query: list[tuple[str, str]] | None = None) -> str:
        """The URL of `key` (the bucket itself when empty) with `query`, canonically encoded."""
        url = self.bucket_url.rstrip("/") + "/" + encode_path(key)
        return url + ("?" + encode_query(query) if query else "")


# -- what applies to which store ------------------------------------------------------------------
def store_backend(backend: Backend) -> ObstoreBackend | None:
    """The `ObstoreBackend` under `backend` (through delegating wrappers), if any."""
    seen = 0
    while not isinstance(backend, ObstoreBackend) and seen < 8:
        inner = getattr(backend, "inner", None)
        if not isinstance(inner, Backend):
            return None
        backend, seen = inner, seen + 1
    return backend if isinstance(backend, ObstoreBackend) else None


def support(backend: Backend) -> str | None:
    """`None` when incomplete uploads can be listed in `backend`, else why not.

    Example:
        >>> support(ObstoreBackend("a", "az://container/", account_name="x", skip_signature=True))
        'Azure discards uncommitted blocks after 7 days by itself'
    """
    store = store_backend(backend)
    if store is None:
        return f"{type(backend).__name__} does not expose an obstore store to inspect"
    if store.kind == "s3":
        target = s3_target(store)
        return target if isinstance(target, str) else None
    if store.kind == "local":
        return None
    return _NOT_LISTABLE.get(store.kind, f"{store.kind} stores have no multipart uploads to list")


def may_hold_uploads(backend: Backend) -> bool:
    """Whether incomplete uploads can outlive a process in this store (not in memory)."""
    store = store_backend(backend)
    return store is None or store.kind not in ("memory", "http")


_NOT_LISTABLE = {
    "azure": "Azure discards uncommitted blocks after 7 days by itself",
    "gcs": (
        "GCS multipart uploads are not listed by the library: set a lifecycle rule "
        "(AbortIncompleteMultipartUpload) on the bucket"
    ),
    "memory": "memory stores keep no multipart uploads after the process ends",
    "http": "HTTP stores have no multipart uploads",
}


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


_DURATION_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Zµ]*)")
_UNITS = {
    "ns": 1e-9, "nsec": 1e-9, "us": 1e-6, "µs": 1e-6, "usec": 1e-6, "ms": 1e-3, "msec": 1e-3,
    "": 1.0, "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hr": 3600.0, "hour": 3600.0, "hours": 3600.0, "d": 86400.0, "day": 86400.0,
    "days": 86400.0,
}  # fmt: skip


def _seconds(value: object, default: float) -> float:
    """A duration from obstore's client options (`"2m 3s"`, `"500ms"`, a timedelta)."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str) or not value.strip():
        return default
    total, position = 0.0, 0
    while position < len(value):
        match = _DURATION_PART.match(value, position)
        if match is None or match.group(2) not in _UNITS:
            return default
        total += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
        while position < len(value) and value[position] == " ":
            position += 1
    return total if total > 0 else default


def s3_target(backend: ObstoreBackend) -> Target | str:
    """How to reach the bucket of an S3 backend, or why the library cannot.

    The endpoint, region, credentials and client options are the store's (else the
    `AWS_*` environment variables obstore reads too); a string explains what is missing
    (no bucket, credentials only obstore can obtain).
    """
    store: Any = backend.store
    config: Mapping[str, Any] = getattr(store, "config", None) or {}
    options: Mapping[str, Any] = getattr(store, "client_options", None) or {}
    bucket = config.get("bucket")
    if not isinstance(bucket, str) or not bucket:
        return "the store's bucket is unknown"
    region = str(config.get("region") or _env("AWS_REGION", "AWS_DEFAULT_REGION") or "us-east-1")
    endpoint = config.get("endpoint") or _env(
        "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"
    )
    virtual = truthy(config.get("virtual_hosted_style_request"))
    if endpoint:
        # obstore's rule: a virtual-hosted endpoint already names the bucket.
        bucket_url = (
            str(endpoint).rstrip("/") if virtual else f"{str(endpoint).rstrip('/')}/{bucket}"
        )
    elif virtual:
        bucket_url = f"https://{bucket}.s3.{region}.amazonaws.com"
    else:
        bucket_url = f"https://s3.{region}.amazonaws.com/{bucket}"
    credentials = _credentials(store, config)
    if isinstance(credentials, str):
        return credentials
    return Target(
        backend=backend.key,
        bucket=bucket,
        bucket_url=bucket_url,
        region=region,
        store_prefix=str(getattr(store, "prefix", None) or "").strip("/"),
        credentials=credentials,
        timeout=_seconds(options.get("timeout"), _DEFAULT_TIMEOUT),
        connect_timeout=_seconds(options.get("connect_timeout"), _DEFAULT_CONNECT_TIMEOUT),
        verify=not truthy(options.get("allow_invalid_certificates")),
        proxy=str(options["proxy_url"]) if options.get("proxy_url") else None,
    )


def _credentials(
    store: Any, config: Mapping[str, Any]
) -> Callable[[], Credentials | Awaitable[Credentials] | None] | str:
    if truthy(config.get("skip_signature")):
        return lambda: None  # a public bucket: unsigned requests
    provider = getattr(store, "credential_provider", None)
    if provider is not None:
        return lambda: _from_provider(provider())
    key = config.get("access_key_id") or _env("AWS_ACCESS_KEY_ID")
    secret = config.get("secret_access_key") or _env("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        token = config.get("session_token") or config.get("token") or _env("AWS_SESSION_TOKEN")
        fixed = Credentials(str(key), str(secret), str(token) if token else None)
        return lambda: fixed
    return (
        "the store's credentials come from the instance, container or web identity, "
        "which the library cannot use for these requests; set a lifecycle rule "
        "(AbortIncompleteMultipartUpload) on the bucket"
    )


def _from_provider(value: Any) -> Credentials | Awaitable[Credentials]:
    if inspect.isawaitable(value):

        async def resolved() -> Credentials:
            return _as_credentials(await value)

        return resolved()
    return _as_credentials(value)


def _as_credentials(value: Any) -> Credentials:
    if not isinstance(value, Mapping) or not value.get("access_key_id"):
        raise StoragePermissionError(
            "The store's credential_provider returned no S3 credential "
            "(expected a mapping with access_key_id and secret_access_key)."
        )
    token = value.get("token") or value.get("session_token")
    return Credentials(
        str(value["access_key_id"]), str(value["secret_access_key"]), str(token) if token else None
    )


# -- the operations (no I/O) ----------------------------------------------------------------------
def parse_xml(response: Response, target: Target, what: str) -> ElementTree.Element:
    """The XML body of `response` with namespaces dropped from every tag.

    Raises:
        StorageOperationError: If the body is not XML.
    """
    try:
        root = ElementTree.fromstring(response.body)
    except ElementTree.ParseError as exc:
        raise StorageOperationError(
            f"{what} on backend {target.backend!r}: the store answered with malformed XML.",
            backend=target.backend,
            operation=what,
        ) from exc
    for element in root.iter():  # drop the namespace: S3 and compatible servers differ
        element.tag = element.tag.rsplit("}", 1)[-1]
    return root


_HOUSEKEEPING_RIGHTS = (
    "s3:ListBucketMultipartUploads, s3:AbortMultipartUpload, s3:GetLifecycleConfiguration"
)


def failure(
    response: Response, target: Target, what: str, *, rights: str = _HOUSEKEEPING_RIGHTS
) -> StorageError:
    """The typed error for a refused or failed request (the store's code and message).

    Args:
        response: The store's answer.
        target: The bucket asked.
        what: What was asked, for the message ("listing ...").
        rights: The IAM actions the request needs, named when the store refuses it.
    """
    code = message = ""
    try:
        root = ElementTree.fromstring(response.body)
        code = (root.findtext(".//{*}Code") or root.findtext(".//Code") or "").strip()
        message = (root.findtext(".//{*}Message") or root.findtext(".//Message") or "").strip()
    except ElementTree.ParseError:
        pass
    detail = redact(
        f"HTTP {response.status}"
        + (f" {code}" if code else "")
        + (f": {message}" if message else "")
    )
    if response.status in (401, 403):
        return StoragePermissionError(
            f"The store refused {what} on backend {target.backend!r} ({detail}). Check the "
            f"backend's credentials and rights ({rights}).",
            backend=target.backend,
        )
    if response.status in (400, 405, 501) and code in ("", "NotImplemented", "MethodNotAllowed"):
        return UnsupportedOperationError(
            f"{what} is not supported by the store of backend {target.backend!r} ({detail}).",
            backend=target.backend,
        )
    return StorageOperationError(
        f"{what} failed on backend {target.backend!r}: {detail}",
        backend=target.backend,
        operation=what,
    )


_TIMESTAMP = re.compile(
    r"(?P<base>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(?P<fraction>\d+))?(?P<zone>Z|[+-]\d\d:?\d\d)?"
)


def parse_time(text: str | None) -> datetime:
    """An S3 timestamp (`2026-01-02T03:04:05.000Z`, any fraction, any offset) in UTC.

    Unreadable or missing: the epoch, which reads as "long ago" (the collector then
    looks at the upload's parts before it decides anything).
    """
    match = _TIMESTAMP.match((text or "").strip())
    if match is None:
        return datetime.fromtimestamp(0, timezone.utc)
    fraction = (match["fraction"] or "")[:6].ljust(6, "0")
    zone = match["zone"] or "Z"
    zone = "+00:00" if zone == "Z" else zone if ":" in zone else f"{zone[:3]}:{zone[3:]}"
    moment = datetime.fromisoformat(f"{match['base']}.{fraction}{zone}")
    return moment.astimezone(timezone.utc)


def _list(target: Target, prefix: str) -> Operation[list[IncompleteUpload]]:
    """Every incomplete upload whose key starts with the store key `prefix`, page by page."""
    found: list[IncompleteUpload] = []
    markers: list[tuple[str, str]] = []
    while True:
        query = [("uploads", ""), ("max-uploads", str(_PAGE)), ("prefix", prefix), *markers]
        response = yield Request("GET", target.url(query=query))
        if response.status != 200:
            raise failure(response, target, "listing incomplete multipart uploads")
        root = parse_xml(response, target, "listing incomplete multipart uploads")
        for upload in root.iter("Upload"):
            key = upload.findtext("Key") or ""
            path = target.path(key)
            if path is None or not key.startswith(prefix):
                continue
            upload_id = upload.findtext("UploadId") or ""
            found.append(
                IncompleteUpload(path, upload_id, parse_time(upload.findtext("Initiated")))
            )
        truncated = (root.findtext("IsTruncated") or "").strip().lower() == "true"
        key_marker = root.findtext("NextKeyMarker") or ""
        id_marker = root.findtext("NextUploadIdMarker") or ""
        if not truncated or not (key_marker or id_marker):
            return found
        if markers == [("key-marker", key_marker), ("upload-id-marker", id_marker)]:
            return found  # a server that repeats its page: stop rather than loop
        markers = [("key-marker", key_marker), ("upload-id-marker", id_marker)]


def _activity(target: Target, upload: IncompleteUpload) -> Operation[datetime | None]:
    """When the upload last changed: its newest part, else its start; `None` if gone."""
    latest = upload.initiated
    marker = ""
    url_key = target.key(upload.path)
    while True:
        query = [("uploadId", upload.upload_id), ("max-parts", str(_PAGE))]
        if marker:
            query.append(("part-number-marker", marker))
        response = yield Request("GET", target.url(url_key, query))
        if response.status == 404:
            return None
        if response.status != 200:
            raise failure(response, target, f"listing the parts of {upload.path!r}")
        root = parse_xml(response, target, f"listing the parts of {upload.path!r}")
        for part in root.iter("Part"):
            latest = max(latest, parse_time(part.findtext("LastModified")))
        truncated = (root.findtext("IsTruncated") or "").strip().lower() == "true"
        following = (root.findtext("NextPartNumberMarker") or "").strip()
        if not truncated or not following or following == marker:
            return latest
        marker = following


def abort_operation(target: Target, upload: IncompleteUpload) -> Operation[bool]:
    """Abort one upload; `False` when it was already gone (completed or aborted).

    `upload.initiated` plays no part: an `IncompleteUpload` built from a key and an
    upload id alone (a direct upload's, see `_s3_uploads`) is aborted the same way.
    """
    response = yield Request(
        "DELETE", target.url(target.key(upload.path), [("uploadId", upload.upload_id)])
    )
    if response.status in (200, 204):
        return True
    if response.status == 404:
        return False
    raise failure(response, target, f"aborting the multipart upload of {upload.path!r}")


def _covers(rule_prefix: str, managed: str) -> bool:
    return not rule_prefix or managed.startswith(rule_prefix)


def _lifecycle(target: Target, managed_prefix: str) -> Operation[LifecycleRule]:
    response = yield Request("GET", target.url(query=[("lifecycle", "")]))
    if response.status == 404:
        return LifecycleRule("missing", None, "the bucket has no lifecycle configuration")
    if response.status != 200:
        raise failure(response, target, "reading the bucket's lifecycle rules")
    root = parse_xml(response, target, "reading the bucket's lifecycle rules")
    best: tuple[int, str] | None = None
    for rule in root.iter("Rule"):
        if (rule.findtext("Status") or "").strip() != "Enabled":
            continue
        days_text = rule.findtext("AbortIncompleteMultipartUpload/DaysAfterInitiation")
        if not days_text or not days_text.strip().isdigit():
            continue
        filter_ = rule.find("Filter")
        if filter_ is not None and filter_.find("And/Tag") is not None:
            continue  # a tag filter never matches an upload
        prefix = (
            (filter_.findtext("Prefix") or filter_.findtext("And/Prefix") or "")
            if filter_ is not None
            else (rule.findtext("Prefix") or "")
        )
        if not _covers(prefix, managed_prefix):
            continue
        days = int(days_text)
        name = (rule.findtext("ID") or "").strip() or "(unnamed)"
        if best is None or days < best[0]:
            best = (days, name)
    if best is None:
        return LifecycleRule(
            "missing",
            None,
            "no enabled rule aborts incomplete multipart uploads under "
            f"{managed_prefix or '(the whole bucket)'!r}",
        )
    return LifecycleRule(
        "set", best[0], f"rule {best[1]!r} aborts incomplete uploads after {best[0]} day(s)"
    )


# -- the drivers ----------------------------------------------------------------------------------
def _httpx() -> Any:
    try:
        import httpx
    except ImportError as exc:
        raise MissingDependencyError("httpx", "http") from exc
    return httpx


def _client_options(target: Target) -> dict[str, Any]:
    httpx = _httpx()
    options: dict[str, Any] = {
        "timeout": httpx.Timeout(target.timeout, connect=target.connect_timeout),
        "verify": target.verify,
        "follow_redirects": False,
    }
    if target.proxy:
        options["proxy"] = target.proxy
    return options


def _signed(request: Request, target: Target, credentials: Credentials | None) -> dict[str, str]:
    if credentials is None:
        return dict(request.headers)
    return sign_headers(
        request.method,
        request.url,
        credentials=credentials,
        region=target.region,
        headers=request.headers,
        body=request.body,
    )


def _transport_error(target: Target, exc: BaseException, what: str) -> StorageOperationError:
    return StorageOperationError(
        f"{what} failed on backend {target.backend!r}: "
        f"{redact(type(exc).__name__ + ': ' + str(exc))}",
        backend=target.backend,
        operation=what,
    )


def _read(response: httpx.Response, chunks: Iterator[bytes]) -> Response:
    body = bytearray()
    for chunk in chunks:
        body += chunk
        if len(body) > _MAX_BODY:
            break
    return _response(response, body)


def _response(response: httpx.Response, body: bytearray) -> Response:
    headers = {name.lower(): value for name, value in response.headers.items()}
    return Response(response.status_code, bytes(body[:_MAX_BODY]), headers)


def credentials_now(target: Target) -> Credentials | None:
    """The credentials to sign with now, from sync code (`None`: unsigned requests).

    Raises:
        UnsupportedOperationError: If the store's `credential_provider` is async.
    """
    credentials = target.credentials()
    if inspect.isawaitable(credentials):
        close = getattr(credentials, "close", None)
        if close is not None:
            close()
        raise UnsupportedOperationError(
            f"Backend {target.backend!r} has an async credential_provider: use the async API.",
            backend=target.backend,
        )
    return credentials


async def credentials_now_async(target: Target) -> Credentials | None:
    """Async version of [`credentials_now`][sqlalchemy_obstore._multipart.credentials_now]."""
    credentials = target.credentials()
    if inspect.isawaitable(credentials):
        return await credentials
    return credentials


def run_sync(target: Target, operation: Operation[_T]) -> _T:
    """Send the requests of `operation` with httpx's `Client`; its result.

    Raises:
        StorageOperationError: If a request cannot be sent (transport error).
        UnsupportedOperationError: If the store's credential provider is async.
        MissingDependencyError: Without httpx.
    """
    httpx = _httpx()
    credentials = credentials_now(target)
    with httpx.Client(**_client_options(target)) as client:
        request = next(operation)
        while True:
            try:
                with client.stream(
                    request.method,
                    request.url,
                    content=request.body or None,
                    headers=_signed(request, target, credentials),
                ) as streamed:
                    response = _read(streamed, streamed.iter_bytes())
            except httpx.HTTPError as exc:
                operation.close()
                raise _transport_error(target, exc, f"{request.method} request") from exc
            try:
                request = operation.send(response)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]


async def run_async(target: Target, operation: Operation[_T]) -> _T:
    """Async version of [`run_sync`][sqlalchemy_obstore._multipart.run_sync] (httpx's
    `AsyncClient`)."""
    httpx = _httpx()
    credentials = await credentials_now_async(target)
    async with httpx.AsyncClient(**_client_options(target)) as client:
        request = next(operation)
        while True:
            try:
                async with client.stream(
                    request.method,
                    request.url,
                    content=request.body or None,
                    headers=_signed(request, target, credentials),
                ) as streamed:
                    body = bytearray()
                    async for chunk in streamed.aiter_bytes():
                        body += chunk
                        if len(body) > _MAX_BODY:
                            break
                    response = _response(streamed, body)
            except httpx.HTTPError as exc:
                operation.close()
                raise _transport_error(target, exc, f"{request.method} request") from exc
            try:
                request = operation.send(response)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]


def _run(target: Target, operation: Operation[_T]) -> _T:
    """Run with the driver that suits the caller: async inside the greenlet bridge."""
    call: _io.Call[_T] = _io.Call(run_sync, run_async, target, operation)
    return _io.run(call)


def _checked_target(backend: Backend) -> Target:
    store = store_backend(backend)
    reason = support(backend)
    if store is None or reason is not None or store.kind != "s3":
        raise UnsupportedOperationError(
            f"Incomplete multipart uploads cannot be listed in backend {backend.key!r}: {reason}.",
            backend=backend.key,
        )
    target = s3_target(store)
    assert not isinstance(target, str)  # support() said so
    return target


# -- local files: obstore's staging files -------------------------------------------------------
# obstore's LocalStore writes a multipart upload to `<key>#<n>` next to the destination and
# renames it on completion (deletes it on abort). A killed process leaves that file, which
# obstore's own listing hides. Here it is found by walking the directory; "aborting" it is
# deleting the file.
_STAGED = re.compile(r"^(?P<name>.+)#(?P<n>\d+)$")


def _local_root(backend: Backend) -> Path | None:
    store = store_backend(backend)
    if store is None or store.kind != "local":
        return None
    root = getattr(store.store, "prefix", None)
    return Path(root) if root is not None else None


def _local_list(root: Path, prefix: str | None) -> list[IncompleteUpload]:
    base = root / prefix.strip("/") if prefix else root
    found = []
    for directory, _, names in os.walk(base):
        for name in names:
            match = _STAGED.match(name)
            if match is None:
                continue
            file = Path(directory) / name
            try:
                modified = file.stat().st_mtime
            except FileNotFoundError:
                continue
            path = (Path(directory) / match["name"]).relative_to(root).as_posix()
            found.append(
                IncompleteUpload(path, name, datetime.fromtimestamp(modified, timezone.utc))
            )
    return found


def _local_staged(root: Path, upload: IncompleteUpload) -> Path:
    staged = (root / upload.path).parent / upload.upload_id
    if not _STAGED.match(upload.upload_id) or root not in staged.parents:
        raise UnsupportedOperationError(f"{upload.upload_id!r} is not a staging file name.")
    return staged


def _local_activity(root: Path, upload: IncompleteUpload) -> datetime | None:
    try:
        modified = _local_staged(root, upload).stat().st_mtime
    except FileNotFoundError:
        return None
    return datetime.fromtimestamp(modified, timezone.utc)


def _local_abort(root: Path, upload: IncompleteUpload) -> bool:
    try:
        _local_staged(root, upload).unlink()
    except FileNotFoundError:
        return False
    return True


# -- the entry points of this private module ------------------------------------------------------
def _managed_key_prefix(target: Target, prefix: str | None) -> str:
    key = target.key(prefix.strip("/")) if prefix else target.store_prefix
    return key + "/" if key else ""


def list_incomplete_uploads(backend: Backend, prefix: str | None) -> list[IncompleteUpload]:
    """The incomplete uploads under `prefix` (directory-like; `None`: the whole store).

    Sync, or async through the greenlet bridge when called there (local files are
    always walked synchronously).

    Raises:
        UnsupportedOperationError: If the store cannot be asked (see `support`).
        MissingDependencyError: Without httpx (`pip install 'sqlalchemy-obstore[http]'`).
        StorageError: If a request fails.
    """
    root = _local_root(backend)
    if root is not None:
        return _local_list(root, prefix)
    target = _checked_target(backend)
    return _run(target, _list(target, _managed_key_prefix(target, prefix)))


async def list_incomplete_uploads_async(
    backend: Backend, prefix: str | None
) -> list[IncompleteUpload]:
    """Async version of
    [`list_incomplete_uploads`][sqlalchemy_obstore._multipart.list_incomplete_uploads].
    """
    root = _local_root(backend)
    if root is not None:
        return _local_list(root, prefix)
    target = _checked_target(backend)
    return await run_async(target, _list(target, _managed_key_prefix(target, prefix)))


def last_activity(backend: Backend, upload: IncompleteUpload) -> datetime | None:
    """When `upload` last received a part (else when it started); `None` if it is gone.

    An upload older than a grace period may still be running (a large file on a slow
    link): its newest part tells. Sync, or async through the greenlet bridge.
    """
    root = _local_root(backend)
    if root is not None:
        return _local_activity(root, upload)
    target = _checked_target(backend)
    return _run(target, _activity(target, upload))


def abort_upload(backend: Backend, upload: IncompleteUpload) -> bool:
    """Abort `upload`; `False` if it no longer existed. Sync, or async in the bridge."""
    root = _local_root(backend)
    if root is not None:
        return _local_abort(root, upload)
    target = _checked_target(backend)
    return _run(target, abort_operation(target, upload))


async def abort_upload_async(backend: Backend, upload: IncompleteUpload) -> bool:
    """Async version of [`abort_upload`][sqlalchemy_obstore._multipart.abort_upload]."""
    root = _local_root(backend)
    if root is not None:
        return _local_abort(root, upload)
    target = _checked_target(backend)
    return await run_async(target, abort_operation(target, upload))


def _lifecycle_plan(backend: Backend) -> tuple[Target, str] | LifecycleRule:
    store = store_backend(backend)
    if store is None:
        return LifecycleRule("not_checked", None, support(backend) or "not an obstore backend")
    if store.kind == "azure":
        return LifecycleRule("not_needed", None, _NOT_LISTABLE["azure"])
    if store.kind == "local":
        return LifecycleRule(
            "not_needed", None, "local files: the garbage collector removes staging files"
        )
    if store.kind in ("memory", "http"):
        return LifecycleRule("not_needed", None, _NOT_LISTABLE[store.kind])
    if store.kind == "gcs":
        return LifecycleRule(
            "not_checked",
            None,
            "GCS: check the bucket's lifecycle for AbortIncompleteMultipartUpload yourself "
            "(gcloud storage buckets describe)",
        )
    target = s3_target(store)
    if isinstance(target, str):
        return LifecycleRule("not_checked", None, target)
    return target, _managed_key_prefix(target, backend.prefix)


def lifecycle_rule(backend: Backend) -> LifecycleRule:
    """Whether the store expires incomplete uploads under the backend's prefix (sync).

    Never raises for a store that cannot be checked: that is the `not_checked` state.

    Raises:
        StorageError: If the store could be asked and the request failed.
        MissingDependencyError: Without httpx.
    """
    plan = _lifecycle_plan(backend)
    if isinstance(plan, LifecycleRule):
        return plan
    target, prefix = plan
    return run_sync(target, _lifecycle(target, prefix))


async def lifecycle_rule_async(backend: Backend) -> LifecycleRule:
    """Async version of [`lifecycle_rule`][sqlalchemy_obstore._multipart.lifecycle_rule]."""
    plan = _lifecycle_plan(backend)
    if isinstance(plan, LifecycleRule):
        return plan
    target, prefix = plan
    return await run_async(target, _lifecycle(target, prefix))
