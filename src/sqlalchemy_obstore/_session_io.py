"""The session's storage calls: a flush's uploads, undone when they must be, and deletes.

The listeners decide what a flush uploads and what a transaction deletes (`_lifecycle`);
this module makes those calls, through `_io`: concurrently in an `AsyncSession` (at most
`CONCURRENCY_KEY` uploads at once), one after another in a `Session`, and one after
another in both when no backend involved waits for I/O (memory stores).

* **Uploads.** `upload_all` uploads a flush's pending files, each to a fresh key. Every
  upload that succeeded becomes an `Upload`, and the file keeps, until its transaction
  ends, what the upload replaced in it: its content (a seekable stream rewound) and the
  facts the upload recorded. So when the transaction rolls back, `revert` gives the file
  its content back and a retry uploads it again; a one-shot stream that an upload read
  cannot be given back and raises `NoContentError` on the retry instead of storing what
  was left of it. If one upload of a flush fails, the ones that succeeded are deleted
  and reverted: nothing of a failed flush stays behind.
* **Deletes.** `delete_quietly` deletes objects grouped by backend: the files a committed
  transaction replaced, those a rolled-back one uploaded. A delete that fails is logged
  and reported to the registries' orphan listeners (`report_orphaned`), never raised into
  work that is done: the garbage collector finds what it left behind.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from ._column import UPLOAD_FACTS
from ._content import CONSUMED, ContentCheckpoint
from ._errors import NoContentError, StorageErrorGroup
from ._fields import UNDO_KEY
from ._file_object import FileObject, SaveOptions
from ._io import NOT_RUN, Call, Gather, run
from ._logging import library_logger
from ._mutable import set_quietly
from ._registry import OrphanReason, OrphanReport, report_orphans
from .backends import Backend

__all__ = (
    "CONCURRENCY_KEY",
    "DEFAULT_UPLOAD_CONCURRENCY",
    "Ref",
    "Upload",
    "by_backend",
    "delete_quietly",
    "forget_undo",
    "report_orphaned",
    "revert",
    "upload_all",
    "uploaded_objects",
)

logger = library_logger("sqlalchemy_obstore")

CONCURRENCY_KEY = "sqlalchemy_obstore.upload_concurrency"
"""`session.info` key: how many uploads a flush runs at once in an `AsyncSession`."""
DEFAULT_UPLOAD_CONCURRENCY = 8

Ref = tuple[str, str]  # (backend key, path)


# -- what an upload can undo --------------------------------------------------------------------
@dataclass(slots=True)
class Upload:
    """An upload done in a transaction, with what is needed to undo it.

    The file is held weakly and what a revert restores lives in the file itself (see
    `_remember_undo`): a transaction of many rows does not keep every file, and the
    content it uploaded, alive until it ends, and a row the application dropped needs
    no revert.
    """

    file: weakref.ref[FileObject]
    backend: Backend
    path: str
    renditions: tuple[str, ...] = ()  # paths of the renditions stored with it

    def objects(self) -> Iterator[tuple[Ref, Backend]]:
        """Every object this upload stored: the file and its renditions."""
        for path in (self.path, *self.renditions):
            yield (self.backend.key, path), self.backend

    def take_undo(self) -> tuple[FileObject, dict[str, Any]] | None:
        """The file and what this upload replaced in it, forgotten there; `None` when the
        file is gone or its undo data was taken already."""
        file = self.file()
        if file is None:
            return None
        undo = file.__dict__.get(UNDO_KEY)
        snapshot = undo.pop(self.path, None) if undo else None
        if undo is not None and not undo:
            del file.__dict__[UNDO_KEY]
        return None if snapshot is None else (file, snapshot)


def forget_undo(uploads: Iterable[Upload]) -> None:
    """The uploads are committed for good: release what undoing them would have needed."""
    for upload in uploads:
        upload.take_undo()


def uploaded_objects(uploads: Sequence[Upload]) -> dict[Ref, Backend]:
    return {ref: backend for upload in uploads for ref, backend in upload.objects()}


# -- deletes ------------------------------------------------------------------------------------
_REASONS: dict[OrphanReason, str] = {
    "after_commit": "replaced or removed, after commit",
    "rollback": "transaction rolled back",
    "failed_flush": "failed flush",
    "commit_outcome_unknown": "commit outcome unknown",
}


def by_backend(objects: dict[Ref, Backend]) -> list[tuple[Backend, list[str]]]:
    groups: dict[int, tuple[Backend, list[str]]] = {}
    for (_key, path), backend in objects.items():
        groups.setdefault(id(backend), (backend, []))[1].append(path)
    return list(groups.values())


def _concurrency(backends: Iterable[Backend], configured: int) -> int:
    """`configured`, or 1 when no backend waits for I/O: no task per call then."""
    return 1 if all(backend.never_waits for backend in backends) else configured


def report_orphaned(backend: Backend, paths: list[str], reason: OrphanReason, error: Any) -> None:
    report = OrphanReport(
        backend.key, tuple(paths), reason, error if isinstance(error, BaseException) else None
    )
    report_orphans(backend, report)


def delete_quietly(pending: dict[Ref, Backend], reason: OrphanReason) -> None:
    """Delete objects grouped by backend; failures are logged and reported, never raised."""
    groups = by_backend(pending)
    if not groups:
        return
    calls = [Call(b.delete, b.delete_async, p) for b, p in groups]
    concurrency = _concurrency((b for b, _ in groups), DEFAULT_UPLOAD_CONCURRENCY)
    outcomes = run(Gather(calls, concurrency=concurrency))
    for (backend, paths), outcome in zip(groups, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            error = None if outcome is NOT_RUN else outcome
            logger.warning(
                "Could not delete %d object(s) %s from backend %r (%s); they are orphans "
                "now and the garbage collector will find them: %s",
                len(paths),
                paths[:10],
                backend.key,
                _REASONS[reason],
                error if error is not None else "not attempted",
                exc_info=error,
            )
            report_orphaned(backend, paths, reason, error)
            if error is not None and not isinstance(error, Exception):
                raise error
        else:
            logger.debug(
                "Deleted %d object(s) from backend %r (%s)",
                len(paths),
                backend.key,
                _REASONS[reason],
            )


# -- uploads ------------------------------------------------------------------------------------
def _snapshot(file: FileObject) -> dict[str, Any]:
    snapshot: dict[str, Any] = {name: file.__dict__.get(name) for name in UPLOAD_FACTS}
    snapshot["_checkpoint"] = ContentCheckpoint(file.__dict__["_content"])
    snapshot["_renditions"] = file.__dict__["_renditions"]
    snapshot["_image"] = file.__dict__.get("_image")  # the image facts an upload records
    return snapshot


def _remember_undo(file: FileObject, path: str, snapshot: dict[str, Any]) -> None:
    """Keep in `file` what its upload to `path` replaced, until the transaction ends."""
    d = file.__dict__
    undo = d.get(UNDO_KEY)
    if undo is None:
        d[UNDO_KEY] = {path: snapshot}
    else:
        undo[path] = snapshot


def revert(upload: Upload) -> None:
    """Give the file its content back after its upload was undone."""
    taken = upload.take_undo()
    if taken is None:
        return  # the file is gone, or was reverted already
    file, snapshot = taken
    if file.path != upload.path:
        return  # the application changed the file since; leave it alone
    # Undoing the upload is no edit of the file: its holders are not told again.
    set_quietly(
        file,
        **{name: snapshot[name] for name in UPLOAD_FACTS},
        _content=snapshot["_checkpoint"].restore(),
        _renditions=snapshot["_renditions"],
        _image=snapshot["_image"],
    )


def upload_all(session: Session, jobs: list[tuple[FileObject, SaveOptions]]) -> list[Upload]:
    for file, _options in jobs:
        if file.__dict__["_content"] is CONSUMED:
            raise NoContentError(
                f"{file!r} was read by an upload that failed or was rolled back, and its "
                "content was a stream that cannot be read twice: assign the content again.",
                backend=file.backend,
            )
    snapshots = [_snapshot(file) for file, _ in jobs]
    configured = int(session.info.get(CONCURRENCY_KEY, DEFAULT_UPLOAD_CONCURRENCY))
    concurrency = _concurrency((f._backend() for f, _ in jobs), configured)
    calls = [Call(f.save, f.save_async, options=o) for f, o in jobs]
    results = run(Gather(calls, concurrency=concurrency))
    done: list[Upload] = []
    for (file, _), snapshot, result in zip(jobs, snapshots, results, strict=True):
        if isinstance(result, BaseException):
            continue
        path: str = file.path  # type: ignore[assignment]
        _remember_undo(file, path, snapshot)
        renditions = file.__dict__["_renditions"]
        done.append(
            Upload(
                weakref.ref(file),
                file._backend(),
                path,
                tuple(r.path for r in renditions.values() if r.path is not None)
                if renditions
                else (),
            )
        )
    failures = [r for r in results if isinstance(r, BaseException) and r is not NOT_RUN]
    if failures:
        # Nothing of this flush may stay behind: remove what did get uploaded.
        delete_quietly(uploaded_objects(done), "failed_flush")
        for upload in done:
            revert(upload)
        fatal = [f for f in failures if not isinstance(f, Exception)]
        if fatal:
            raise fatal[0]
        if len(failures) == 1:
            raise failures[0]
        raise StorageErrorGroup(f"{len(failures)} uploads failed during flush", failures)
    return done
