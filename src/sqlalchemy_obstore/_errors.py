"""The implementation of `sqlalchemy_obstore.errors`, documented and imported there."""

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
    "ForkedProcessError",
    "ImageTooLargeError",
    "InvalidContentTypeError",
    "InvalidExpiryError",
    "InvalidExtensionError",
    "InvalidFileObjectError",
    "InvalidFilenameError",
    "InvalidImageError",
    "InvalidKeySegmentError",
    "InvalidObjectPathError",
    "InvalidSignatureError",
    "InvalidSizeError",
    "MissingDependencyError",
    "NoContentError",
    "NoDefaultBackendError",
    "ObjectExistsError",
    "ObjectNotFoundError",
    "PathEscapeError",
    "RemoteFetchError",
    "RemoteTimeoutError",
    "SignedURLError",
    "StorageError",
    "StorageErrorGroup",
    "StorageOperationError",
    "StoragePermissionError",
    "TooManyPartsError",
    "UnsupportedOperationError",
    "UnsupportedSchemeError",
    "UntrustedReferenceError",
    "ExpiredUploadTicketError",
    "InvalidUploadTicketError",
    "ReplayedUploadTicketError",
    "UploadPartsError",
    "UploadTicketError",
    "ValidationError",
    "redact",
    "redact_url",
)

_SECRET_QUERY_NAMES = (
    # S3 SigV4, GCS V4, Azure SAS, this library's HMAC routes, OAuth and the usual API keys
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "x-goog-signature",
    "x-goog-credential",
    "sig",
    "signature",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "se",
    "skoid",
    "sktid",
    "password",
    "passwd",
    "pwd",
    "secret",
    "client_secret",
    "api_key",
    "apikey",
    "api-key",
    "ticket",
    # CloudFront signed cookies (`Signature` is covered above; in a URL, so is `Policy`:
    # see _URL_POLICY)
    "cloudfront-signature",
    "cloudfront-policy",
)
"""Query-string (and `name=value`) parameters whose values `redact` removes."""

_PEM_KEY = re.compile(
    # A block cut short (no END line) is redacted to the end of the text.
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----(?:.*?-----END [A-Z ]*PRIVATE KEY-----|.*)",
    re.S,
)
_URL_USERINFO = re.compile(
    # scheme://user:password@host: everything up to the last "@" of the authority, which
    # is how URL parsers split it
    r"(?i)(\b[a-z][a-z0-9+.-]*://)[^/\s?#\"'<>]*(?=@)"
)
_SECRET_PARAMETER = re.compile(
    # query-string signatures and credentials (S3 SigV4, GCS V4, Azure SAS, tokens)
    r"(?i)((?<![a-z0-9_.-])(?:"
    + "|".join(re.escape(name) for name in _SECRET_QUERY_NAMES)
    + r")=)[^&\s\"'<>]+"
)
_URL_POLICY = re.compile(
    # a CloudFront custom policy (it names the resource, the viewer's IP address and the
    # validity window); matched as a query parameter only, where "policy=" is no prose
    r"(?i)([?&]policy=)[^&\s\"'<>]+"
)
_CONNECTION_STRING_KEY = re.compile(
    r"(?i)((?:accountkey|sharedaccesssignature|secret[_-]?access[_-]?key)=)[^;\s\"']+"
)
_SECRET_FIELD = re.compile(
    # key=value pairs in debug dumps, e.g. secret_access_key: "..."
    r"(?i)((?:secret_access_key|account_key|access_key|session_token|token|private_key|"
    r"service_account_key|client_secret|bearer_token|password)\"?\s*[:=]\s*\"?)[^\",}\s&]+"
)
_FIELD_WORDS = ("key", "token", "secret", "password")


def _keep_name(match: re.Match[str]) -> str:
    return match.group(1) + "<redacted>"


_URL_PARTS = re.compile(r"(?is)^([a-z][a-z0-9+.-]*:)?(//)?([^/?#]*)([^?#]*)(\?[^#]*)?")


def redact(text: str) -> str:
    """Remove credentials and signatures from a message.

    The one redaction every message of this package goes through: the message of
    every [`StorageError`][sqlalchemy_obstore.StorageError] (applied when the error is
    made), the library's log records, and the `repr` of objects that hold signed URLs.
    It removes the `user:password@` of URLs, the values of secret-bearing parameters
    (`X-Amz-Signature`, `X-Amz-Credential`, `X-Amz-Security-Token`, `X-Goog-Signature`,
    Azure SAS `sig`, `signature`, `token`, CloudFront's `Signature` and `Policy`, ... — see
    `_SECRET_QUERY_NAMES`), connection
    string keys, `secret_access_key: ...` style pairs and PEM private keys. Applying it
    twice changes nothing.

    Example:
        >>> redact("GET https://b.s3.amazonaws.com/k?X-Amz-Signature=abc123&x=1")
        'GET https://b.s3.amazonaws.com/k?X-Amz-Signature=<redacted>&x=1'
        >>> redact("cannot open ftp://alice:hunter2@files.example.com/in/")
        'cannot open ftp://<redacted>@files.example.com/in/'
    """
    # Each pattern runs only when the text holds what it needs (most messages hold no
    # secret at all, and an error is made often enough for that to matter).
    if "PRIVATE KEY" in text:
        # First: the key=value patterns would otherwise eat the BEGIN line of a
        # `"private_key": "-----BEGIN ..."` and leave the key material in place.
        text = _PEM_KEY.sub("<redacted private key>", text)
    if "://" in text:
        text = _URL_USERINFO.sub(_keep_name, text)
    if "=" in text:
        text = _SECRET_PARAMETER.sub(_keep_name, text)
        text = _URL_POLICY.sub(_keep_name, text)
        text = _CONNECTION_STRING_KEY.sub(_keep_name, text)
    if ("=" in text or ":" in text) and any(word in text.lower() for word in _FIELD_WORDS):
        text = _SECRET_FIELD.sub(_keep_name, text)
    return text


