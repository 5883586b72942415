"""Files from web requests: framework uploads and raw request bodies, streamed.

[`file_from_upload`][sqlalchemy_obstore.uploads.file_from_upload] (also
`FileObject.from_upload`) turns the `UploadFile` of a multipart form — Starlette's and
FastAPI's, or Litestar's — into a pending
[`FileObject`][sqlalchemy_obstore.FileObject]. Nothing is read here: when the file is
saved (by a session flush or `save()`), the bytes stream from the framework's spooled
temporary file into storage chunk by chunk, so a large upload never sits whole in
memory. Neither framework is imported: any object with `file` (a binary file object)
and `filename` works.

[`file_from_stream`][sqlalchemy_obstore.uploads.file_from_stream] takes a raw request
body instead (`request.stream()` in both frameworks) for a `PUT`/`POST` of the bare
bytes: no multipart parsing, no temporary file, the body goes straight from the socket
to storage.

The column's (and backend's) [`UploadPolicy`][sqlalchemy_obstore.validation.UploadPolicy]
applies at save time as for any content: size limits while streaming, content types
sniffed from the first bytes, extensions, validators. The client's filename is display
data only (the object key uses a sanitised form), and its declared content type is a
hint that sniffing overrides when the policy sniffs.

Example:
    >>> import io
    >>> from sqlalchemy_obstore import FileObject, ObstoreBackend, storages
    >>> class Upload:  # what a framework hands a view: .file, .filename, .content_type
    ...     file = io.BytesIO(b"name,qty\\n")
    ...     filename = "C:\\\\Users\\\\me\\\\stock.csv"
    ...     content_type = "text/csv"
    >>> with storages.temporary(ObstoreBackend("uploads", "memory://")):
    ...     f = FileObject.from_upload(Upload(), backend="uploads")
    ...     (f.filename, f.size, f.content_type), f.save().get_content()
    (('stock.csv', 9, 'text/csv'), b'name,qty\\n')
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from typing import IO, TYPE_CHECKING, Any

from .errors import (
    ExpiredUploadTicketError,
    FileTooLargeError,
    FileTooSmallError,
    InvalidContentTypeError,
    InvalidExtensionError,
    InvalidFileObjectError,
    InvalidImageError,
    InvalidUploadTicketError,
    NoContentError,
    ObjectNotFoundError,
    ReplayedUploadTicketError,
    UntrustedReferenceError,
    UploadPartsError,
    ValidationError,
)

if TYPE_CHECKING:
    from .file_object import FileObject
    from .registry import BackendRegistry

__all__ = (
    "UPLOAD_CHUNK_SIZE",
    "UploadContent",
    "error_status",
    "file_from_stream",
    "file_from_upload",
)

UPLOAD_CHUNK_SIZE = 1024 * 1024
"""Bytes read from an upload's spooled file at a time."""

_GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})


def _display_name(name: object) -> str | None:
    """The last segment of a client-supplied name (some browsers send a full path)."""
    if not isinstance(name, str):
        return None
    leaf = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    return leaf or None


def _header(headers: object, name: str) -> str | None:
    """A header from a Starlette `Headers` or a plain dict (any case)."""
    if headers is None:
        return None
    getter = getattr(headers, "get", None)
    if getter is None:
        return None
    value = getter(name)
    if value is None and isinstance(headers, Mapping):
        for key, candidate in headers.items():
            if isinstance(key, str) and key.lower() == name:
                value = candidate
                break
    return value if isinstance(value, str) else None


def _declared_type(upload: Any) -> str | None:
    """The content type the client declared for the part, or `None` when it declared none.

    Litestar fills in `text/plain` for a part without a `Content-Type` header, so the
    part's headers are asked first; a generic `application/octet-stream` also counts as
    "not declared" (the filename's extension is a better guess).
    """
    headers = getattr(upload, "headers", None)
    if headers is not None:  # the part's own headers: the truth
        value = _header(headers, "content-type")
    else:
        value = getattr(upload, "content_type", None)
    if not isinstance(value, str) or value.split(";", 1)[0].strip().lower() in _GENERIC_TYPES:
        return None
    return value


def _remaining_size(handle: IO[bytes]) -> int | None:
    """Bytes from the current position to the end of a seekable file, without reading."""
    try:
        if not handle.seekable():
            return None
        position = handle.tell()
        end = handle.seek(0, 2)
        handle.seek(position)
    except (AttributeError, OSError, ValueError):
        return None
    return max(0, end - position)


