"""One stored image reprocessed: its original read, processed, its renditions stored.

`reprocess_image` does what a `Work` of `_reprocess_plan` asks for, with the storage
calls going through `_io` (awaited inside the greenlet bridge, so the run can do several
at once): the original is read up to the policy's `max_bytes` and processed once on an
image worker (`_image_job`; when only its size is missing, only its header is decoded),
and each new rendition is stored under a fresh key next to the original, never over an
object a reader may hold. The outcome (image facts, the new renditions' column entries,
or the error) is recorded on the work; a failed work leaves nothing behind in storage,
and its row is left as it was.
"""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from datetime import datetime, timezone

from ._attributes import object_attributes
from ._column import COLUMN_FORMAT_VERSION
from ._content import format_checksum
from ._errors import FileTooLargeError, StorageError
from ._image_job import Processed, process_image, process_image_async, rendition_filename
from ._io import Call, iterate, run
from ._logging import library_logger
from ._prefixes import manages, prefix_of
from ._processing import ImagePolicy, Rendition
from ._reprocess_plan import Work
from .backends import Backend

__all__ = ("reprocess_image",)

logger = library_logger("sqlalchemy_obstore.reprocessing")


def reprocess_image(work: Work, *, chunk_size: int) -> None:
    """Read, process and store what `work` needs; a failure is recorded on it."""
    backend: Backend | None = None
    try:
        backend = work.target.registry.get_backend(work.backend)
        if work.build and not manages(backend, work.path):
            # Renditions go next to the original: outside the prefix too, where the
            # backend could never delete them. Nothing is read or written.
            work.error = (
                f"not reprocessed: the original lies outside {prefix_of(backend)}, "
                "and its renditions would be stored next to it, where the backend "
                "could neither delete them nor collect them as garbage; give the "
                "backend a prefix that contains the path (or none)"
            )
            return
        _make(work, backend, chunk_size)
    except (StorageError, OSError) as exc:
        work.error = str(exc) or type(exc).__name__
        work.image = None
        if work.renditions and backend is not None:  # nothing references them: they go
            stored = [r["path"] for r in work.renditions.values()]
            work.renditions = {}
            try:
                run(Call(backend.delete, backend.delete_async, stored))
            except Exception:
                logger.warning("Could not delete %d new rendition(s)", len(stored))


def _read(work: Work, backend: Backend, limit: int, chunk_size: int) -> bytes:
    """The original's bytes, refused as soon as they pass `limit`."""
    size = work.entry.get("size")
    if isinstance(size, int) and size > limit:
        raise FileTooLargeError(limit=limit, size_seen=size, backend=backend.key, path=work.path)
    chunks: list[bytes] = []
    read = 0
    for chunk in iterate(
        backend.iter_chunks, backend.iter_chunks_async, work.path, chunk_size=chunk_size
    ):
        read += len(chunk)
        if read > limit:
            raise FileTooLargeError(
                limit=limit, size_seen=read, backend=backend.key, path=work.path
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _make(work: Work, backend: Backend, chunk_size: int) -> None:
    policy = work.target.policy
    data = _read(work, backend, policy.max_bytes, chunk_size)
    processed: Processed = run(
        Call(
            process_image,
            process_image_async,
            data,
            _job_policy(policy, work.build),
            backend=backend.key,
            path=work.path,
            decode=bool(work.build),
        )
    )
    del data
    work.image = processed.facts
    filename = work.entry.get("filename")
    if not isinstance(filename, str) or not filename:
        filename = work.path.rsplit("/", 1)[-1]
    algorithm = backend.checksum_algorithm
    for derived in processed.renditions:
        rendition = derived.rendition
        path = (
            f"{work.path}.renditions/{rendition.name}.{uuid.uuid4().hex[:12]}.{rendition.extension}"
        )
        name = rendition_filename(filename, rendition)
        attributes = object_attributes(
            filename=name,
            content_type=derived.content_type,
            metadata={},
            cache_control=work.target.column.stored_type.cache_control,
            include_metadata=False,
        )
        result = run(
            Call(
                backend.put,
                backend.put_async,
                path,
                derived.data,
                attributes=attributes,
                create_only=True,
            )
        )
        checksum = None
        if algorithm is not None:
            digest = hashlib.new(algorithm, derived.data).hexdigest()
            checksum = format_checksum(algorithm, digest)
        work.renditions[rendition.name] = {
            "v": COLUMN_FORMAT_VERSION,
            "backend": backend.key,
            "path": path,
            "filename": name,
            "content_type": derived.content_type,
            "size": len(derived.data),
            "etag": result.etag,
            "version": result.version,
            "checksum": checksum,
            "last_modified": datetime.now(timezone.utc).isoformat(),
            "metadata": {},
            "image": derived.facts.to_dict(),
        }
        work.written += len(derived.data)


def _job_policy(policy: ImagePolicy, build: tuple[Rendition, ...]) -> ImagePolicy:
    """The policy of one reprocessing job: the limits that bound the work, and `build`.

    The checks on what an upload may be (its dimensions, aspect ratio) are left out:
    the file is stored already, and a policy tightened since must not stop its
    renditions from being made.
    """
    return dataclasses.replace(
        policy,
        normalize=None,
        renditions=build,
        max_width=None,
        max_height=None,
        min_width=None,
        min_height=None,
        min_aspect_ratio=None,
        max_aspect_ratio=None,
    )
