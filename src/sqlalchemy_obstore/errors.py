"""The exceptions raised by sqlalchemy-obstore.

Every exception derives from [`StorageError`][sqlalchemy_obstore.StorageError], carries
the backend key and object path it is about (when there is one), and, where the meaning
matches, also derives from the builtin a caller would naturally catch
(`FileNotFoundError`, `ValueError`, `LookupError`, `PermissionError`, `ImportError`):

```text
StorageError
├── ConfigurationError
│   ├── BackendNotFoundError (LookupError)
│   ├── BackendAlreadyRegisteredError (ValueError)
│   ├── UnsupportedSchemeError (ValueError)
│   └── MissingDependencyError (ImportError)
├── FileObjectError
│   ├── InvalidFileObjectError (ValueError)
│   ├── InvalidFilenameError (ValueError)
│   └── NoContentError
├── UnsupportedOperationError
├── InvalidExpiryError (ValueError)
├── SignedURLError (PermissionError)
│   ├── InvalidSignatureError
│   └── ExpiredSignatureError
├── ObjectNotFoundError (FileNotFoundError)
├── ObjectExistsError (FileExistsError)
├── StoragePermissionError (PermissionError)
├── ChecksumMismatchError
├── StorageOperationError
│   └── StorageErrorGroup
├── RemoteFetchError
│   └── ForbiddenAddressError
├── UploadTicketError
│   ├── InvalidUploadTicketError (ValueError)
│   ├── ExpiredUploadTicketError
│   └── ReplayedUploadTicketError
└── ValidationError (ValueError)
    ├── FileTooLargeError
    ├── FileTooSmallError
    ├── InvalidContentTypeError
    ├── InvalidExtensionError
    └── InvalidImageError
        └── ImageTooLargeError
```

Errors raised by obstore are translated at the I/O boundary (the backend) and chained,
so the original stays available as `__cause__`. Messages never contain credentials:
signatures, keys and tokens are redacted before a message is built.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

__all__ = (
    "BackendAlreadyRegisteredError",
    "BackendNotFoundError",
    "ChecksumMismatchError",
    "ConfigurationError",
    "ExpiredSignatureError",
    "FileObjectError",
    "FileTooLargeError",
    "FileTooSmallError",
    "ForbiddenAddressError",
    "ImageTooLargeError",
    "InvalidContentTypeError",
    "InvalidExpiryError",
    "InvalidExtensionError",
    "InvalidFileObjectError",
    "InvalidFilenameError",
    "InvalidImageError",
    "InvalidSignatureError",
    "MissingDependencyError",
    "NoContentError",
    "ObjectExistsError",
    "ObjectNotFoundError",
    "RemoteFetchError",
    "SignedURLError",
    "StorageError",
    "StorageErrorGroup",
    "StorageOperationError",
    "StoragePermissionError",
    "UnsupportedOperationError",
    "UnsupportedSchemeError",
    "ExpiredUploadTicketError",
    "InvalidUploadTicketError",
    "ReplayedUploadTicketError",
    "UploadTicketError",
    "ValidationError",
    "redact",
)

_SECRET_PATTERNS = (
    # PEM blocks first: the key=value pattern below would otherwise eat the BEGIN line
    # of a `"private_key": "-----BEGIN ..."` and leave the key material in place. A block
    # cut short (no END line) is redacted to the end of the text.
    re.compile(
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----(?:.*?-----END [A-Z ]*PRIVATE KEY-----|.*)", re.S
    ),
    # query-string signatures and credentials (S3 SigV4, GCS V4, Azure SAS)
    re.compile(
        r"(?i)((?:x-amz-signature|x-amz-credential|x-amz-security-token|x-goog-signature|"
        r"x-goog-credential|sig|signature|token|access_token|se|skoid|sktid)=)[^&\s\"']+"
    ),
    # connection-string style secrets
    re.compile(r"(?i)((?:accountkey|sharedaccesssignature|secret[_-]?access[_-]?key)=)[^;\s\"']+"),
    # key=value pairs in debug dumps, e.g. secret_access_key: "..."
    re.compile(
        r"(?i)((?:secret_access_key|account_key|access_key|session_token|token|private_key|"
        r"service_account_key|client_secret|bearer_token)\"?\s*[:=]\s*\"?)[^\",}\s&]+"
    ),
)


def redact(text: str) -> str:
    """Remove credentials and signatures from a message.

    Used on every message built from a lower-level error so that no secret reaches a
    log line or an exception.

    Example:
        >>> redact("GET https://b.s3.amazonaws.com/k?X-Amz-Signature=abc123&x=1")
        'GET https://b.s3.amazonaws.com/k?X-Amz-Signature=<redacted>&x=1'
    """
    for pattern in _SECRET_PATTERNS:
        if pattern.groups:
            text = pattern.sub(lambda m: m.group(1) + "<redacted>", text)
        else:
            text = pattern.sub("<redacted private key>", text)
    return text


class StorageError(Exception):
    """Base class of every error raised by sqlalchemy-obstore.

    Attributes:
        backend: The key of the backend involved, if any.
        path: The object path involved, if any.
    """

    def __init__(self, message: str, *, backend: str | None = None, path: str | None = None):
        super().__init__(message)
        self.backend = backend
        self.path = path

    def _context(self) -> str:
        parts = []
        if self.backend is not None:
            parts.append(f"backend={self.backend!r}")
        if self.path is not None:
            parts.append(f"path={self.path!r}")
        return ", ".join(parts)

    def __str__(self) -> str:
        message = super().__str__()
        context = self._context()
        return f"{message} ({context})" if context and context not in message else message


class ConfigurationError(StorageError):
    """A backend, registry or column is configured wrongly.

    Raised at definition or start-up time, never in the middle of a transaction.
    """


class BackendNotFoundError(ConfigurationError, LookupError):
    """No backend is registered under the requested key."""

    def __init__(self, key: str, *, registered: Sequence[str] = ()):
        known = ", ".join(repr(k) for k in sorted(registered)) or "none"
        super().__init__(
            f"No storage backend is registered under the key {key!r} "
            f"(registered: {known}). Register it at start-up, e.g. "
            f"storages.register_backend(ObstoreBackend({key!r}, '<storage URL>')).",
            backend=key,
        )
        self.registered = tuple(registered)

    def __str__(self) -> str:
        return Exception.__str__(self)


class BackendAlreadyRegisteredError(ConfigurationError, ValueError):
    """A backend with the same key is already registered."""

    def __init__(self, key: str):
        super().__init__(
            f"A storage backend is already registered under the key {key!r}; "
            "pass replace=True to replace it.",
            backend=key,
        )

    def __str__(self) -> str:
        return Exception.__str__(self)


class UnsupportedSchemeError(ConfigurationError, ValueError):
    """The storage URL uses a scheme no obstore store understands."""


class MissingDependencyError(ConfigurationError, ImportError):
    """An optional dependency needed for a feature is not installed."""

    def __init__(self, package: str, extra: str):
        super().__init__(
            f"This feature needs the {package!r} package. "
            f"Install it with: pip install 'sqlalchemy-obstore[{extra}]'"
        )
        self.package = package
        self.extra = extra


class FileObjectError(StorageError):
    """A `FileObject` was used in a way its state does not allow."""


class InvalidFileObjectError(FileObjectError, ValueError):
    """A value cannot be turned into a `FileObject`.

    Raised for bad constructor arguments, for values of the wrong type assigned to a
    `StoredObject` column, and for malformed data read from a column (the message then
    names the table and column).
    """


class InvalidFilenameError(FileObjectError, ValueError):
    """A filename cannot be made safe (for example, it is not a string)."""


class NoContentError(FileObjectError):
    """The `FileObject` has neither pending content nor a stored object to act on."""


class UnsupportedOperationError(StorageError):
    """The backend's store cannot perform the requested operation.

    The message says which kinds of store can.
    """


class InvalidExpiryError(StorageError, ValueError):
    """A signed-URL lifetime is not positive or exceeds what the store allows."""


class SignedURLError(StorageError, PermissionError):
    """A URL signed by [`HmacUrlSigner`][sqlalchemy_obstore.signing.HmacUrlSigner] was refused.

    The web routes answer it with `403 Forbidden` and no data. The message never
    contains the signature.
    """


class InvalidSignatureError(SignedURLError):
    """The signature is missing, malformed, made with another secret, or does not cover
    this request (another method, backend, path or expiry: the URL was tampered with).
    """


class ExpiredSignatureError(SignedURLError):
    """The signed URL was genuine but its lifetime has passed; sign a new one.

    Attributes:
        expired_at: When the URL stopped being accepted (Unix time, seconds).

    Example:
        >>> ExpiredSignatureError("Expired.", expired_at=1700000000).expired_at
        1700000000
    """

    def __init__(
        self,
        message: str,
        *,
        expired_at: int | None = None,
        backend: str | None = None,
        path: str | None = None,
    ):
        super().__init__(message, backend=backend, path=path)
        self.expired_at = expired_at


class ObjectNotFoundError(StorageError, FileNotFoundError):
    """The object does not exist in the store."""


class ObjectExistsError(StorageError, FileExistsError):
    """The library refused to overwrite an object that already exists."""


class StoragePermissionError(StorageError, PermissionError):
    """The store refused the request: credentials are missing, wrong or lack rights."""


class ChecksumMismatchError(StorageError):
    """A stored object no longer matches the checksum (or size) recorded for it.

    Raised by `FileObject.verify()`: the object was changed or corrupted in the store.

    Attributes:
        expected: The recorded checksum, `"<algorithm>:<hex>"`.
        actual: The checksum of the stored bytes, in the same form.
        expected_size: The recorded size, if any.
        actual_size: The size of the stored object.

    Example:
        >>> err = ChecksumMismatchError(expected="sha256:aa", actual="sha256:bb", path="k")
        >>> err.expected, err.actual
        ('sha256:aa', 'sha256:bb')
    """

    def __init__(
        self,
        *,
        expected: str,
        actual: str,
        expected_size: int | None = None,
        actual_size: int | None = None,
        backend: str | None = None,
        path: str | None = None,
    ):
        sizes = (
            f" Size: {actual_size} bytes stored, {expected_size} recorded."
            if expected_size is not None and actual_size != expected_size
            else ""
        )
        super().__init__(
            f"The stored object does not match its recorded checksum: expected {expected}, "
            f"found {actual}.{sizes}",
            backend=backend,
            path=path,
        )
        self.expected = expected
        self.actual = actual
        self.expected_size = expected_size
        self.actual_size = actual_size


class StorageOperationError(StorageError):
    """Any other failure of a store operation (network, server, protocol)."""

    def __init__(
        self,
        message: str,
        *,
        backend: str | None = None,
        path: str | None = None,
        operation: str | None = None,
    ):
        super().__init__(message, backend=backend, path=path)
        self.operation = operation


class StorageErrorGroup(StorageOperationError):
    """Several storage operations failed at once.

    Attributes:
        errors: The individual errors, in the order the operations were issued.
    """

    def __init__(self, message: str, errors: Sequence[BaseException]):
        details = "; ".join(str(e) for e in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        super().__init__(f"{message}: {details}{more}")
        self.errors = tuple(errors)


class ValidationError(StorageError, ValueError):
    """Content was refused by a validator before it was stored."""


class FileTooLargeError(ValidationError):
    """The content is larger than the configured limit.

    Raised while the content streams, as soon as the limit is passed: the upload is
    aborted and nothing is stored.

    Attributes:
        limit: The maximum size in bytes (the declared size, when `declared`).
        size_seen: How many bytes had been read when the limit was passed.
        declared: Whether the limit was the size the file declared (`FileObject(size=)`)
            rather than a policy's `max_size`.
    """

    def __init__(
        self,
        *,
        limit: int,
        size_seen: int,
        declared: bool = False,
        backend: str | None = None,
        path: str | None = None,
    ):
        super().__init__(
            f"The content is longer than its declared size: {size_seen} bytes read, "
            f"{limit} bytes declared."
            if declared
            else f"The file is too large: {size_seen} bytes read, the limit is {limit} bytes.",
            backend=backend,
            path=path,
        )
        self.limit = limit
        self.size_seen = size_seen
        self.declared = declared


class FileTooSmallError(ValidationError):
    """The content is smaller than the configured minimum (or than its declared size).

    Attributes:
        minimum: The minimum size in bytes (the declared size, when `declared`).
        size: The size of the content.
        declared: Whether the minimum was the size the file declared.
    """

    def __init__(
        self,
        *,
        minimum: int,
        size: int,
        declared: bool = False,
        backend: str | None = None,
        path: str | None = None,
    ):
        super().__init__(
            f"The content is shorter than its declared size: {size} bytes read, "
            f"{minimum} bytes declared."
            if declared
            else f"The file is too small: {size} bytes, the minimum is {minimum} bytes.",
            backend=backend,
            path=path,
        )
        self.minimum = minimum
        self.size = size
        self.declared = declared


class InvalidContentTypeError(ValidationError):
    """The content type is not allowed, or does not match the bytes."""

    def __init__(
        self,
        message: str,
        *,
        declared: str | None = None,
        detected: str | None = None,
        backend: str | None = None,
        path: str | None = None,
    ):
        super().__init__(message, backend=backend, path=path)
        self.declared = declared
        self.detected = detected


class InvalidExtensionError(ValidationError):
    """The filename's extension is not allowed."""