class UploadContent:
    """The content of a framework upload, readable by both `save` and `save_async`.

    Sync saves read the spooled file directly (short local reads). Async saves iterate
    it with `async for`, which uses the framework's own `await upload.read(n)` when it
    has one (Starlette and Litestar run the read in a worker thread once the file has
    rolled over to disk) so the event loop is never blocked by disk I/O. Seeking is
    passed through, so a failed or rolled-back upload can rewind and be retried.

    Args:
        upload: The framework's upload object (`.file`, optionally an async `.read`).
        chunk_size: Bytes per read.
    """

    def __init__(self, upload: Any, *, chunk_size: int = UPLOAD_CHUNK_SIZE) -> None:
        handle = getattr(upload, "file", None)
        if handle is None or not callable(getattr(handle, "read", None)):
            raise InvalidFileObjectError(
                f"Expected an upload with a binary .file (Starlette/FastAPI or Litestar "
                f"UploadFile), got {type(upload).__name__}."
            )
        self._upload = upload
        self._file: IO[bytes] = handle
        self._chunk_size = max(1, chunk_size)
        read = getattr(upload, "read", None)
        self._async_read = read if inspect.iscoroutinefunction(read) else None

    def __repr__(self) -> str:
        return f"UploadContent({getattr(self._upload, 'filename', None)!r})"

    def _check_open(self) -> None:
        if getattr(self._file, "closed", False):
            raise NoContentError(
                "The upload's temporary file is closed: frameworks close it when the request "
                "ends (or when the form is closed). Save the file, or commit the session that "
                "holds it, inside the request handler."
            )

    def read(self, size: int = -1) -> bytes:
        """Read from the spooled file (sync)."""
        self._check_open()
        return self._file.read(size)

    def seekable(self) -> bool:
        """Whether the spooled file can rewind (it can, while it is open)."""
        seekable = getattr(self._file, "seekable", None)
        if not callable(seekable) or getattr(self._file, "closed", False):
            return False
        return bool(seekable())

    def tell(self) -> int:
        """The position in the spooled file."""
        self._check_open()
        return self._file.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        """Move in the spooled file."""
        self._check_open()
        return self._file.seek(offset, whence)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self._check_open()
        read = self._async_read
        while True:
            if read is not None:
                chunk = await read(self._chunk_size)
            else:
                chunk = await asyncio.to_thread(self._file.read, self._chunk_size)
            if not chunk:
                return
            yield chunk


def file_from_upload(
    upload: Any,
    *,
    backend: str | None = None,
    filename: str | None = None,
    content_type: str | None = None,
    metadata: Mapping[str, str] | None = None,
    registry: BackendRegistry | None = None,
    chunk_size: int = UPLOAD_CHUNK_SIZE,
    file_class: type[FileObject] | None = None,
) -> FileObject:
    """A pending `FileObject` whose content streams from a framework's `UploadFile`.

    Works with Starlette/FastAPI's and Litestar's `UploadFile` (duck-typed: `.file`,
    `.filename`, `.content_type` or part headers, `.size` when the framework counts it).
    Nothing is read here; saving streams from the spooled temporary file, from where it
    currently stands.

    Args:
        upload: The upload object.
        backend: Backend key (or leave it to the column the file is assigned to).
        filename: Display name; default: the client's filename, reduced to its last
            path segment (some browsers send `C:\\...\\name`). Only a sanitised form
            ever appears in the object key.
        content_type: MIME type; default: what the client declared for the part, else
            guessed from the filename. When the upload policy sniffs, the type detected
            from the bytes is what is stored.
        metadata: Custom str→str metadata.
        registry: The registry that resolves `backend`.
        chunk_size: Bytes per read from the spooled file.
        file_class: The `FileObject` subclass to build (used by `FileObject.from_upload`).

    Returns:
        A pending file; its `size` is the upload's size when known (a content that
        turns out longer or shorter is refused when saved).

    Raises:
        InvalidFileObjectError: If `upload` has no binary `.file`.

    Example:
        >>> import io
        >>> from types import SimpleNamespace
        >>> upload = SimpleNamespace(file=io.BytesIO(b"%PDF-1.7"), filename="cv.pdf",
        ...                          content_type="application/pdf", size=8)
        >>> f = file_from_upload(upload, backend="uploads")
        >>> f.filename, f.content_type, f.size, f.has_pending_content
        ('cv.pdf', 'application/pdf', 8, True)
    """
    from .file_object import FileObject

    content = UploadContent(upload, chunk_size=chunk_size)
    size = getattr(upload, "size", None)
    if not isinstance(size, int) or isinstance(size, bool):
        size = None
    remaining = _remaining_size(content._file)
    if remaining is not None and (size is None or size != remaining):
        # The spooled file is the truth (e.g. part of it was already read).
        size = remaining
    cls = file_class or FileObject
    return cls(
        filename=filename
        if filename is not None
        else _display_name(getattr(upload, "filename", None)) or "file",
        content=content,
        content_type=content_type or _declared_type(upload),
        size=size,
        backend=backend,
        metadata=metadata,
        registry=registry,
    )


