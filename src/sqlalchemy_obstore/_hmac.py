"""HMAC-SHA256 with purpose-bound keys, and base64url text: what signed URLs and upload
tickets share.

Each purpose derives its own key from the application's secret (`derive_key` with a
context string), so a signature made for one purpose never passes for another even when
the application uses one secret for both. Signatures travel as unpadded base64url text
and only the spelling the signer wrote is accepted (`signature_bytes`): the decoder
would otherwise take several spellings of one signature (padding, unused low bits).
Checking against several keys (a rotated secret and its predecessors) tries every key,
so timing does not tell which one matched.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterable

from ._errors import ConfigurationError

__all__ = (
    "MIN_SECRET_BYTES",
    "b64decode",
    "b64encode",
    "derive_key",
    "matches_any",
    "sign",
    "signature_bytes",
)

MIN_SECRET_BYTES = 32
"""The shortest secret accepted (256 bits, the HMAC-SHA256 key size)."""

SIGNATURE_CHARS = 43
"""An HMAC-SHA256 digest in unpadded base64url."""

_SIGNATURE = re.compile(r"[A-Za-z0-9_-]{43}", re.ASCII)


def derive_key(secret: object, name: str, context: bytes) -> bytes:
    """The key for one purpose (`context`), derived from an application secret.

    Args:
        secret: The application's secret (str or bytes, at least `MIN_SECRET_BYTES`).
        name: What the secret is called where it was given, for the error message.
        context: A constant naming the purpose.

    Raises:
        ConfigurationError: For a secret of another type, or one that is too short.
    """
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    if not isinstance(secret, (bytes, bytearray)):
        raise ConfigurationError(f"The {name} must be str or bytes, not {type(secret).__name__}.")
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigurationError(
            f"The {name} is {len(secret)} bytes long; use at least {MIN_SECRET_BYTES} random "
            "bytes, such as `secrets.token_urlsafe(32)`, kept in your secret store (never "
            "in code)."
        )
    return hmac.new(bytes(secret), context, hashlib.sha256).digest()


def sign(key: bytes, message: bytes) -> bytes:
    """The HMAC-SHA256 digest of `message`."""
    return hmac.new(key, message, hashlib.sha256).digest()


def matches_any(keys: Iterable[bytes], message: bytes, given: bytes) -> bool:
    """Whether `given` is the signature of `message` under one of `keys` (all are tried)."""
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(sign(key, message), given)
    return matched


def b64encode(data: bytes) -> str:
    """Unpadded base64url text."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64decode(text: str) -> bytes:
    """The bytes of unpadded base64url text.

    Raises:
        binascii.Error: For text that is not base64.
    """
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def signature_bytes(text: object) -> bytes:
    """The digest of a signature spelled as the signer spells it (43 base64url characters).

    Raises:
        ValueError: For any other spelling (padding, `+` or `/`, unused low bits set).
    """
    if not isinstance(text, str) or not _SIGNATURE.fullmatch(text):
        raise ValueError("signature")
    try:
        given = b64decode(text)
    except (binascii.Error, ValueError):  # pragma: no cover - the pattern excludes it
        raise ValueError("signature") from None
    if b64encode(given) != text:  # unused low bits set: another spelling
        raise ValueError("signature")
    return given
