"""The implementation of `sqlalchemy_obstore.cloudfront`, documented and imported there."""

from __future__ import annotations

import base64
import ipaddress
import json
import math
import re
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal, TypeAlias
from urllib.parse import quote, urlsplit

from ._errors import ConfigurationError, InvalidExpiryError, UnsupportedOperationError
from ._keys import validate_key

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

__all__ = (
    "DEFAULT_MAX_EXPIRES_IN",
    "RESERVED_PARAMETERS",
    "CloudFrontSigner",
    "HashAlgorithm",
    "PrivateKey",
)

DEFAULT_MAX_EXPIRES_IN = timedelta(days=7)
"""The longest lifetime a signer gives a URL by default (the same as S3 and GCS URLs)."""
RESERVED_PARAMETERS = frozenset({"Expires", "Policy", "Signature", "Key-Pair-Id", "Hash-Algorithm"})
"""Query parameters CloudFront reads from a signed URL: a URL to sign must not carry them."""

HashAlgorithm: TypeAlias = Literal["SHA1", "SHA256"]
"""The hash CloudFront checks the signature with (`SHA1` is its default when unnamed)."""
PrivateKey: TypeAlias = "RSAPrivateKey | EllipticCurvePrivateKey | str | bytes"
"""A private key: a `cryptography` RSA or EC key object, or its PEM text."""

_READ_METHODS = frozenset({"GET", "HEAD"})
_B64_SUBSTITUTIONS = str.maketrans("+=/", "-_~")
# What a URL to sign may contain: RFC 3986's characters, so that it is the exact string a
# client sends (CloudFront compares the policy's resource with the URL it receives).
_URL_CHARACTERS = re.compile(r"[A-Za-z0-9\-._~:/?\[\]@!$&'()*+,;=%]+", re.ASCII)
_KEY_PAIR_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}", re.ASCII)
_MISSING_CRYPTOGRAPHY = (
    "CloudFront signing needs the 'cryptography' package: "
    "pip install 'sqlalchemy-obstore[cloudfront]'."
)


def _b64(data: bytes) -> str:
    """Base64 with CloudFront's substitutions (`+` → `-`, `=` → `_`, `/` → `~`)."""
    return base64.b64encode(data).decode("ascii").translate(_B64_SUBSTITUTIONS)


def _epoch(moment: datetime | int | float, name: str, *, rounding: Callable[[float], int]) -> int:
    """Whole Unix seconds of an aware datetime or a number, rounded as the caller says."""
    if isinstance(moment, datetime):
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ConfigurationError(
                f"{name} must be a timezone-aware datetime (such as "
                "datetime.now(timezone.utc)); a naive one names no particular moment."
            )
        return rounding(moment.timestamp())
    if isinstance(moment, bool) or not isinstance(moment, (int, float)) or moment < 0:
        raise ConfigurationError(
            f"{name} must be an aware datetime or Unix seconds, not {moment!r}."
        )
    return rounding(moment)


def _source_ip(value: str) -> str:
    """The canonical CIDR of an IP address or range (`12.34.56.78` → `12.34.56.78/32`)."""
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"ip_range must be an IPv4 or IPv6 address or CIDR range such as "
            f"'192.0.2.0/24', with no host bits set; got {value!r}."
        ) from None


def _check_url(url: str, what: str) -> None:
    if not isinstance(url, str) or not _URL_CHARACTERS.fullmatch(url) or "#" in url:
        raise ConfigurationError(
            f"The {what} must be a URL of printable ASCII characters without a fragment, "
            "percent-encoded exactly as clients will request it (CloudFront compares "
            f"the signed resource with the URL it receives); got {url!r}."
        )
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ConfigurationError(f"The {what} must be an http:// or https:// URL; got {url!r}.")


