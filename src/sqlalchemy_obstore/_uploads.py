"""The implementation of `sqlalchemy_obstore.uploads`, documented and imported there."""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ._errors import (
    ExpiredUploadTicketError,
    FileTooLargeError,
    FileTooSmallError,
    InvalidContentTypeError,
    InvalidExtensionError,
    InvalidFileObjectError,
    InvalidImageError,
    InvalidUploadTicketError,
    ObjectNotFoundError,
    ReplayedUploadTicketError,
    UntrustedReferenceError,
    UploadPartsError,
    ValidationError,
)
from ._file_object import FileObject
from ._form_upload import (
    GENERIC_TYPES,
    UPLOAD_CHUNK_SIZE,
    UploadContent,
    display_name,
    form_upload,
)

if TYPE_CHECKING:
    from ._registry import BackendRegistry

__all__ = (
    "UPLOAD_CHUNK_SIZE",
    "UploadContent",
    "error_status",
    "file_from_stream",
    "file_from_upload",
)


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
    parts = form_upload(upload, filename=filename, content_type=content_type, chunk_size=chunk_size)
    return (file_class or FileObject)(
        filename=parts.filename,
        content=parts.content,
        content_type=parts.content_type,
        size=parts.size,
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
    if isinstance(stream, (bytes, bytearray, memoryview, str)) or not isinstance(
        stream, (AsyncIterable, Iterable)
    ):
        raise InvalidFileObjectError(
            "file_from_stream takes an async or sync iterable of byte chunks, such as "
            f"request.stream(), not {type(stream).__name__}."
        )
    if content_type is not None and content_type.split(";", 1)[0].strip().lower() in (
        GENERIC_TYPES
    ):
        content_type = None
    return FileObject(
        filename=display_name(filename) or "file",
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
