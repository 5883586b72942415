"""Upload bodies and the multipart part limits of each kind of store.

What a backend's `put` needs to know about a body before and while it streams: its
length when known ([`SizedBody`][sqlalchemy_obstore.backends.SizedBody]), the part
size that makes it fit the store's part limit, a counter that refuses the chunk past
that limit, and how to close a body that will not be read to its end. Nothing here
talks to a store; `backends` re-exports the public names.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from ._errors import TooManyPartsError

__all__ = (
    "PART_LIMITS",
    "PartCount",
    "PartLimits",
    "SizedBody",
    "close_body",
    "known_length",
    "part_size",
)

_MIB = 1024 * 1024
_GIB = 1024 * _MIB


@dataclass(frozen=True, slots=True)
class PartLimits:
    """What one multipart upload of a store may hold.

    Attributes:
        max_parts: The most parts (blocks) one upload may have.
        max_part_size: The largest part.
        min_part_size: The smallest part but the last (S3 and GCS refuse smaller ones
            when the upload completes).
    """

    max_parts: int
    max_part_size: int
    min_part_size: int = 1


PART_LIMITS: dict[str, PartLimits] = {
    # https://docs.aws.amazon.com/AmazonS3/latest/userguide/qfacts.html
    "s3": PartLimits(max_parts=10_000, max_part_size=5 * _GIB, min_part_size=5 * _MIB),
    # https://cloud.google.com/storage/quotas#requests (XML API multipart uploads)
    "gcs": PartLimits(max_parts=10_000, max_part_size=5 * _GIB, min_part_size=5 * _MIB),
    # https://learn.microsoft.com/rest/api/storageservices/put-block-list (block blobs)
    "azure": PartLimits(max_parts=50_000, max_part_size=4000 * _MIB),
}
"""The multipart limits of each kind of store (`ObstoreBackend.kind`).

Stores not listed (local files, memory) put no limit on parts. Uploads read this table
when they start, so a test may change it (`monkeypatch.setitem`) to reach a limit with
little data.
"""


def part_size(
    total: int | None,
    chunk_size: int,
    limits: PartLimits | None,
    *,
    backend: str | None = None,
    path: str | None = None,
) -> int:
    """The part size of a multipart upload of `total` bytes (`None`: unknown length).

    `chunk_size` is the preferred size. When the length is known and `chunk_size`
    parts would be more than the store allows, parts grow (to whole MiB) until the
    upload fits: 5 MiB parts hold about 48 GiB in S3's 10,000 parts; a 100 GiB file
    goes up in 11 MiB parts. Every part in flight is held in memory, so larger parts
    cost memory (`part size x max_concurrency`).

    Args:
        total: The content's length, when known.
        chunk_size: The preferred part size.
        limits: The store's limits (`PART_LIMITS[kind]`); `None`: no limit.
        backend: For the error.
        path: For the error.

    Returns:
        The part size: `chunk_size`, or larger when needed.

    Raises:
        TooManyPartsError: When `total` does not fit even in parts of the largest size
            the store takes (before anything is uploaded).

    Example:
        >>> s3 = PART_LIMITS["s3"]
        >>> part_size(1024**3, 5 * 1024**2, s3) // 1024**2  # 1 GiB: the preferred size fits
        5
        >>> part_size(100 * 1024**3, 5 * 1024**2, s3) // 1024**2
        11
    """
    size = max(1, chunk_size)
    if limits is None or total is None or total <= size * limits.max_parts:
        return size
    needed = -(-total // limits.max_parts)
    grown = min(-(-needed // _MIB) * _MIB, limits.max_part_size)
    if grown < needed:
        raise TooManyPartsError(
            part_size=limits.max_part_size,
            max_parts=limits.max_parts,
            size_seen=total,
            known=True,
            backend=backend,
            path=path,
        )
    return max(size, grown)


class SizedBody(Iterator[Any]):
    """An upload body of buffers whose total length is known before it is read.

    Hand one to [`Backend.put`][sqlalchemy_obstore.backends.Backend.put] when the bytes
    stream but their length is known (a file on disk, a declared size): the store's
    part limit is then met by sizing the parts from the start, instead of failing at
    the limit (see [`part_size`][sqlalchemy_obstore.backends.part_size]). Content from
    a `pathlib.Path` or a regular file reaches the backend this way. The length is a
    plan, not a promise: a body that turns out longer is still counted part by part.

    Args:
        chunks: The buffers.
        size: Their total length in bytes.

    Example:
        >>> body = SizedBody([b"ab", b"c"], 3)
        >>> body.size, b"".join(body)
        (3, b'abc')
    """

    __slots__ = ("_chunks", "size")

    def __init__(self, chunks: Iterable[Any], size: int) -> None:
        self._chunks: Iterator[Any] = iter(chunks)
        self.size = size

    def __iter__(self) -> SizedBody:
        return self

    def __next__(self) -> Any:
        return next(self._chunks)

    def close(self) -> None:
        """Close the underlying iterator (a generator's cleanup runs now)."""
        close_body(self._chunks)


def known_length(body: object) -> int | None:
    if isinstance(body, (bytes, bytearray, memoryview)):
        return memoryview(body).nbytes
    if isinstance(body, SizedBody):
        return body.size
    return None


class PartCount:
    """Counts the bytes of a streamed multipart upload; refuses the part past the limit.

    obstore cuts the stream into parts of exactly `part_size` bytes (the last one
    shorter), so `max_parts x part_size` bytes are what the upload can hold: the chunk
    that goes beyond raises `TooManyPartsError` before obstore could start another
    part, and the failing body makes obstore abort the upload.
    """

    __slots__ = ("backend", "error", "limits", "part_size", "path", "seen")

    def __init__(self, limits: PartLimits, part_size: int, backend: str, path: str) -> None:
        self.limits = limits
        self.part_size = part_size
        self.backend = backend
        self.path = path
        self.seen = 0
        self.error: TooManyPartsError | None = None

    def add(self, chunk: Any) -> Any:
        self.seen += memoryview(chunk).nbytes
        if self.seen > self.part_size * self.limits.max_parts:
            self.error = TooManyPartsError(
                part_size=self.part_size,
                max_parts=self.limits.max_parts,
                size_seen=self.seen,
                backend=self.backend,
                path=self.path,
            )
            raise self.error
        return chunk


def close_body(body: object) -> None:
    # obstore can keep a failed upload's body iterator alive indefinitely, and with it
    # whatever the iterator holds open (the file of a Path source). Close it now so its
    # cleanup runs; one still running in obstore's runtime cannot be closed and is left.
    if isinstance(body, SizedBody):
        body.close()
    elif isinstance(body, Iterator):
        close = getattr(body, "close", None)
        if callable(close):
            with suppress(ValueError):  # "generator already executing"
                close()