class InvalidImageError(ValidationError):
    """The content is not an image the `ImagePolicy` allows.

    Raised for undecodable content, a format not allowed, dimensions, pixel count or
    aspect ratio outside the limits, and decompression bombs (refused from the header,
    before their pixels are allocated).
    """


class ImageTooLargeError(InvalidImageError):
    """The image needs more than a resource limit of its `ImagePolicy` allows.

    Raised from the header, before any pixel is decoded: too many pixels
    (`max_pixels`, and Pillow's own decompression-bomb limit), too many frames
    (`max_frames`), or more memory to decode, resize and encode than `max_memory`.
    Nothing is stored. Lower the upload's dimensions, or raise the limit named in the
    message if such images are legitimate for you.

    Attributes:
        limit: The limit that was passed, in `unit`.
        actual: What the image needs, in `unit` (`None` when Pillow refused it first).
        unit: `"pixels"`, `"frames"` or `"bytes"` (of memory).
    """

    def __init__(
        self,
        message: str,
        *,
        limit: int,
        actual: int | None,
        unit: str,
        backend: str | None = None,
        path: str | None = None,
    ):
        super().__init__(message, backend=backend, path=path)
        self.limit = limit
        self.actual = actual
        self.unit = unit


class RemoteFetchError(StorageError):
    """Fetching remote content (`FileObject.from_url`) failed.

    Raised for a non-2xx answer, too many redirects, a timeout or a network failure.
    The message names the URL without credentials or query-string values (see
    `sqlalchemy_obstore.remote`, which builds it with `redact`).

    Attributes:
        url: The URL involved, in that redacted display form.
        status: The HTTP status code, when the server answered.

    Example:
        >>> err = RemoteFetchError("Cannot fetch https://example.com/a: 404.", status=404)
        >>> err.status
        404
    """

    def __init__(self, message: str, *, url: str | None = None, status: int | None = None):
        super().__init__(message)
        self.url = url
        self.status = status


