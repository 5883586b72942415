"""The framework upload a view receives: its content stream and what it declares.

A Starlette/FastAPI or Litestar `UploadFile` (duck-typed: `.file`, `.filename`,
`.content_type` or part headers, `.size`) is read here into plain values, without
reading its content: [`form_upload`][sqlalchemy_obstore._form_upload.form_upload] gives
the display name, declared type, size and an
[`UploadContent`][sqlalchemy_obstore.uploads.UploadContent] stream, from which both
`uploads.file_from_upload` and `FileObject.from_upload` build the pending file.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Mapping
from typing import IO, Any, NamedTuple

from ._errors import InvalidFileObjectError, NoContentError
from ._fields import MAX_CONTENT_TYPE_CHARS

__all__ = (
    "GENERIC_TYPES",
    "UPLOAD_CHUNK_SIZE",
    "FormUpload",
    "UploadContent",
    "declared_type",
    "display_name",
    "form_upload",
    "remaining_size",
)

UPLOAD_CHUNK_SIZE = 1024 * 1024
"""Bytes read from an upload's spooled file at a time."""

GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})


def display_name(name: object) -> str | None:
    """The last segment of a client-supplied name (some browsers send a full path)."""
    if not isinstance(name, str):
        return None
    leaf = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    return leaf or None


def header(headers: object, name: str) -> str | None:
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


def declared_type(upload: Any) -> str | None:
    """The content type the client declared for the part, or `None` when it declared none.

    Litestar fills in `text/plain` for a part without a `Content-Type` header, so the
    part's headers are asked first; a generic `application/octet-stream` also counts as
    "not declared" (the filename's extension is a better guess), and so does a value
    that cannot be a content type at all (control characters, line breaks, non-ASCII).
    """
    headers = getattr(upload, "headers", None)
    if headers is not None:  # the part's own headers: the truth
        value = header(headers, "content-type")
    else:
        value = getattr(upload, "content_type", None)
    if not isinstance(value, str) or value.split(";", 1)[0].strip().lower() in GENERIC_TYPES:
        return None
    if not (value.isascii() and value.isprintable()) or len(value) > MAX_CONTENT_TYPE_CHARS:
        return None  # not a type at all (controls, line breaks, ...): as if none was declared
    return value


def remaining_size(handle: IO[bytes]) -> int | None:
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


class FormUpload(NamedTuple):
    """What a framework upload declares, ready for the `FileObject` it becomes."""

    filename: str
    content: UploadContent
    content_type: str | None
    size: int | None


def form_upload(
    upload: Any,
    *,
    filename: str | None = None,
    content_type: str | None = None,
    chunk_size: int = UPLOAD_CHUNK_SIZE,
) -> FormUpload:
    """Read what `upload` declares (nothing of its content): name, type, size and stream.

    `filename` and `content_type`, when given, win over the client's. The size is the
    spooled file's remaining length when it can tell (the truth, e.g. when part of it
    was already read), else what the framework counted.

    Raises:
        InvalidFileObjectError: If `upload` has no binary `.file`.
    """
    content = UploadContent(upload, chunk_size=chunk_size)
    size = getattr(upload, "size", None)
    if not isinstance(size, int) or isinstance(size, bool):
        size = None
    remaining = remaining_size(content._file)
    if remaining is not None and (size is None or size != remaining):
        size = remaining
    if filename is None:
        filename = display_name(getattr(upload, "filename", None)) or "file"
    return FormUpload(
        filename,
        content,
        content_type or declared_type(upload),
        size,
    )
