"""The S3 requests the library sends itself: a request model without I/O and two drivers.

obstore has no call for a few S3 operations the library needs: listing and aborting
incomplete multipart uploads ([`_multipart`][sqlalchemy_obstore._multipart]), reading a
bucket's lifecycle rules, and the browser's direct uploads
([`_s3_uploads`][sqlalchemy_obstore._s3_uploads]). They are made here, signed by
[`_sigv4`][sqlalchemy_obstore._sigv4].

**Shape.** Each operation is a generator that yields unsigned
[`Request`][sqlalchemy_obstore._s3_requests.Request]s and receives
[`Response`][sqlalchemy_obstore._s3_requests.Response]s: the decisions (which URL, which
page next, what the XML says) are plain code without I/O. Two small drivers send the
requests: httpx's `Client` in sync code
([`run_sync`][sqlalchemy_obstore._s3_requests.run_sync]), its `AsyncClient` in async code
and inside SQLAlchemy's greenlet bridge
([`run_async`][sqlalchemy_obstore._s3_requests.run_async]). httpx is the project's HTTP
client already (the `http` extra), offers both APIs over one request model, and
understands proxies, TLS options and timeouts as obstore's `client_options` describe
them; the standard library has no async HTTP client.

**The bucket's address** ([`Target`][sqlalchemy_obstore._s3_requests.Target], built by
[`s3_target`][sqlalchemy_obstore._s3_requests.s3_target]) is the store's own: its
endpoint, region, key prefix and client options. **Credentials** are the store's too:
explicit keys in its configuration, a `credential_provider`, else the `AWS_*` environment
variables obstore reads too. A store that gets its credentials from the instance or
container (IMDS, ECS, web identity) cannot be used this way.
"""

from __future__ import annotations

import inspect
import os
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Awaitable, Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

from ._errors import (
    MissingDependencyError,
    StorageError,
    StorageOperationError,
    StoragePermissionError,
    UnsupportedOperationError,
    redact,
)
from ._sigv4 import Credentials, encode_path, encode_query, sign_headers
from ._stores import truthy
from .backends import Backend, ObstoreBackend

if TYPE_CHECKING:
    import httpx

__all__ = (
    "Operation",
    "Request",
    "Response",
    "Target",
    "credentials_now",
    "credentials_now_async",
    "failure",
    "parse_xml",
    "run_async",
    "run_sync",
    "s3_target",
    "store_backend",
)

_T = TypeVar("_T")
_MAX_BODY = 16 * 1024 * 1024  # no S3 answer we read comes close; refuse anything bigger
_DEFAULT_TIMEOUT = 30.0  # obstore's default request timeout
_DEFAULT_CONNECT_TIMEOUT = 5.0


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

    Built by [`s3_target`][sqlalchemy_obstore._s3_requests.s3_target]; `key` and `path`
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


# -- the bucket's address and credentials, from the store -----------------------------------------
def store_backend(backend: Backend) -> ObstoreBackend | None:
    """The `ObstoreBackend` under `backend` (through delegating wrappers), if any."""
    seen = 0
    while not isinstance(backend, ObstoreBackend) and seen < 8:
        inner = getattr(backend, "inner", None)
        if not isinstance(inner, Backend):
            return None
        backend, seen = inner, seen + 1
    return backend if isinstance(backend, ObstoreBackend) else None


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


# -- reading answers (no I/O) --------------------------------------------------------------------
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


def failure(response: Response, target: Target, what: str, *, rights: str) -> StorageError:
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


def _sent(request: Request, target: Target, credentials: Credentials | None) -> dict[str, Any]:
    """The keywords of httpx's `stream()` that send `request`, signed."""
    return {
        "method": request.method,
        "url": request.url,
        "content": request.body or None,
        "headers": _signed(request, target, credentials),
    }


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
    """Async version of [`credentials_now`][sqlalchemy_obstore._s3_requests.credentials_now]."""
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
                with client.stream(**_sent(request, target, credentials)) as streamed:
                    response = _read(streamed, streamed.iter_bytes())
            except httpx.HTTPError as exc:
                operation.close()
                raise _transport_error(target, exc, f"{request.method} request") from exc
            try:
                request = operation.send(response)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]


async def run_async(target: Target, operation: Operation[_T]) -> _T:
    """Async version of [`run_sync`][sqlalchemy_obstore._s3_requests.run_sync] (httpx's
    `AsyncClient`)."""
    httpx = _httpx()
    credentials = await credentials_now_async(target)
    async with httpx.AsyncClient(**_client_options(target)) as client:
        request = next(operation)
        while True:
            try:
                async with client.stream(**_sent(request, target, credentials)) as streamed:
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
