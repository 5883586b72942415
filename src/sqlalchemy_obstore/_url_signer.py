"""`HmacUrlSigner` and the development signer of memory backends.

The signer lives below the backends, which fall back on the process's development
signer when a memory store has no `url_signer`; `signing` re-exports both, and adds the
helpers that equip the backends of a registry.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from urllib.parse import quote, urlencode

from ._errors import (
    ConfigurationError,
    ExpiredSignatureError,
    InvalidExpiryError,
    InvalidSignatureError,
)
from ._hmac import MIN_SECRET_BYTES, b64encode, derive_key, matches_any, sign, signature_bytes
from ._keys import validate_key

__all__ = (
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_EXPIRES_IN",
    "MIN_SECRET_BYTES",
    "HmacUrlSigner",
    "development_signer",
)

DEFAULT_BASE_URL = "/_storage"
"""Where the web integrations mount the route serving signed URLs by default."""
DEFAULT_MAX_EXPIRES_IN = timedelta(days=7)
"""The longest lifetime a signed URL may have by default (the same as S3 and GCS)."""

_METHODS = frozenset({"GET", "PUT", "HEAD", "DELETE"})
_CONTEXT = b"sqlalchemy-obstore signed URL v1"  # (the key of signed URLs is theirs only)
_SIGNED_PARAMETERS = ("expires", "signature", "max_size", "ticket")
# The one spelling of each value the signer writes (ASCII only, whatever `re` allows).
_CANONICAL_NUMBER = re.compile(r"0|[1-9][0-9]{0,17}", re.ASCII)
_CANONICAL_TICKET = re.compile(r"[A-Za-z0-9_-]{1,64}", re.ASCII)


class HmacUrlSigner:
    """Signs and verifies expiring URLs with HMAC-SHA256.

    Implements [`UrlSigner`][sqlalchemy_obstore.backends.UrlSigner]: give it to an
    `ObstoreBackend(..., url_signer=...)` or use
    [`attach_signer`][sqlalchemy_obstore.signing.attach_signer]. The web integrations
    create one from their `signing_secret` and mount the route that serves its URLs.

    Args:
        secret: The signing key, at least 32 bytes (a `str` is UTF-8 encoded). Every
            application instance serving the URLs needs the same secret.
        base_url: Where the serving route is mounted: a path (`"/_storage"`, for URLs
            relative to the application) or an absolute URL
            (`"https://files.example.com/_storage"`).
        previous_secrets: Secrets still accepted by `verify` (never used to sign), so a
            secret can be rotated without breaking URLs already handed out.
        max_expires_in: The longest lifetime `sign_url` accepts.

    Raises:
        ConfigurationError: If a secret is shorter than 32 bytes or `base_url` is empty.

    Example:
        >>> from sqlalchemy_obstore import FileObject, ObstoreBackend, storages
        >>> from sqlalchemy_obstore.signing import HmacUrlSigner
        >>> signer = HmacUrlSigner("x" * 32, base_url="https://app.example.com/_storage")
        >>> signer
        HmacUrlSigner(base_url='https://app.example.com/_storage')
        >>> with storages.temporary(ObstoreBackend("files", "memory://", url_signer=signer)):
        ...     f = FileObject(filename="a.txt", content=b"hi", backend="files").save()
        ...     f.sign(expires_in=60).startswith("https://app.example.com/_storage/files/")
        True
    """

    __slots__ = ("_keys", "base_url", "max_expires_in")

    def __init__(
        self,
        secret: str | bytes,
        *,
        base_url: str = DEFAULT_BASE_URL,
        previous_secrets: Iterable[str | bytes] = (),
        max_expires_in: timedelta = DEFAULT_MAX_EXPIRES_IN,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.strip("/"):
            raise ConfigurationError(
                f"base_url must be the path or URL where the signed-URL route is mounted, "
                f"such as {DEFAULT_BASE_URL!r}; got {base_url!r}."
            )
        self._keys: tuple[bytes, ...] = (
            derive_key(secret, "signing secret", _CONTEXT),
            *(derive_key(s, "previous signing secret", _CONTEXT) for s in previous_secrets),
        )
        self.base_url = base_url.rstrip("/")
        self.max_expires_in = max_expires_in

    def __repr__(self) -> str:
        return f"HmacUrlSigner(base_url={self.base_url!r})"

    # -- signing ---------------------------------------------------------------------------
    @staticmethod
    def _message(
        method: str,
        backend: str,
        path: str,
        expires: int,
        max_size: int | None = None,
        ticket: str | None = None,
    ) -> bytes:
        # JSON makes the encoding unambiguous whatever characters the fields contain; a
        # ticket's URL signs six fields, any other four, so neither passes for the other.
        fields: list[object] = [method, backend, path, expires]
        if max_size is not None or ticket is not None:
            fields += [max_size, ticket]
        return json.dumps(fields, separators=(",", ":")).encode()

    def signature(
        self,
        backend: str,
        path: str,
        *,
        method: str,
        expires: int,
        max_size: int | None = None,
        ticket: str | None = None,
    ) -> str:
        """The base64url signature of one request, as carried in the `signature` parameter.

        Args:
            backend: The backend key.
            path: The object key.
            method: The HTTP method (`GET` also allows `HEAD`).
            expires: Unix time (seconds) after which the URL is refused.
            max_size: The largest body a `PUT` through the URL may send, if limited.
            ticket: The id of the upload ticket the URL belongs to, if any.
        """
        message = self._message(method, backend, path, expires, max_size, ticket)
        return b64encode(sign(self._keys[0], message))

    def url_for(
        self,
        backend: str,
        path: str,
        *,
        method: str,
        expires: int,
        max_size: int | None = None,
        ticket: str | None = None,
    ) -> str:
        """Build the signed URL of `method` on `path` valid until the Unix time `expires`.

        Most code calls [`sign_url`][sqlalchemy_obstore.signing.HmacUrlSigner.sign_url]
        (or `FileObject.sign()`), which takes a lifetime instead of a deadline.

        `max_size` and `ticket` bind a `PUT` URL to an upload ticket: the route refuses
        bodies longer than `max_size` while they stream, and any upload once the
        ticket is redeemed.

        Raises:
            ConfigurationError: If the backend key contains `/`, the path is not a
                valid object key (empty, absolute, with `.`/`..` segments or control
                characters), `max_size` is negative or `ticket` is not base64url.
            ValueError: If `method` is not GET, PUT, HEAD or DELETE.
        """
        method = method.upper()
        if method not in _METHODS:
            raise ValueError(f"Cannot sign the HTTP method {method!r}; use GET or PUT.")
        if not backend or "/" in backend:
            raise ConfigurationError(
                f"Cannot sign URLs for the backend key {backend!r}: a key used in signed "
                "URLs must be non-empty and contain no '/'.",
                backend=backend,
            )
        validate_key(path)
        if max_size is not None and (
            isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 0
        ):
            raise ConfigurationError(f"max_size must be a non-negative int, not {max_size!r}.")
        if ticket is not None and not _CANONICAL_TICKET.fullmatch(ticket):
            raise ConfigurationError("A ticket id in a signed URL must be 1-64 base64url chars.")
        params = {"method": method, "expires": str(expires)}
        if max_size is not None:
            params["max_size"] = str(max_size)
        if ticket is not None:
            params["ticket"] = ticket
        params["signature"] = self.signature(
            backend, path, method=method, expires=expires, max_size=max_size, ticket=ticket
        )
        query = urlencode(params)
        return f"{self.base_url}/{quote(backend, safe='')}/{quote(path, safe='/')}?{query}"

    def sign_url(
        self,
        backend: str,
        path: str,
        *,
        method: str,
        expires_in: timedelta,
        max_size: int | None = None,
        ticket: str | None = None,
    ) -> str:
        """Return a URL that lets its holder do `method` on `path` until it expires.

        This is the [`UrlSigner`][sqlalchemy_obstore.backends.UrlSigner] method a
        backend calls; applications usually call `FileObject.sign()` instead.

        Args:
            backend: The backend key.
            path: The object key.
            method: `GET` (download) or `PUT` (upload).
            expires_in: The lifetime of the URL.
            max_size: For an upload ticket's `PUT`: the largest body accepted.
            ticket: For an upload ticket's `PUT`: the ticket's id.

        Raises:
            InvalidExpiryError: If the lifetime is not positive or longer than
                `max_expires_in`.
            ConfigurationError: If the backend key or path cannot be signed (see
                [`url_for`][sqlalchemy_obstore.signing.HmacUrlSigner.url_for]).
        """
        seconds = expires_in.total_seconds()
        if seconds <= 0:
            raise InvalidExpiryError(f"expires_in must be positive, got {seconds:g} seconds.")
        if expires_in > self.max_expires_in:
            raise InvalidExpiryError(
                f"A signed URL may live at most {self.max_expires_in} ({seconds:g} seconds "
                "were requested); sign again when the URL is about to expire instead.",
                backend=backend,
                path=path,
            )
        return self.url_for(
            backend,
            path,
            method=method,
            expires=math.ceil(time.time() + seconds),
            max_size=max_size,
            ticket=ticket,
        )

    # -- verification ------------------------------------------------------------------------
    @staticmethod
    def parse_query(query: str | Mapping[str, str]) -> dict[str, str | None]:
        """Pick the signed parameters out of a signed URL's query string.

        Returns a dict ready to be passed to `verify` as keyword arguments (`expires`,
        `signature`, `max_size`, `ticket`); a missing parameter is `None` (`verify`
        refuses a missing `expires` or `signature`). Values are taken as written,
        without percent-decoding: the canonical spelling never needs an escape, so an
        escaped value is refused by `verify`.

        Raises:
            InvalidSignatureError: If a signed parameter appears more than once.

        Example:
            >>> HmacUrlSigner.parse_query("method=GET&expires=10&signature=abc")
            {'expires': '10', 'signature': 'abc', 'max_size': None, 'ticket': None}
        """
        found: dict[str, str | None] = dict.fromkeys(_SIGNED_PARAMETERS)
        if not isinstance(query, str):
            found.update({k: query[k] for k in _SIGNED_PARAMETERS if k in query})
            return found
        for pair in query.split("&"):
            name, _, value = pair.partition("=")
            if name not in found:
                continue
            if found[name] is not None:
                raise InvalidSignatureError(
                    f"The signed URL carries the {name!r} parameter more than once."
                )
            found[name] = value
        return found

    @staticmethod
    def _number(value: int | str | None, name: str) -> int | None:
        """A canonical non-negative number parameter (ASCII digits, no leading zero)."""
        if value is None:
            return None
        if isinstance(value, str):
            if not _CANONICAL_NUMBER.fullmatch(value):
                raise ValueError(name)
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(name)
        return value

    def verify(
        self,
        backend: str,
        path: str,
        *,
        method: str,
        expires: int | str | None,
        signature: str | None,
        max_size: int | str | None = None,
        ticket: str | None = None,
        now: float | None = None,
    ) -> None:
        """Check that a request carries a genuine, unexpired signature; raise otherwise.

        The signature is checked first (in constant time, against the current and every
        previous secret), then the expiry, so only a genuine URL is ever reported as
        expired. A `HEAD` request is checked as the `GET` it mirrors. Only the spelling
        the signer produces is accepted: `expires` and `max_size` in ASCII decimal
        without sign, spaces or leading zeros, the signature as 43 unpadded base64url
        characters (no `=`, `+` or `/`).

        Args:
            backend: The backend key from the request path.
            path: The object key from the request path (percent-decoded).
            method: The request's HTTP method.
            expires: The `expires` query parameter.
            signature: The `signature` query parameter.
            max_size: The `max_size` query parameter (upload tickets' URLs).
            ticket: The `ticket` query parameter (upload tickets' URLs).
            now: The current Unix time (defaults to `time.time()`).

        Raises:
            InvalidSignatureError: If a parameter is missing or not canonically spelled,
                the path is not a valid object key, or the signature does not match
                (another secret, method, backend, path, expiry, size limit or ticket).
            ExpiredSignatureError: If the signature is genuine but `expires` has passed.

        Example:
            >>> signer = HmacUrlSigner("s" * 32)
            >>> sig = signer.signature("b", "k/a.txt", method="GET", expires=2_000_000_000)
            >>> signer.verify("b", "k/a.txt", method="PUT", expires=2_000_000_000, signature=sig)
            Traceback (most recent call last):
            ...
            sqlalchemy_obstore.errors.InvalidSignatureError: The URL's signature is not valid for this request: it was made for another method, object or expiry, or with another secret. (backend='b', path='k/a.txt')
        """  # noqa: E501
        method = "GET" if method.upper() == "HEAD" else method.upper()
        if expires is None or signature is None or not signature:
            raise InvalidSignatureError(
                "The URL is not signed: the 'expires' and 'signature' query parameters are "
                "required. Ask the application for a signed URL.",
                backend=backend,
                path=path,
            )
        try:
            deadline = self._number(expires, "expires")
            limit = self._number(max_size, "max_size")
            if ticket is not None and not (
                isinstance(ticket, str) and _CANONICAL_TICKET.fullmatch(ticket)
            ):
                raise ValueError("ticket")
            validate_key(path)
            given = signature_bytes(signature)
        except (ValueError, ConfigurationError, TypeError):
            raise InvalidSignatureError(
                "The signed URL is malformed (bad 'expires', 'signature', 'max_size', "
                "'ticket' or object path).",
                backend=backend,
                path=path,
            ) from None
        assert deadline is not None
        message = self._message(method, backend, path, deadline, limit, ticket)
        if not matches_any(self._keys, message, given):
            raise InvalidSignatureError(
                "The URL's signature is not valid for this request: it was made for another "
                "method, object or expiry, or with another secret.",
                backend=backend,
                path=path,
            )
        if (time.time() if now is None else now) > deadline:
            when = datetime.fromtimestamp(deadline, timezone.utc).isoformat()
            raise ExpiredSignatureError(
                f"The signed URL expired at {when}; ask the application for a new one.",
                expired_at=deadline,
                backend=backend,
                path=path,
            )


_development_signer: HmacUrlSigner | None = None


def development_signer() -> HmacUrlSigner:
    """The signer memory backends use when they have no `url_signer`: tests, scripts, dev.

    A memory store lives in one process, so a secret drawn once per process serves it:
    `FileObject.sign()` works on a memory backend out of the box, with URLs under
    `/_storage` that the library's route (Litestar plugin, Starlette `storage_routes`)
    serves. A web integration given a `signing_secret` attaches its own signer, which
    replaces this one. Local files get no such default: every worker of a deployment must
    verify the URLs any worker signed, so they need a `signing_secret` shared by all.

    Example:
        >>> from sqlalchemy_obstore import FileObject, ObstoreBackend, storages
        >>> with storages.temporary(ObstoreBackend("scratch", "memory://")):
        ...     f = FileObject(filename="a.txt", content=b"hi", backend="scratch").save()
        ...     f.sign(expires_in=60).startswith("/_storage/scratch/")
        True
    """
    global _development_signer
    if _development_signer is None:
        _development_signer = HmacUrlSigner(secrets.token_bytes(MIN_SECRET_BYTES))
    return _development_signer
