"""Turning the content given to a `FileObject` into an upload body.

A [`ContentReader`][sqlalchemy_obstore._content.ContentReader] pulls content from any
supported source in bounded chunks while counting bytes, hashing them and letting
observers (validators) see every chunk. Content that fits in one part is handed to the
store as one buffer (a single PUT, refused if the key exists); anything longer streams
as an iterator, which the store uploads as a multipart upload without ever holding the
whole file in memory.

Only an async iterator source needs async code; every other source is read with plain
(short, local) reads, so one implementation serves `save` and `save_async`.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import os
import re
import stat
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Literal, TypeAlias

from ._attributes import DEFAULT_CONTENT_TYPE
from ._body import SizedBody
from ._errors import InvalidFileObjectError, NoContentError

__all__ = (
    "CONSUMED",
    "ContentCheckpoint",
    "ContentReader",
    "ContentSource",
    "content_kind",
    "format_checksum",
)

ContentSource: TypeAlias = (
    "bytes | bytearray | memoryview | str | Path | IO[bytes] | Iterable[bytes] "
    "| AsyncIterable[bytes]"
)
"""Everything `FileObject(content=...)` accepts (`str` is stored as UTF-8, see
`text_content`)."""

ContentKind: TypeAlias = Literal["buffer", "path", "file", "iter", "aiter"]
ChunkObserver: TypeAlias = Callable[[memoryview, int], None]
"""Called with each chunk and the total byte count so far; raise to abort the upload."""
EndObserver: TypeAlias = Callable[[int], None]
"""Called with the total size once the source is exhausted, before the upload completes."""


class _ConsumedContent:
    """Stands in for stream content that a failed or rolled-back upload already read."""

    def __repr__(self) -> str:
        return "<consumed stream>"


CONSUMED: Any = _ConsumedContent()
"""The pending content of a file whose one-shot stream an unsuccessful upload read."""


def content_kind(source: object) -> ContentKind:
    """Classify a content source, or raise `InvalidFileObjectError` for unusable input."""
    if source is CONSUMED:
        raise NoContentError(
            "This file's content was a stream that an upload which failed or was rolled "
            "back already read, and a stream cannot be read twice: assign the content again."
        )
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "buffer"
    if isinstance(source, Path):
        return "path"
    if isinstance(source, str):  # (`FileObject` encodes text content when it is given)
        raise InvalidFileObjectError(
            "content must be bytes, str, a pathlib.Path, a binary file object or an "
            "iterator of bytes; a str given here is not encoded: encode text first."
        )
    if hasattr(source, "read"):
        if isinstance(source, io.TextIOBase):
            raise InvalidFileObjectError(
                "content must be a binary file object (open it with 'rb')."
            )
        return "file"
    if isinstance(source, (AsyncIterable, AsyncIterator)):
        return "aiter"
    if isinstance(source, (Iterable, Iterator)):
        return "iter"
    raise InvalidFileObjectError(
        f"Unsupported content type {type(source).__name__}: pass bytes, memoryview, "
        "pathlib.Path, a binary file object, or a sync or async iterator of bytes."
    )


_TEXTUAL_APPLICATION_TYPES = frozenset(
    {
        "application/json",
        "application/xml",
        "application/javascript",
        "application/ecmascript",
        "application/x-javascript",
        "application/yaml",
        "application/x-yaml",
        "application/toml",
        "application/sql",
        "application/graphql",
        "application/x-sh",
        "application/x-httpd-php",
        "image/svg+xml",
    }
)


def is_textual(content_type: str) -> bool:
    """Whether a content type is text that a `charset` parameter applies to.

    `text/*`, the `+json` and `+xml` structured types, and a few textual `application/`
    types (JSON, XML, JavaScript, YAML, TOML, SQL, GraphQL, shell).
    """
    base = content_type.split(";", 1)[0].strip().lower()
    return (
        base.startswith("text/")
        or base.endswith(("+json", "+xml"))
        or base in _TEXTUAL_APPLICATION_TYPES
    )


_CHARSET = re.compile(r";\s*charset\s*=\s*\"?([^\s;\"]+)", re.IGNORECASE)


def text_content(text: str, content_type: str | None, guessed: str) -> tuple[bytes, str]:
    """`str` content as stored: its UTF-8 bytes, and the content type that says so.

    The content type is `content_type` when given, else `guessed` (from the filename),
    else `text/plain`; when it is textual (`is_textual`) and has no `charset`,
    `; charset=utf-8` is added.

    Raises:
        InvalidFileObjectError: If `content_type` declares another charset (text is
            stored as UTF-8: encode it yourself for another one), or `text` cannot be
            encoded (a lone surrogate).
    """
    chosen = content_type or (guessed if guessed != DEFAULT_CONTENT_TYPE else "text/plain")
    declared = _CHARSET.search(chosen)
    if declared is not None:
        charset = declared.group(1).lower()
        if charset not in {"utf-8", "utf8"}:
            raise InvalidFileObjectError(
                f"str content is stored as UTF-8, but content_type {chosen!r} declares "
                f"charset {declared.group(1)!r}: encode the text yourself and pass bytes."
            )
    elif is_textual(chosen):
        chosen = f"{chosen}; charset=utf-8"
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidFileObjectError(f"str content cannot be stored as UTF-8: {exc}.") from exc
    return data, chosen


def _replayable(content: Any) -> bool:
    """Whether an upload can read `content` again from the start (seekable files aside)."""
    kind = content_kind(content)
    if kind in {"buffer", "path"}:
        return True
    if kind == "iter":  # a list of chunks can be iterated again, an iterator cannot
        return not isinstance(content, Iterator) or (
            inspect.isgenerator(content)
            and inspect.getgeneratorstate(content) == inspect.GEN_CREATED
        )
    if kind == "aiter":
        return not isinstance(content, AsyncIterator)
    return False  # a file object: only when seekable, see ContentCheckpoint


class ContentCheckpoint:
    """Where a content source stood before an upload read it, to give it back later.

    After an upload failed or was undone, `restore()` returns the content rewound (a
    buffer, a path, a seekable file, a fresh iterable) or, for a one-shot stream that
    was read, `CONSUMED`: a retry must never store only what is left of a stream.
    """

    __slots__ = ("content", "position")

    def __init__(self, content: Any) -> None:
        self.content = content
        seekable = hasattr(content, "seek") and getattr(content, "seekable", lambda: False)()
        self.position: int | None = content.tell() if seekable else None

    def restore(self) -> Any:
        """The content to hold again (rewound), or `CONSUMED`."""
        if self.content is None or self.content is CONSUMED:
            return self.content
        if self.position is not None:
            self.content.seek(self.position)
            return self.content
        return self.content if _replayable(self.content) else CONSUMED


def format_checksum(algorithm: str, digest: str) -> str:
    """The column form of a checksum: `"<algorithm>:<hex digest>"`."""
    return f"{algorithm}:{digest}"


def _head_of(chunks: list[Any], limit: int) -> bytes:
    """The first `limit` bytes of `chunks`, copying no more than that.

    (Joining every buffered chunk first would briefly hold two parts' worth of extra
    memory for a streamed upload; a whole first chunk of `bytes` is not copied at all.)
    """
    pieces: list[Any] = []
    need = limit
    for chunk in chunks:
        if need <= 0:
            break
        view = memoryview(chunk)
        if view.nbytes <= need and type(chunk) is bytes:
            pieces.append(chunk)
        else:
            pieces.append(view[:need])
        need -= min(view.nbytes, need)
    if len(pieces) == 1 and type(pieces[0]) is bytes:
        head: bytes = pieces[0]
        return head
    return b"".join(pieces)


FILE_READ_SIZE = 1024 * 1024
"""Bytes read from a file or path per call; obstore assembles its parts from them.

