"""One object of a migration: found at the destination, or copied there and verified.

[`Mover.bring`][sqlalchemy_obstore._migration_copy.Mover.bring] skips an object the
destination already holds (same size, and same checksum when the row recorded one),
else streams it from the source (`_copy.copy_object`) while counting and hashing the
bytes, checks the copy, and deletes a copy that does not match: a wrong copy is never
left behind. [`Mover.deletable`][sqlalchemy_obstore._migration_copy.Mover.deletable]
is the check before a source object is deleted: its copy exists and matches.
What the row recorded of an object is a [`Job`][sqlalchemy_obstore._migration_copy.Job].

An object goes to the destination under its own path, so the destination must manage
that path (it lies under the destination's prefix): else the copy could never be deleted
or collected there. [`check_destination`][sqlalchemy_obstore._migration_copy.check_destination]
refuses, before anything is copied, a destination whose prefix does not contain the
source's; `bring` fails each object whose path still lies outside it (a row written
before the source got its prefix) without writing anything.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ._attributes import object_attributes
from ._copy import copy_object
from ._errors import ObjectNotFoundError, StorageError
from ._file_columns import FileColumn
from ._io import Call, iterate, run
from ._prefixes import manages, prefix_of, require_contains
from .backends import Backend, ObjectInfo

__all__ = ("Job", "Mover", "Outcome", "check_destination", "delete", "head", "job_of")

_NOT_COPIED_ATTRIBUTES = frozenset({"Storage-Class"})


@dataclass(frozen=True, slots=True)
class Job:
    """One object to bring to the destination, with what the row recorded about it."""

    path: str
    size: int | None
    checksum: str | None
    filename: str | None
    content_type: str | None
    metadata: Mapping[str, str]
    cache_control: str | None = None
    """The column's `Cache-Control` (the row does not record it; the session writes it)."""


@dataclass(slots=True)
class Outcome:
    """What became of one object (`info`: what the destination holds, when known)."""

    status: Literal["copied", "skipped", "would_copy", "failed"]
    info: ObjectInfo | None = None
    size: int = 0
    error: str | None = None


def job_of(data: Mapping[str, Any], column: FileColumn) -> Job:
    """The job of the stored file `data` (a raw column entry) of `column`."""
    size = data.get("size")
    checksum = data.get("checksum")
    filename = data.get("filename")
    content_type = data.get("content_type")
    metadata = data.get("metadata")
    return Job(
        path=data["path"],
        size=size if isinstance(size, int) and not isinstance(size, bool) else None,
        checksum=checksum if isinstance(checksum, str) and ":" in checksum else None,
        filename=filename if isinstance(filename, str) else None,
        content_type=content_type if isinstance(content_type, str) else None,
        metadata=(
            {k: v for k, v in metadata.items() if isinstance(k, str) and isinstance(v, str)}
            if isinstance(metadata, Mapping)
            else {}
        ),
        cache_control=column.stored_type.cache_control,
    )


def _hasher(checksum: str | None) -> tuple[str, Any] | None:
    """`(algorithm, hashlib object)` for a recorded checksum, or `None`."""
    if not checksum:
        return None
    algorithm = checksum.partition(":")[0]
    try:
        return algorithm, hashlib.new(algorithm)
    except ValueError:
        return None


def check_destination(source: Backend, destination: Backend) -> None:
    """Refuse a destination whose prefix does not contain the source's (see the module).

    Raises:
        ConfigurationError: If the copies would land outside the destination's prefix.
    """
    require_contains(destination, source, "migrate copies each object to the same path")


# -- storage calls (sync, or async through the greenlet bridge: see `_io`) ---------------------
def head(backend: Backend, path: str) -> ObjectInfo | None:
    """What `backend` holds at `path`, or `None`."""
    try:
        return run(Call(backend.head, backend.head_async, path))
    except ObjectNotFoundError:
        return None


def delete(backend: Backend, paths: list[str]) -> None:
    """Delete `paths` from `backend` (missing ones are not an error)."""
    run(Call(backend.delete, backend.delete_async, paths))


def _digest(backend: Backend, path: str, hasher: Any, chunk_size: int) -> tuple[str, int]:
    """Hash a stored object (streamed); returns the hex digest and the size read."""
    size = 0
    for chunk in iterate(
        backend.iter_chunks, backend.iter_chunks_async, path, chunk_size=chunk_size
    ):
        hasher.update(chunk)
        size += len(chunk)
    return hasher.hexdigest(), size


class _Tally:
    """Counts the bytes passing through a copy and hashes them."""

    def __init__(self, hasher: Any) -> None:
        self.hasher = hasher
        self.size = 0

    def see(self, chunk: bytes) -> bytes:
        if self.hasher is not None:
            self.hasher.update(chunk)
        self.size += len(chunk)
        return chunk


