"""AWS Signature Version 4 for the few S3 requests obstore does not make itself.

obstore signs everything it sends, but it has no call to list or abort incomplete
multipart uploads, to read a bucket's lifecycle rules, to presign a POST form or the
URL of one part of a multipart upload. This module signs such requests; it does no I/O.
It follows AWS's specification
(<https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv4-create-signed-request.html>)
and is checked against AWS's published examples, botocore, and SeaweedFS (which
verifies signatures).

The surface is small:

- [`sign_headers`][sqlalchemy_obstore._sigv4.sign_headers]: the headers that
  authenticate one request (`Authorization`, `x-amz-date`, `x-amz-content-sha256`,
  `x-amz-security-token`);
- [`presign_url`][sqlalchemy_obstore._sigv4.presign_url]: a URL that carries its
  signature in the query (a presigned GET, PUT, or `PUT ?partNumber=&uploadId=`);
- [`post_policy_fields`][sqlalchemy_obstore._sigv4.post_policy_fields]: the form fields
  of a browser POST upload, with its signed policy;
- the building blocks they share:
  [`canonical_request`][sqlalchemy_obstore._sigv4.canonical_request],
  [`string_to_sign`][sqlalchemy_obstore._sigv4.string_to_sign],
  [`signing_key`][sqlalchemy_obstore._sigv4.signing_key] and
  [`encode_path`][sqlalchemy_obstore._sigv4.encode_path].

URLs are given whole (`https://bucket.s3.eu-west-1.amazonaws.com/key?uploads`); their
path and query may be percent-encoded or not, they are brought to the one canonical
encoding S3 expects, and the returned URL (of `presign_url`) uses that encoding. Build
request URLs with [`encode_path`][sqlalchemy_obstore._sigv4.encode_path] and
[`encode_query`][sqlalchemy_obstore._sigv4.encode_query] so that what is sent is exactly
what was signed.

Secrets never appear in a return value other than as an HMAC, nor in a repr.

Example:
    >>> from datetime import datetime, timezone
    >>> credentials = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    >>> headers = sign_headers(
    ...     "GET", "https://example.amazonaws.com/", credentials=credentials,
    ...     region="us-east-1", service="service",
    ...     now=datetime(2015, 8, 30, 12, 36, tzinfo=timezone.utc), content_sha256_header=False,
    ... )
    >>> headers["Authorization"].rsplit("Signature=", 1)[1]
    '5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31'
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

__all__ = (
    "ALGORITHM",
    "EMPTY_SHA256",
    "UNSIGNED_PAYLOAD",
    "Credentials",
    "canonical_request",
    "encode_path",
    "encode_query",
    "post_policy_fields",
    "presign_url",
    "sign_headers",
    "signing_key",
    "string_to_sign",
)

ALGORITHM = "AWS4-HMAC-SHA256"
"""The algorithm name in every SigV4 signature."""
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
"""The payload hash of an empty body."""
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
"""The payload hash of presigned URLs (the body is not known when signing)."""
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
"""The longest lifetime S3 accepts for a presigned URL (7 days)."""

_UNRESERVED = "-_.~"  # with letters and digits: never percent-encoded (RFC 3986)


@dataclass(frozen=True, slots=True)
class Credentials:
    """An access key, its secret and, for temporary credentials, the session token.

    Attributes:
        access_key_id: The access key id (not secret; it appears in signatures).
        secret_access_key: The secret key (never shown in a repr).
        session_token: The session token of temporary credentials (STS), if any.
    """

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


# -- encoding -------------------------------------------------------------------------------------
def _encode(text: str, safe: str = "") -> str:
    return quote(text, safe=_UNRESERVED + safe)


def encode_path(key: str) -> str:
    """Percent-encode an object key (or any URL path) as S3 signs it; `/` is kept.

    Example:
        >>> encode_path("uploads/a b/ü+x=1.txt")
        'uploads/a%20b/%C3%BC%2Bx%3D1.txt'
    """
    return _encode(key, "/")


def encode_query(params: Iterable[tuple[str, str]]) -> str:
    """A query string in S3's canonical encoding, parameters in the given order.

    A parameter with an empty value is written `name=` (S3 reads `?uploads=` as
    `?uploads`).

    Example:
        >>> encode_query([("prefix", "a b/"), ("uploads", "")])
        'prefix=a%20b%2F&uploads='
    """
    return "&".join(f"{_encode(name)}={_encode(value)}" for name, value in params)


def _query_pairs(query: str) -> list[tuple[str, str]]:
    """Decoded `(name, value)` pairs of a raw query string (`+` is a plus, not a space)."""
    pairs = []
    for item in query.split("&"):
        if item:
            name, _, value = item.partition("=")
            pairs.append((unquote(name), unquote(value)))
    return pairs


def _canonical_query(pairs: Iterable[tuple[str, str]]) -> str:
    encoded = sorted((_encode(name), _encode(value)) for name, value in pairs)
    return "&".join(f"{name}={value}" for name, value in encoded)


def _canonical_path(path: str) -> str:
    # S3 does not normalise the path (no removal of `.` or `//`): encode it once.
    return encode_path(unquote(path)) or "/"


def _header_value(value: str) -> str:
    return " ".join(value.split())


# -- the building blocks --------------------------------------------------------------------------
def canonical_request(
    method: str,
    path: str,
    query: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    payload_hash: str,
) -> tuple[str, str]:
    """The canonical request and its signed-headers list.

    Args:
        method: The HTTP method.
        path: The URL path (encoded or not; it is canonicalised).
        query: Decoded `(name, value)` query parameters.
        headers: Every header to sign (names in any case); `host` must be among them.
        payload_hash: Hex SHA-256 of the body, or `UNSIGNED-PAYLOAD`.

    Returns:
        `(canonical request, signed headers)`, e.g. `("GET\\n/...", "host;x-amz-date")`.
    """
    lowered = {name.lower(): _header_value(value) for name, value in headers.items()}
    names = sorted(lowered)
    signed = ";".join(names)
    lines = [
        method.upper(),
        _canonical_path(path),
        _canonical_query(query),
        "".join(f"{name}:{lowered[name]}\n" for name in names),
        signed,
        payload_hash,
    ]
    return "\n".join(lines), signed


def _stamps(now: datetime | None) -> tuple[str, str]:
    moment = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return moment.strftime("%Y%m%dT%H%M%SZ"), moment.strftime("%Y%m%d")


def _scope(date: str, region: str, service: str) -> str:
    return f"{date}/{region}/{service}/aws4_request"


def string_to_sign(timestamp: str, scope: str, canonical: str) -> str:
    """The string to sign: algorithm, `YYYYMMDDTHHMMSSZ` time, scope, hash of the request."""
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{timestamp}\n{scope}\n{digest}"


def signing_key(secret_access_key: str, date: str, region: str, service: str) -> bytes:
    """The key derived for one day, region and service (`date` is `YYYYMMDD`)."""
    key = f"AWS4{secret_access_key}".encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
    return key


def _signature(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


def _host(url: str) -> str:
    parts = urlsplit(url)
    if not parts.scheme or not parts.hostname:
        raise ValueError("Expected an absolute http(s) URL.")
    default = {"http": 80, "https": 443}.get(parts.scheme)
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    return host if parts.port in (None, default) else f"{host}:{parts.port}"


# -- signing --------------------------------------------------------------------------------------
def sign_headers(
    method: str,
    url: str,
    *,
    credentials: Credentials,
    region: str,
    service: str = "s3",
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
    payload_hash: str | None = None,
    content_sha256_header: bool = True,
    now: datetime | None = None,
) -> dict[str, str]:
    """Sign a request in its headers; returns `headers` plus what authenticates it.

    The result holds the given headers, `x-amz-date`, `x-amz-content-sha256` (S3 needs
    it), `x-amz-security-token` for temporary credentials, and `Authorization`. Send
    them with the request unchanged (`host` is signed but not returned: HTTP clients
    set it from the URL).

    Args:
        method: The HTTP method.
        url: The absolute URL to be requested (path and query as they will be sent).
        credentials: Who signs.
        region: The bucket's region (`us-east-1` for most S3-compatible servers).
        service: `s3` (other services for the AWS test vectors).
        headers: Other headers to sign and send (e.g. `content-md5`, `content-type`).
        body: The request body (hashed into the signature).
        payload_hash: The body's hash if not computed from `body` (`UNSIGNED-PAYLOAD`).
        content_sha256_header: Send and sign `x-amz-content-sha256` (S3 requires it;
            other AWS services, as in AWS's generic test vectors, do not use it).
        now: The signing time (default: now).

    Returns:
        The headers to send.
    """
    timestamp, date = _stamps(now)
    parts = urlsplit(url)
    out = dict(headers or {})
    out["x-amz-date"] = timestamp
    hashed = payload_hash or hashlib.sha256(body).hexdigest()
    if content_sha256_header:
        out["x-amz-content-sha256"] = hashed
    if credentials.session_token:
        out["x-amz-security-token"] = credentials.session_token
    canonical, signed = canonical_request(
        method, parts.path, _query_pairs(parts.query), {**out, "host": _host(url)}, hashed
    )
    scope = _scope(date, region, service)
    key = signing_key(credentials.secret_access_key, date, region, service)
    signature = _signature(key, string_to_sign(timestamp, scope, canonical))
    out["Authorization"] = (
        f"{ALGORITHM} Credential={credentials.access_key_id}/{scope}, "
        f"SignedHeaders={signed}, Signature={signature}"
    )
    return out


def presign_url(
    method: str,
    url: str,
    *,
    credentials: Credentials,
    region: str,
    expires_in: int | timedelta,
    service: str = "s3",
    headers: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> str:
    """A URL that authorises `method` on `url` until it expires (query signing).

    The query of `url` is kept and signed (for a part of a multipart upload:
    `...?partNumber=3&uploadId=...`). The body is not signed (`UNSIGNED-PAYLOAD`).

    Args:
        method: The HTTP method the URL is for.
        url: The absolute URL.
        credentials: Who signs; a session token travels in `X-Amz-Security-Token`.
        region: The bucket's region.
        expires_in: Lifetime, 1 second to 7 days.
        service: `s3`.
        headers: Headers the client must send with exactly these values (signed).
        now: The signing time (default: now).

    Returns:
        The signed URL, path and query in canonical encoding.

    Raises:
        ValueError: For a lifetime outside 1 second to 7 days.

    Example:
        >>> url = presign_url(
        ...     "PUT", "https://b.s3.eu-west-1.amazonaws.com/k?partNumber=1&uploadId=u1",
        ...     credentials=Credentials("AKID", "secret"), region="eu-west-1", expires_in=300,
        ... )
        >>> "partNumber=1" in url and "X-Amz-Signature=" in url
        True
    """
    seconds = int(expires_in.total_seconds() if isinstance(expires_in, timedelta) else expires_in)
    if not 1 <= seconds <= MAX_PRESIGN_SECONDS:
        raise ValueError(
            f"A presigned URL lives 1 to {MAX_PRESIGN_SECONDS} seconds, not {seconds}."
        )
    timestamp, date = _stamps(now)
    parts = urlsplit(url)
    scope = _scope(date, region, service)
    signed_headers = {"host": _host(url), **{k.lower(): v for k, v in (headers or {}).items()}}
    params = _query_pairs(parts.query)
    params += [
        ("X-Amz-Algorithm", ALGORITHM),
        ("X-Amz-Credential", f"{credentials.access_key_id}/{scope}"),
        ("X-Amz-Date", timestamp),
        ("X-Amz-Expires", str(seconds)),
        ("X-Amz-SignedHeaders", ";".join(sorted(signed_headers))),
    ]
    if credentials.session_token:
        params.append(("X-Amz-Security-Token", credentials.session_token))
    canonical, _ = canonical_request(method, parts.path, params, signed_headers, UNSIGNED_PAYLOAD)
    key = signing_key(credentials.secret_access_key, date, region, service)
    params.append(("X-Amz-Signature", _signature(key, string_to_sign(timestamp, scope, canonical))))
    query = encode_query(params)
    return urlunsplit((parts.scheme, parts.netloc, _canonical_path(parts.path), query, ""))


def post_policy_fields(
    *,
    credentials: Credentials,
    region: str,
    expires_in: int | timedelta,
    conditions: Sequence[Mapping[str, Any] | Sequence[Any]] = (),
    fields: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> dict[str, str]:
    """Form fields for a browser POST upload to S3 (a signed POST policy).

    The policy holds `conditions` plus, added here, an exact-match condition for every
    entry of `fields` and the SigV4 fields themselves. Post the returned fields (before
    the `file` field) to the bucket's URL.

    Args:
        credentials: Who signs.
        region: The bucket's region.
        expires_in: How long the form may be used (1 second to 7 days).
        conditions: Policy conditions, e.g. `{"bucket": "b"}`,
            `["starts-with", "$key", "uploads/"]`, `["content-length-range", 1, 10485760]`.
        fields: Form fields the client sends as given (`key`, `Content-Type`, ...);
            each gets an exact-match condition.
        now: The signing time (default: now).

    Returns:
        The fields: `fields`, `x-amz-algorithm`, `x-amz-credential`, `x-amz-date`,
        `x-amz-security-token` (temporary credentials), `policy` and `x-amz-signature`.

    Example:
        >>> form = post_policy_fields(
        ...     credentials=Credentials("AKID", "secret"), region="us-east-1", expires_in=600,
        ...     conditions=[{"bucket": "b"}, ["content-length-range", 1, 1024]],
        ...     fields={"key": "uploads/x.txt"},
        ... )
        >>> sorted(form)  # doctest: +NORMALIZE_WHITESPACE
        ['key', 'policy', 'x-amz-algorithm', 'x-amz-credential', 'x-amz-date',
         'x-amz-signature']
    """
    seconds = int(expires_in.total_seconds() if isinstance(expires_in, timedelta) else expires_in)
    if not 1 <= seconds <= MAX_PRESIGN_SECONDS:
        raise ValueError(f"A POST policy lives 1 to {MAX_PRESIGN_SECONDS} seconds, not {seconds}.")
    moment = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    timestamp, date = _stamps(moment)
    out = dict(fields or {})
    out["x-amz-algorithm"] = ALGORITHM
    out["x-amz-credential"] = f"{credentials.access_key_id}/{_scope(date, region, 's3')}"
    out["x-amz-date"] = timestamp
    if credentials.session_token:
        out["x-amz-security-token"] = credentials.session_token
    expiration = (moment + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    policy = {
        "expiration": expiration,
        "conditions": [*conditions, *({name: value} for name, value in out.items())],
    }
    document = json.dumps(policy, separators=(",", ":")).encode("utf-8")
    out["policy"] = base64.b64encode(document).decode("ascii")
    key = signing_key(credentials.secret_access_key, date, region, "s3")
    out["x-amz-signature"] = _signature(key, out["policy"])
    return out