def redact_url(url: object) -> str:
    """A URL in the form messages show: no credentials, no fragment, every query value gone.

    Stricter than [`redact`][sqlalchemy_obstore.errors.redact] because the URL is known
    to be one: `user:password@` is dropped and *every* query value is replaced, whatever
    its name (no list of secret names is complete). Parameter names stay, for debugging.

    Example:
        >>> redact_url("https://bob:pw@example.com/a.pdf?token=s3cr3t&page=2#top")
        'https://example.com/a.pdf?token=<redacted>&page=<redacted>'
    """
    text = str(url)
    match = _URL_PARTS.match(text)
    if match is None:  # pragma: no cover - the pattern matches any string
        return "<url>"
    scheme, slashes, authority, path, query = (g or "" for g in match.groups())
    if slashes:
        authority = authority.rsplit("@", 1)[-1]
    if query:
        pairs = [pair.split("=", 1)[0] + "=<redacted>" for pair in query[1:].split("&") if pair]
        query = "?" + "&".join(pairs)
    return redact(f"{scheme}{slashes}{authority}{path}") + query


class StorageError(Exception):
    """Base class of every error raised by sqlalchemy-obstore.

    Attributes:
        backend: The key of the backend involved, if any.
        path: The object path involved, if any.
    """

    def __init__(self, message: str, *, backend: str | None = None, path: str | None = None):
        # Every message is redacted here, once: whatever a subclass or a caller put in
        # it (a URL with credentials, a lower-level error's text), no secret gets out.
        super().__init__(redact(message))
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
        context = redact(self._context())
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


class NoDefaultBackendError(ConfigurationError, LookupError):
    """A file or column names no backend, and its registry has no default backend."""

    def __init__(self, *, registered: Sequence[str] = ()):
        known = ", ".join(repr(k) for k in sorted(registered)) or "none"
        super().__init__(
            "No backend was named and the registry has no default backend "
            f"(registered: {known}). Name the backend (StoredObject('key'), "
            "FileObject(..., backend='key')), or choose a default at start-up: "
            "storages.register_backend(backend, default=True) or storages.set_default('key')."
        )
        self.registered = tuple(registered)


class InvalidSizeError(ConfigurationError, ValueError):
    """A size given as text (`"5 MiB"`) is not a whole number of bytes in a known unit."""


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


class InvalidObjectPathError(InvalidFileObjectError):
    """An object path is malformed (`..`, empty segments, control characters, ...) or
    lies outside the managed prefix of the backend asked to write or delete it (a
    `put`, a `copy` to it, a URL signed for `PUT` or `DELETE`, a delete).

    The library never writes such a path itself; it comes from a row, a request body or
    application code, and it never reaches the store. (Reading a well-formed path
    outside the prefix is allowed: rows written before the prefix changed.)
    """


class UntrustedReferenceError(FileObjectError, PermissionError):
    """A reference decoded from outside data names an object its row does not hold.

    Column-shape dicts from request bodies (`FileObject.from_dict`, Pydantic, msgspec, a
    dict assigned to a column) are untrusted: a session writes one into a row only when
    that row and column already hold the same object (an edit form sending the value
    back). Anything else could point the row at another user's object, so the flush
    refuses it and nothing is written. Attach new files through uploads or upload
    tickets; build references on purpose with the `FileObject` constructor or
    `FileObject.from_dict(..., trusted=True)` in server code.
    """


class InvalidFilenameError(InvalidFileObjectError):
    """A filename cannot be used: it is not a string, or it holds characters no store or
    database can keep (NUL, lone surrogates; see
    [`check_filename`][sqlalchemy_obstore.keys.check_filename]).

    A `ValueError` (and an `InvalidFileObjectError`): answer it with 400.
    """


class InvalidKeySegmentError(InvalidFileObjectError):
    """A value taken from a row cannot be a segment of an object key.

    Raised by the flush for a column whose key prefix is derived from the row
    (`StoredObject(key_prefix=function)`) when the function returns `None`, an empty
    string, `..`, a value holding `/`, or anything else
    [`key_segment`][sqlalchemy_obstore.keys.key_segment] refuses. Nothing is uploaded
    and nothing is written. A `ValueError` (and an `InvalidFileObjectError`: 422).
    """


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