class ForbiddenAddressError(RemoteFetchError):
    """A remote fetch was refused before any connection was made.

    Raised when a URL (or a redirect) is not `http`/`https`, carries credentials, or
    leads to an address that is blocked by default: loopback, private, link-local
    (including cloud metadata services), and the like. Pass `allow_private=True` or
    `allow_networks=[...]` to allow such addresses deliberately.

    Attributes:
        address: The refused IP address, when an address was the reason.

    Example:
        >>> ForbiddenAddressError("Refusing to connect to 10.0.0.1.", address="10.0.0.1").address
        '10.0.0.1'
    """

    def __init__(self, message: str, *, url: str | None = None, address: str | None = None):
        super().__init__(message, url=url)
        self.address = address


class UploadTicketError(StorageError):
    """An upload ticket (see `sqlalchemy_obstore.tickets`) cannot be redeemed.

    The message never contains the ticket itself: it is a bearer credential.
    """


class InvalidUploadTicketError(UploadTicketError, ValueError):
    """The ticket is malformed, was signed with another secret, or was tampered with.

    Answer with 400/403: the client did not get this ticket from the server (or changed
    it); asking again for a new ticket is the only way forward.
    """


class ExpiredUploadTicketError(UploadTicketError):
    """The ticket's redeem deadline has passed; issue a new ticket and upload again.

    Attributes:
        expired_at: When the ticket stopped being redeemable.

    Example:
        >>> from datetime import datetime, timezone
        >>> moment = datetime(2030, 1, 1, tzinfo=timezone.utc)
        >>> ExpiredUploadTicketError("Expired.", expired_at=moment).expired_at.year
        2030
    """

    def __init__(
        self,
        message: str,
        *,
        expired_at: datetime | None = None,
        backend: str | None = None,
        path: str | None = None,
    ):
        super().__init__(message, backend=backend, path=path)
        self.expired_at = expired_at


class ReplayedUploadTicketError(UploadTicketError):
    """The ticket was already redeemed (each ticket turns into one file, once)."""