# -- one object --------------------------------------------------------------------------------
class Mover:
    """Brings objects from `source` to `destination`, and tells which sources may go.

    Its storage calls are sync, or async through the greenlet bridge (see `_io`).
    """

    def __init__(
        self, source: Backend, destination: Backend, *, chunk_size: int, dry_run: bool
    ) -> None:
        self.source = source
        self.destination = destination
        self.chunk_size = chunk_size
        self.dry_run = dry_run

    def _matches(self, info: ObjectInfo, job: Job, expected_size: int | None) -> bool:
        """Whether the stored object `info` is the one the row recorded."""
        if expected_size is not None and info.size != expected_size:
            return False
        hashing = _hasher(job.checksum)
        if hashing is None:
            return True
        algorithm, hasher = hashing
        digest, size = _digest(self.destination, job.path, hasher, self.chunk_size)
        return f"{algorithm}:{digest}".lower() == (job.checksum or "").lower() and (
            size == info.size
        )

    def _attributes(self, job: Job, info: ObjectInfo) -> dict[str, str]:
        if info.content_type or info.attributes:  # the source store kept them
            attributes = {
                k: v for k, v in info.attributes.items() if k not in _NOT_COPIED_ATTRIBUTES
            }
            if info.content_type:
                attributes["Content-Type"] = info.content_type
            return attributes
        if job.filename is None or job.content_type is None:
            return {}
        # As the session writes them: the column's Cache-Control, and user metadata
        # unless the destination is told not to write any.
        return object_attributes(
            filename=job.filename,
            content_type=job.content_type,
            metadata=job.metadata,
            cache_control=job.cache_control,
            include_metadata=getattr(self.destination, "write_metadata", True),
        )

    def bring(self, job: Job) -> Outcome:
        """Skip, copy (and verify), or fail one object; never raises a StorageError."""
        try:
            return self._bring_unsafe(job)
        except StorageError as exc:
            return Outcome("failed", error=str(exc))

    def _bring_unsafe(self, job: Job) -> Outcome:
        if not manages(self.destination, job.path):  # checked before any storage call
            return Outcome(
                "failed",
                error=(
                    f"not migrated: the path lies outside {prefix_of(self.destination)}, "
                    "which could neither delete a copy there nor collect it as garbage; "
                    "give the destination a prefix that contains the path (or none)"
                ),
            )
        there = head(self.destination, job.path)
        if there is not None and job.size is not None and self._matches(there, job, job.size):
            return Outcome("skipped", info=there)
        info = head(self.source, job.path)
        if info is None:
            return Outcome(
                "failed", error=f"the object is missing from source backend {self.source.key!r}"
            )
        if job.size is not None and info.size != job.size:
            return Outcome(
                "failed",
                error=f"the source object has {info.size} bytes, the row recorded {job.size}",
            )
        if there is not None and job.size is None and self._matches(there, job, info.size):
            return Outcome("skipped", info=there)
        if self.dry_run:
            return Outcome("would_copy", size=info.size)
        hashing = _hasher(job.checksum)
        tally = _Tally(hashing[1] if hashing else None)
        copy_object(
            self.source,
            self.destination,
            job.path,
            size=info.size,
            attributes=self._attributes(job, info) or None,
            chunk_size=self.chunk_size,
            see=tally.see,
        )
        problem = None
        if tally.size != info.size:
            problem = f"read {tally.size} bytes from the source, expected {info.size}"
        elif hashing is not None:
            actual = f"{hashing[0]}:{tally.hasher.hexdigest()}"
            if actual.lower() != (job.checksum or "").lower():
                problem = (
                    f"checksum of the source bytes is {actual}, the row recorded {job.checksum}"
                )
        copied = head(self.destination, job.path)
        if problem is None and (copied is None or copied.size != info.size):
            problem = "the copy at the destination does not have the source's size"
        if problem is not None:
            delete(self.destination, [job.path])  # never leave a wrong copy behind
            return Outcome("failed", error=problem)
        return Outcome("copied", info=copied, size=info.size)

    def deletable(self, job: Job) -> str | None:
        """`None` when the source object may go (its copy at the destination is verified),
        `""` when there is nothing to delete, else what is wrong with the copy."""
        try:
            original = head(self.source, job.path)
            if original is None:
                return ""  # deleted already (an earlier run, or another row)
            copy = head(self.destination, job.path)
            if copy is None:
                return "kept the source object: the destination has no copy"
            expected = job.size if job.size is not None else original.size
            if copy.size != original.size or not self._matches(copy, job, expected):
                return "kept the source object: the copy at the destination differs"
            return None
        except StorageError as exc:
            return f"kept the source object: {exc}"