class PathEscapeError(StoragePermissionError):
    """A local-files backend refused a key that leads outside its root.

    Raised when a path component below the backend's root directory is a symbolic link
    (to a file or a directory, wherever it points): the library never follows one, so
    no read, write, copy, delete or listing reaches a file outside the root. Listings
    skip such entries instead (and log them). The message names the key, never the
    link's target. Remove the link, or point the backend at the real directory.

    Example:
        >>> PathEscapeError("Refused.", backend="files", path="a/b.txt").path
        'a/b.txt'
    """


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


class ForkedProcessError(StorageError, RuntimeError):
    """A storage call in a process forked after obstore's I/O runtime had started.

    obstore runs its I/O on a Tokio runtime whose threads do not survive `fork()`: in
    the child every store call - on an existing store or on a new one - would wait
    forever. The library refuses such calls at once instead. Start worker processes
    with `spawn` or `forkserver`, or make the parent's first storage call only after the
    workers are forked (gunicorn without `--preload`, Celery's `worker_process_init`):
    see the deployment guide.

    Attributes:
        parent_pid: The process that used obstore, then forked.
    """

    def __init__(self, message: str, *, parent_pid: int | None = None):
        super().__init__(message)
        self.parent_pid = parent_pid


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


class TooManyPartsError(FileTooLargeError):
    """The content does not fit in one multipart upload of the store.

    S3 and GCS take at most 10,000 parts of at most 5 GiB each, Azure 50,000 blocks of
    at most 4000 MiB. Parts are sized from the content's length when it is known (a
    buffer, a `pathlib.Path`, a declared size), so only content beyond the store's
    largest object is refused then, before a byte is sent. For a stream of unknown
    length the parts have the column's `chunk_size` (5 MiB by default: about 48 GiB in
    10,000 parts); the upload stops as soon as the stream passes what that many parts
    hold, aborted, with nothing stored.

    Attributes:
        limit: The most bytes the upload can hold (`max_parts x part_size`).
        size_seen: The content's known length, or the bytes read when the limit was
            passed.
        part_size: The part size of the upload.
        max_parts: The store's limit on parts.

    Example:
        >>> error = TooManyPartsError(part_size=5, max_parts=2, size_seen=11)
        >>> error.limit, isinstance(error, FileTooLargeError)
        (10, True)
    """

    def __init__(
        self,
        *,
        part_size: int,
        max_parts: int,
        size_seen: int,
        known: bool = False,
        backend: str | None = None,
        path: str | None = None,
    ):
        limit = part_size * max_parts
        what = f"is {size_seen} bytes long" if known else f"passed {limit} bytes"
        ValidationError.__init__(
            self,
            f"The content {what}, more than one multipart upload holds here: at most "
            f"{max_parts} parts of {part_size} bytes ({limit} bytes). "
            + (
                "The store takes no larger parts; split the content."
                if known
                else "Give the column a larger chunk_size (StoredObject(chunk_size=...)), or "
                "upload from a file (pathlib.Path) or a SizedBody, whose known length sizes "
                "the parts to fit."
            ),
            backend=backend,
            path=path,
        )
        self.limit = limit
        self.size_seen = size_seen
        self.declared = False
        self.part_size = part_size
        self.max_parts = max_parts


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
        self.url = redact_url(url) if url is not None else None
        self.status = status


class RemoteTimeoutError(RemoteFetchError, TimeoutError):
    """A remote fetch took too long and was abandoned; nothing was stored.

    Raised when no data came within `timeout` seconds (resolving, connecting, or
    between two reads), or when the whole fetch — every redirect and the entire body —
    did not finish within its `deadline`.

    Attributes:
        limit: The limit that was passed, in seconds.
        deadline: `True` when the limit was the whole fetch's deadline, `False` for the
            `timeout` of one step.

    Example:
        >>> err = RemoteTimeoutError("Too slow.", limit=300.0, deadline=True)
        >>> err.deadline, isinstance(err, TimeoutError)
        (True, True)
    """

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        limit: float | None = None,
        deadline: bool = False,
    ):
        super().__init__(message, url=url)
        self.limit = limit
        self.deadline = deadline


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


class UploadPartsError(UploadTicketError, ValueError):
    """The parts of a multipart direct upload do not match the ticket's plan.

    A part number outside `1..part_count`, or, when completing, a part that is missing,
    shorter than planned, or whose ETag is not the one the client names. Upload the
    part (again) and complete again; the ticket stays usable.

    Attributes:
        missing: Part numbers the store does not have.
    """

    def __init__(
        self,
        message: str,
        *,
        missing: Sequence[int] = (),
        backend: str | None = None,
        path: str | None = None,
    ):
        super().__init__(message, backend=backend, path=path)
        self.missing = tuple(missing)


class ReplayedUploadTicketError(UploadTicketError):
    """The ticket was already redeemed (each ticket turns into one file, once)."""