def file_from_stream(
    stream: AsyncIterable[bytes] | Iterable[bytes],
    *,
    filename: str,
    content_type: str | None = None,
    size: int | None = None,
    backend: str | None = None,
    metadata: Mapping[str, str] | None = None,
    registry: BackendRegistry | None = None,
) -> FileObject:
    """A pending `FileObject` whose content is a request body stream.

    For a raw `PUT`/`POST` of the file's bytes (`Content-Type` the file's type, the
    name in a header or the URL): pass `request.stream()` (Starlette, FastAPI and
    Litestar all provide it). The body streams straight into storage when the file is
    saved with `save_async()` or an `AsyncSession` flush; there is no multipart parsing
    and no temporary file. A stream can be read once: a failed upload cannot be retried
    from it.

    Args:
        stream: An async (or sync) iterable of byte chunks.
        filename: Display name (reduced to its last path segment).
        content_type: MIME type (e.g. the request's `Content-Type`); default: guessed
            from the filename.
        size: The announced size (`Content-Length`), if any: a body that turns out
            longer or shorter is refused when saved.
        backend: Backend key (or leave it to the column).
        metadata: Custom str→str metadata.
        registry: The registry that resolves `backend`.

    Returns:
        A pending file.

    Raises:
        InvalidFileObjectError: If `stream` is not an iterable of bytes.

    Example:
        >>> async def body():
        ...     yield b"hello "
        ...     yield b"world"
        >>> f = file_from_stream(body(), filename="notes/hi.txt", size=11, backend="b")
        >>> f.filename, f.content_type, f.size
        ('hi.txt', 'text/plain', 11)
    """
    from .file_object import FileObject

    if isinstance(stream, (bytes, bytearray, memoryview, str)) or not isinstance(
        stream, (AsyncIterable, Iterable)
    ):
        raise InvalidFileObjectError(
            "file_from_stream takes an async or sync iterable of byte chunks, such as "
            f"request.stream(), not {type(stream).__name__}."
        )
    if content_type is not None and content_type.split(";", 1)[0].strip().lower() in (
        _GENERIC_TYPES
    ):
        content_type = None
    return FileObject(
        filename=_display_name(filename) or "file",
        content=stream,
        content_type=content_type,
        size=size,
        backend=backend,
        metadata=metadata,
        registry=registry,
    )


_STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (FileTooLargeError, 413),
    (InvalidContentTypeError, 415),
    (InvalidExtensionError, 415),
    (FileTooSmallError, 422),
    (InvalidImageError, 422),
    (ObjectNotFoundError, 404),
    (InvalidUploadTicketError, 400),
    (ExpiredUploadTicketError, 410),
    (ReplayedUploadTicketError, 409),
    (UploadPartsError, 400),
    (UntrustedReferenceError, 403),
    (ValidationError, 422),
    (InvalidFileObjectError, 422),
)


def error_status(exc: BaseException) -> int | None:
    """The HTTP status that answers a refused upload, or `None` for other errors.

    `FileTooLargeError` → 413, `InvalidContentTypeError` and `InvalidExtensionError` →
    415, `FileTooSmallError` and `InvalidImageError` → 422, `ObjectNotFoundError` → 404,
    upload-ticket errors → 400 (malformed or forged, or parts of a multipart upload that
    do not match its plan), 410 (expired), 409 (replayed),
    `UntrustedReferenceError` (a request body naming an object its row does not hold) →
    403, any other `ValidationError` and a malformed file value
    (`InvalidFileObjectError`, e.g. a bad path) → 422.
    The Litestar plugin and the Starlette/FastAPI `StorageExtension` install handlers
    answering with it by default; use it in your own exception handler otherwise.

    Example:
        >>> from sqlalchemy_obstore import FileTooLargeError
        >>> error_status(FileTooLargeError(limit=1, size_seen=2))
        413
        >>> error_status(RuntimeError()) is None
        True
    """
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return status
    return None