def _load_key(private_key: PrivateKey, password: bytes | None) -> Callable[[bytes, str], bytes]:
    """A function signing a message with `private_key` and the named hash (`SHA1`/`SHA256`)."""
    try:
        from cryptography.exceptions import UnsupportedAlgorithm
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
    except ImportError:  # pragma: no cover - the test environment has cryptography
        raise ConfigurationError(_MISSING_CRYPTOGRAPHY) from None

    key: object = private_key
    if isinstance(private_key, (str, bytes, bytearray)):
        text = private_key.encode("utf-8") if isinstance(private_key, str) else bytes(private_key)
        if b"-----BEGIN" not in text:
            raise ConfigurationError(
                "The CloudFront private key must be the PEM text of the key, not a file "
                "name; to use a key file, pass its contents: Path(...).read_bytes()."
            )
        try:
            key = serialization.load_pem_private_key(text, password=password)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            # The parser's message is left out: nothing of the key may reach a message.
            raise ConfigurationError(
                "The CloudFront private key could not be read: it must be an unencrypted "
                "PEM private key (PKCS#1 'RSA PRIVATE KEY', SEC 1 'EC PRIVATE KEY' or "
                "PKCS#8 'PRIVATE KEY'), or an encrypted one with its password."
            ) from None
    digests = {"SHA1": hashes.SHA1(), "SHA256": hashes.SHA256()}
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise ConfigurationError(
                f"The CloudFront private key is a {key.key_size}-bit RSA key; CloudFront "
                "takes RSA keys of 2048 bits (or an ECDSA P-256 key)."
            )
        rsa_key = key
        pkcs1 = padding.PKCS1v15()
        return lambda message, algorithm: rsa_key.sign(message, pkcs1, digests[algorithm])
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ConfigurationError(
                f"The CloudFront private key is an ECDSA key on {key.curve.name}; CloudFront "
                "takes ECDSA keys on P-256 (secp256r1, prime256v1) only."
            )
        ec_key = key
        return lambda message, algorithm: ec_key.sign(message, ec.ECDSA(digests[algorithm]))
    raise ConfigurationError(
        f"A CloudFront private key must be RSA or ECDSA (P-256), not {type(key).__name__}."
    )