Reading a whole part (5 MiB) at a time makes every read a large allocation, and the
C allocator then keeps freed part-sized blocks around (glibc raises its mmap
threshold after such frees): about 45 MiB peak for a streamed upload of any size,
against about 6 MiB in 1 MiB reads, at the same speed.
"""


def _remaining(handle: IO[bytes]) -> int | None:
    """How many bytes are left to read in a regular file (`None`: not known)."""
    try:
        status = os.fstat(handle.fileno())
        if not stat.S_ISREG(status.st_mode):
            return None
        return max(0, status.st_size - handle.tell())
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None


def _file_chunks(handle: IO[bytes], chunk_size: int, *, close: bool) -> Iterator[bytes]:
    read_size = min(chunk_size, FILE_READ_SIZE)
    try:
        while True:
            chunk = handle.read(read_size)
            if not chunk:
                return
            yield chunk
    finally:
        if close:
            handle.close()


class _Stream(Iterator[Any]):
    """The buffered first chunks, then the rest of the source, each counted by `reader`.

    Unlike a generator, closing it closes the source even before the first chunk was
    pulled: a body refused up front (too many parts) lets go of its file at once.
    """

    __slots__ = ("_buffered", "_reader", "_rest")

    def __init__(self, reader: ContentReader, buffered: list[Any], rest: Iterator[Any]) -> None:
        self._reader = reader
        self._buffered: list[Any] | None = buffered[::-1]  # popped from the end
        self._rest = rest
        buffered.clear()

    def __iter__(self) -> _Stream:
        return self

    def __next__(self) -> Any:
        buffered = self._buffered
        if buffered:
            return buffered.pop()
        self._buffered = None
        try:
            chunk = next(self._rest)
        except StopIteration:
            self._reader._end()
            raise
        return self._reader._account(chunk)

    def close(self) -> None:
        """Drop what is buffered and close the source (its file, if any)."""
        self._buffered = None
        close = getattr(self._rest, "close", None)
        if close is not None:
            close()


class ContentReader:
    """Reads one content source exactly once, counting, hashing and observing it.

    Args:
        source: The content (see `ContentSource`).
        chunk_size: Part size: content up to this size is sent as one buffer.
        checksum_algorithm: `hashlib` name, or `None` for no checksum.
        observers: Callables that see every chunk (size limits, sniffing, ...).
        end_observers: Callables that see the total size when the source is exhausted
            (minimum sizes); for a streamed upload they run before the upload completes,
            so raising aborts it.
    """

    def __init__(
        self,
        source: Any,
        *,
        chunk_size: int,
        checksum_algorithm: str | None = "sha256",
        observers: Iterable[ChunkObserver] = (),
        end_observers: Iterable[EndObserver] = (),
    ) -> None:
        self.kind = content_kind(source)
        self._source = source
        self._chunk_size = max(1, chunk_size)
        self._algorithm = checksum_algorithm
        self._hasher = hashlib.new(checksum_algorithm) if checksum_algorithm else None
        self._observers = list(observers)
        self._end_observers = list(end_observers)
        self.size = 0
        self.head = b""
        """The first bytes of the content (up to one part), available before upload."""
        self.error: BaseException | None = None
        self._consumed = False
        self._buffered: list[Any] = []  # the first chunks, until they exceed one part
        self._buffered_size = 0

    def take_head(self) -> bytes:
        """The first bytes of the content, handed over once and then forgotten.

        The head is up to one part (a copy when the first chunk is not `bytes`): the
        reader does not keep it for the rest of a streamed upload.
        """
        head, self.head = self.head, b""
        return head

    @property
    def started(self) -> bool:
        """Whether reading the source has begun (it may need rewinding)."""
        return self._consumed

    @property
    def checksum(self) -> str | None:
        """The checksum of everything read so far, in column form."""
        if self._hasher is None or self._algorithm is None:
            return None
        return format_checksum(self._algorithm, self._hasher.hexdigest())

    def _account(self, chunk: Any) -> Any:
        view = memoryview(chunk)
        if view.format != "B" or view.ndim != 1:
            # obstore only takes byte buffers: hand it the flat byte view of, for
            # example, an array('i') or a 2-D numpy buffer.
            view = chunk = view.cast("B")
        self.size += view.nbytes
        if self._hasher is not None:
            self._hasher.update(view)
        for observer in self._observers:
            try:
                observer(view, self.size)
            except BaseException as exc:
                self.error = exc
                raise
        return chunk

    def _end(self) -> None:
        for observer in self._end_observers:
            try:
                observer(self.size)
            except BaseException as exc:
                self.error = exc
                raise

    def _start(self) -> None:
        if self._consumed:
            raise NoContentError(
                "This content was already consumed by an earlier upload and cannot be read "
                "again (iterators and file objects can be read only once)."
            )
        self._consumed = True

    def _sync_chunks(self) -> tuple[Iterator[Any], int | None]:
        """The chunks of the source, and its length when a file tells it."""
        source = self._source
        if self.kind == "path":
            try:
                handle = source.open("rb")
            except OSError as exc:
                raise InvalidFileObjectError(f"Cannot read content from {source}: {exc}") from exc
            return _file_chunks(handle, self._chunk_size, close=True), _remaining(handle)
        if self.kind == "file":
            return _file_chunks(source, self._chunk_size, close=False), _remaining(source)
        return iter(source), None

    def open(self) -> Any:
        """Return the upload body: one buffer when the content fits in a part, else an iterator.

        The iterator of a `pathlib.Path` or a regular file is a
        [`SizedBody`][sqlalchemy_obstore.backends.SizedBody] that carries the file's length.

        Raises:
            InvalidFileObjectError: For an async iterator (use `open_async`).
        """
        if self.kind == "aiter":
            raise InvalidFileObjectError(
                "An async iterator can only be saved from async code: use save_async()."
            )
        self._start()
        if self.kind == "buffer":
            return self._buffer()
        chunks, length = self._sync_chunks()
        for chunk in chunks:
            if self._look_ahead(chunk):
                stream = self._stream(self._ahead(), chunks)
                # A file's length lets the store size its parts to fit from the start.
                return stream if length is None else SizedBody(stream, length)
        return self._whole()

    # The sans-I/O half of `open` and `open_async`: the first chunks are buffered until
    # they exceed one part (the body then streams) or the source ends (one buffer).
    def _buffer(self) -> Any:
        self.head = bytes(memoryview(self._source)[: self._chunk_size])
        body = self._account(self._source)
        self._end()
        return body

    def _look_ahead(self, chunk: Any) -> bool:
        """Buffer `chunk`; whether more than one part is buffered now."""
        self._buffered.append(self._account(chunk))
        self._buffered_size += memoryview(chunk).nbytes
        return self._buffered_size > self._chunk_size

    def _ahead(self) -> list[Any]:
        """The buffered chunks, to stream first (the head is taken from them)."""
        self.head = _head_of(self._buffered, self._chunk_size)
        return self._buffered

    def _whole(self) -> bytes:
        """The buffered chunks were the whole content: one buffer."""
        whole = b"".join(self._buffered)
        self._buffered.clear()
        self.head = whole
        self._end()
        return whole

    def _stream(self, buffered: list[Any], rest: Iterator[Any]) -> Iterator[Any]:
        return _Stream(self, buffered, rest)

    async def open_async(self) -> Any:
        """Async version of `open`; the only one that accepts async iterators.

        A source that can be read both ways (a file-like object that also supports
        `async for`, such as a remote download) is read asynchronously here.
        """
        if self.kind != "aiter" and not hasattr(self._source, "__aiter__"):
            return self.open()
        self._start()
        chunks = aiter(self._source)
        async for chunk in chunks:
            if self._look_ahead(chunk):
                return self._stream_async(self._ahead(), chunks)
        return self._whole()

    async def _stream_async(
        self, buffered: list[Any], rest: AsyncIterator[Any]
    ) -> AsyncIterator[Any]:
        for chunk in buffered:
            yield chunk
        buffered.clear()
        async for chunk in rest:
            yield self._account(chunk)
        self._end()