class CloudFrontSigner:
    """Signs CloudFront URLs with a key pair of a trusted key group.

    Implements [`UrlSigner`][sqlalchemy_obstore.backends.UrlSigner] for downloads: give it
    to a backend as `ObstoreBackend(..., read_signer=signer)` and every download URL the
    backend signs goes through CloudFront, while uploads stay signed by the store. Its
    own methods sign what a backend cannot ask for: URLs for one viewer
    ([`sign_path`][sqlalchemy_obstore.cloudfront.CloudFrontSigner.sign_path] with an IP
    range or a start time), one signature for every object under a prefix
    ([`sign_prefix`][sqlalchemy_obstore.cloudfront.CloudFrontSigner.sign_prefix]), and
    any URL of the distribution ([`sign`][sqlalchemy_obstore.cloudfront.CloudFrontSigner.sign]).

    The private key is never shown: not in the `repr`, not in an error message.

    Args:
        base_url: Where the distribution serves the store's objects: its domain
            (`https://d111111abcdef8.cloudfront.net`) or an alternate domain, plus the
            path under which the keys appear, if any (`https://cdn.example.com/media`
            when a cache behavior for `/media/*` has an origin path that removes it, or
            the bucket's keys start with `media/`). An object's URL is
            `{base_url}/{percent-encoded key}`.
        key_pair_id: The ID of the public key (in a key group the cache behavior trusts),
            such as `K2JCJMDEHXQW5F`; or the ID of a legacy root-account key pair.
        private_key: The matching private key: PEM text (`str` or `bytes`; PKCS#1,
            SEC 1 or PKCS#8) or a `cryptography` key object. RSA keys must have at
            least 2048 bits; ECDSA keys must be on P-256.
        password: The password of an encrypted PEM key.
        hash_algorithm: `"SHA256"` (the default; the URL carries `Hash-Algorithm=SHA256`)
            or `"SHA1"`, CloudFront's original algorithm, for verifiers that know no other.
        ip_range: An IP address or CIDR range every URL from `sign_url` is limited to
            (a custom policy), such as an office network; `None` for canned policies.
        max_expires_in: The longest lifetime `sign_url`, `sign_path` and `sign_prefix`
            give a URL.

    Raises:
        ConfigurationError: If `cryptography` is not installed, the key cannot be read or
            is of a kind CloudFront does not take, or an argument is malformed.

    Example:
        >>> from cryptography.hazmat.primitives.asymmetric import ec
        >>> from sqlalchemy_obstore import FileObject, ObstoreBackend, storages
        >>> cdn = CloudFrontSigner(
        ...     "https://cdn.example.com", "K2JCJMDEHXQW5F", ec.generate_private_key(ec.SECP256R1())
        ... )
        >>> backend = ObstoreBackend("media", "memory://", read_signer=cdn)
        >>> with storages.temporary(backend):
        ...     file = FileObject(filename="a b.txt", content=b"hi", backend="media").save()
        ...     url = file.sign(expires_in=300)
        >>> url.startswith(f"https://cdn.example.com/{file.path.replace(' ', '%20')}?Expires=")
        True
    """

    __slots__ = ("_sign", "base_url", "hash_algorithm", "ip_range", "key_pair_id", "max_expires_in")

    def __init__(
        self,
        base_url: str,
        key_pair_id: str,
        private_key: PrivateKey,
        *,
        password: bytes | None = None,
        hash_algorithm: HashAlgorithm = "SHA256",
        ip_range: str | None = None,
        max_expires_in: timedelta = DEFAULT_MAX_EXPIRES_IN,
    ) -> None:
        _check_url(base_url, "base_url")
        parts = urlsplit(base_url)
        if parts.query or "*" in base_url or "?" in base_url:
            raise ConfigurationError(
                f"base_url must have no query string and no wildcard; got {base_url!r}."
            )
        if not isinstance(key_pair_id, str) or not _KEY_PAIR_ID.fullmatch(key_pair_id):
            raise ConfigurationError(
                "key_pair_id must be the ID of a CloudFront public key (letters and digits, "
                f"such as 'K2JCJMDEHXQW5F'); got {key_pair_id!r}."
            )
        if hash_algorithm not in ("SHA1", "SHA256"):
            raise ConfigurationError(
                f"hash_algorithm must be 'SHA256' or 'SHA1', not {hash_algorithm!r}."
            )
        if not isinstance(max_expires_in, timedelta) or max_expires_in <= timedelta(0):
            raise ConfigurationError(
                f"max_expires_in must be a positive timedelta, not {max_expires_in!r}."
            )
        self.base_url = base_url.rstrip("/")
        self.key_pair_id = key_pair_id
        self.hash_algorithm: HashAlgorithm = hash_algorithm
        self.ip_range = _source_ip(ip_range) if ip_range is not None else None
        self.max_expires_in = max_expires_in
        self._sign = _load_key(private_key, password)

    def __repr__(self) -> str:
        return (
            f"CloudFrontSigner(base_url={self.base_url!r}, key_pair_id={self.key_pair_id!r}, "
            f"hash_algorithm={self.hash_algorithm!r})"
        )

    # -- URLs ---------------------------------------------------------------------------------
    def object_url(self, path: str) -> str:
        """The unsigned CloudFront URL of the object key `path`.

        Every character but unreserved ones and `/` is percent-encoded, so the URL is
        sent exactly as signed (`*` and `?` in a key become `%2A` and `%3F`, never
        wildcards).

        Raises:
            ConfigurationError: If `path` is not a valid object key (empty, absolute,
                with `.` or `..` segments or control characters).

        Example:
            >>> from cryptography.hazmat.primitives.asymmetric import ec
            >>> cdn = CloudFrontSigner(
            ...     "https://cdn.example.com/media", "K1", ec.generate_private_key(ec.SECP256R1())
            ... )
            >>> cdn.object_url("docs/1f2e/Quarterly report (v2).pdf")
            'https://cdn.example.com/media/docs/1f2e/Quarterly%20report%20%28v2%29.pdf'
        """
        validate_key(path)
        return f"{self.base_url}/{quote(path, safe='/~')}"

    # -- signing ------------------------------------------------------------------------------
    def sign_url(self, backend: str, path: str, *, method: str, expires_in: timedelta) -> str:
        """The [`UrlSigner`][sqlalchemy_obstore.backends.UrlSigner] method a backend calls.

        A canned policy for the object's URL (a custom one limited to `ip_range` when the
        signer has one), valid for `expires_in` from now (rounded up to the second).

        Args:
            backend: The backend key (CloudFront URLs do not contain it).
            path: The object key.
            method: `GET` or `HEAD`.
            expires_in: The lifetime of the URL.

        Raises:
            UnsupportedOperationError: For any other method: a CloudFront signature does
                not name a method, so it cannot be limited to an upload or a delete.
            InvalidExpiryError: If the lifetime is not positive or exceeds
                `max_expires_in`.
            ConfigurationError: If `path` is not a valid object key.
        """
        if method.upper() not in _READ_METHODS:
            raise UnsupportedOperationError(
                f"A CloudFront signed URL cannot be limited to {method.upper()}: the "
                "signature names no method, so the URL allows whatever the distribution "
                "allows. Use CloudFrontSigner for downloads only "
                "(ObstoreBackend(..., read_signer=...)); uploads are signed by the store.",
                backend=backend,
                path=path,
            )
        expires = self._deadline(expires_in, backend=backend, path=path)
        url = self.object_url(path)
        return _append(url, self._query(url, expires, None, self.ip_range, canned=True))

    def sign_path(
        self,
        path: str,
        *,
        expires_in: int | float | timedelta = 3600,
        ip_range: str | None = None,
        starts_at: datetime | int | None = None,
    ) -> str:
        """A signed URL of one object for one viewer: limited to an IP range or a start time.

        Such URLs are made for one request and must not be shared, so they are never
        cached on a `FileObject` (call this with `file.path` instead of `file.sign()`).
        Without `ip_range` and `starts_at` (and no signer-wide `ip_range`), the URL has a
        canned policy, exactly as `sign_url` would make it.

        Args:
            path: The object key.
            expires_in: The lifetime of the URL, in seconds or as a timedelta.
            ip_range: The viewer's IP address (or a CIDR range); defaults to the signer's
                `ip_range`.
            starts_at: The URL is refused before this moment (an aware datetime or Unix
                seconds; rounded up to the second).

        Raises:
            InvalidExpiryError: If the lifetime is not positive, exceeds
                `max_expires_in`, or ends before `starts_at`.
            ConfigurationError: If `path`, `ip_range` or `starts_at` is malformed.

        Example:
            >>> from cryptography.hazmat.primitives.asymmetric import ec
            >>> cdn = CloudFrontSigner(
            ...     "https://cdn.example.com", "K1", ec.generate_private_key(ec.SECP256R1())
            ... )
            >>> url = cdn.sign_path("docs/a.pdf", expires_in=300, ip_range="203.0.113.7")
            >>> url.split("?")[0], sorted(p.split("=")[0] for p in url.split("?")[1].split("&"))
            ('https://cdn.example.com/docs/a.pdf', ['Hash-Algorithm', 'Key-Pair-Id', 'Policy', 'Signature'])
        """  # noqa: E501
        expires = self._deadline(expires_in, path=path)
        url = self.object_url(path)
        starts, source = self._conditions(ip_range, starts_at, expires)
        return _append(url, self._query(url, expires, starts, source, canned=True))

    def sign_prefix(
        self,
        prefix: str = "",
        *,
        expires_in: int | float | timedelta = 3600,
        ip_range: str | None = None,
        starts_at: datetime | int | None = None,
    ) -> str:
        """One signature for every object whose key starts with `prefix` (a wildcard policy).

        Returns the query string (`Policy=...&Signature=...&Key-Pair-Id=...`) to append
        to the [`object_url`][sqlalchemy_obstore.cloudfront.CloudFrontSigner.object_url]
        of any such object: for a video's playlist and its segments, or a page of
        thumbnails under one prefix. The policy's resource is
        `{base_url}/{percent-encoded prefix}*`; `*` matches any characters, `/` included,
        so `prefix="videos/42"` also covers `videos/420/...`: end a directory-like
        prefix with `/`.

        Args:
            prefix: The key prefix (may be empty: every object of `base_url`).
            expires_in: The lifetime of the signature, in seconds or as a timedelta.
            ip_range: The viewer's IP address or CIDR range; defaults to the signer's.
            starts_at: The signature is refused before this moment.

        Raises:
            InvalidExpiryError: If the lifetime is not positive, exceeds
                `max_expires_in`, or ends before `starts_at`.
            ConfigurationError: If `prefix` has control characters or `.`/`..`
                segments, or `ip_range`/`starts_at` is malformed.

        Example:
            >>> from cryptography.hazmat.primitives.asymmetric import ec
            >>> cdn = CloudFrontSigner(
            ...     "https://cdn.example.com", "K1", ec.generate_private_key(ec.SECP256R1())
            ... )
            >>> query = cdn.sign_prefix("videos/42/", expires_in=3600)
            >>> url = f"{cdn.object_url('videos/42/segment-001.ts')}?{query}"
            >>> url.startswith("https://cdn.example.com/videos/42/segment-001.ts?Policy=")
            True
        """
        if prefix:
            validate_key(prefix.rstrip("/"))
        expires = self._deadline(expires_in, path=prefix or None)
        resource = f"{self.base_url}/{quote(prefix, safe='/~')}*"
        starts, source = self._conditions(ip_range, starts_at, expires)
        return self._query(resource, expires, starts, source, canned=False)

    def sign(
        self,
        url: str,
        *,
        expires_at: datetime | int,
        starts_at: datetime | int | None = None,
        ip_range: str | None = None,
        resource: str | None = None,
    ) -> str:
        """Sign any URL of the distribution, until an absolute deadline.

        The low-level form of the other methods, for URLs that are not object keys
        under `base_url` (another path, your own query parameters). With only
        `expires_at` the policy is canned; `starts_at`, `ip_range` or `resource` make it
        a custom policy. The deadline is not checked against `max_expires_in`.

        Args:
            url: The URL, percent-encoded exactly as clients will request it; it may
                carry query parameters of its own, but none of `RESERVED_PARAMETERS`.
            expires_at: The URL is refused from this moment (an aware datetime, rounded
                down to the second, or Unix seconds).
            starts_at: The URL is refused before this moment (rounded up).
            ip_range: The viewer's IP address or CIDR range.
            resource: The policy's resource when it is not `url` itself: a pattern with
                `*` (any characters) and `?` (one character) that `url` must match.

        Raises:
            ConfigurationError: If the URL or resource is not a plain http(s) URL, the
                URL carries a reserved parameter, or a condition is malformed.
            InvalidExpiryError: If `expires_at` is not after `starts_at`.

        Example:
            >>> from cryptography.hazmat.primitives.asymmetric import ec
            >>> cdn = CloudFrontSigner(
            ...     "https://cdn.example.com", "K1", ec.generate_private_key(ec.SECP256R1()),
            ...     hash_algorithm="SHA1",
            ... )
            >>> url = cdn.sign("https://cdn.example.com/a.txt?v=2", expires_at=2_000_000_000)
            >>> url.split("&Signature=")[0]
            'https://cdn.example.com/a.txt?v=2&Expires=2000000000'
        """
        _check_url(url, "URL to sign")
        names = {pair.split("=", 1)[0] for pair in urlsplit(url).query.split("&") if pair}
        if names & RESERVED_PARAMETERS:
            raise ConfigurationError(
                f"The URL to sign already carries {sorted(names & RESERVED_PARAMETERS)}: "
                "CloudFront reserves those query parameters for the signature."
            )
        if resource is not None:
            _check_url(resource, "resource")
        expires = _epoch(expires_at, "expires_at", rounding=math.floor)
        starts, source = self._conditions(ip_range, starts_at, expires, default_ip=False)
        query = self._query(resource or url, expires, starts, source, canned=resource is None)
        return _append(url, query)

    # -- internals ----------------------------------------------------------------------------
    def _deadline(
        self,
        expires_in: int | float | timedelta,
        *,
        backend: str | None = None,
        path: str | None = None,
    ) -> int:
        """The `Expires` of a URL living `expires_in` from now (rounded up to the second)."""
        seconds = expires_in.total_seconds() if isinstance(expires_in, timedelta) else expires_in
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise InvalidExpiryError(
                f"expires_in must be seconds or a timedelta, not {type(expires_in).__name__}."
            )
        if seconds <= 0:
            raise InvalidExpiryError(f"expires_in must be positive, got {seconds:g} seconds.")
        if seconds > self.max_expires_in.total_seconds():
            raise InvalidExpiryError(
                f"A CloudFront URL of this signer may live at most {self.max_expires_in} "
                f"({seconds:g} seconds were requested); sign again when the URL is about to "
                "expire, or raise the signer's max_expires_in.",
                backend=backend,
                path=path,
            )
        return math.ceil(time.time() + seconds)

    def _conditions(
        self,
        ip_range: str | None,
        starts_at: datetime | int | None,
        expires: int,
        *,
        default_ip: bool = True,
    ) -> tuple[int | None, str | None]:
        """`(DateGreaterThan, IpAddress)` of a custom policy, checked."""
        starts = None
        if starts_at is not None:
            starts = _epoch(starts_at, "starts_at", rounding=math.ceil)
            if starts >= expires:
                raise InvalidExpiryError(
                    "The URL would expire before it becomes valid: starts_at must be "
                    "before the expiry."
                )
        if ip_range is not None:
            return starts, _source_ip(ip_range)
        return starts, self.ip_range if default_ip else None

    def _query(
        self,
        resource: str,
        expires: int,
        starts: int | None,
        ip_range: str | None,
        *,
        canned: bool,
    ) -> str:
        """The signature's query parameters: a canned policy when `canned` and no condition
        but the expiry is set, else a custom policy carried in `Policy`."""
        condition: dict[str, object] = {"DateLessThan": {"AWS:EpochTime": expires}}
        if ip_range is not None:
            condition["IpAddress"] = {"AWS:SourceIp": ip_range}
        if starts is not None:
            condition["DateGreaterThan"] = {"AWS:EpochTime": starts}
        statement = {"Statement": [{"Resource": resource, "Condition": condition}]}
        policy = json.dumps(statement, separators=(",", ":")).encode("ascii")
        signature = _b64(self._sign(policy, self.hash_algorithm))
        if canned and starts is None and ip_range is None:
            first = f"Expires={expires}"  # CloudFront rebuilds the policy from the URL
        else:
            first = f"Policy={_b64(policy)}"
        query = f"{first}&Signature={signature}&Key-Pair-Id={self.key_pair_id}"
        if self.hash_algorithm != "SHA1":  # SHA-1 is what CloudFront assumes when unnamed
            query += f"&Hash-Algorithm={self.hash_algorithm}"
        return query


def _append(url: str, query: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{query}"
