"""obstore's errors, translated into this package's at the backend boundary.

[`translate`][] maps an obstore (or OS) error raised for an operation of a backend to
this package's [errors][sqlalchemy_obstore.errors], carrying the backend key and path;
[`translated`][] does so for a block, with the original as `__cause__`. A Rust panic
inside obstore (a `BaseException`) becomes a `StorageOperationError` too: none reaches
the user.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from obstore import exceptions as obs_errors

from ._errors import (
    InvalidObjectPathError,
    ObjectExistsError,
    ObjectNotFoundError,
    StorageError,
    StorageOperationError,
    StoragePermissionError,
    UnsupportedOperationError,
    redact,
)
from ._keys import check_object_path

if TYPE_CHECKING:
    from ._contract import Backend

__all__ = ("first_line", "is_panic", "translate", "translated")


@contextmanager
def translated(
    backend: Backend, operation: str, path: str | None, *, destination: str | None = None
) -> Iterator[None]:
    """Raise this package's error for what the block raises (see `translate`), the
    original as its `__cause__`."""
    try:
        yield
    except BaseException as exc:
        error = translate(backend, exc, operation, path, destination)
        if error is None:
            raise
        raise error from exc


def translate(
    backend: Backend,
    exc: BaseException,
    operation: str,
    path: str | None,
    destination: str | None = None,
) -> StorageError | None:
    """This package's error for an obstore (or OS) error; `None` to let it through."""
    if not isinstance(exc, Exception):
        if is_panic(exc):
            # A Rust panic in obstore is a BaseException; never let one reach the user.
            return StorageOperationError(
                f"{operation} failed on backend {backend.key!r}: obstore stopped with an "
                f"internal error ({redact(first_line(exc))}). This happens when a sync "
                "obstore call runs inside another one, e.g. a sync iterator or file body "
                "that reads from a store while an async upload consumes it: pass bytes, "
                "use the async API on both sides (iter_chunks_async with put_async), or "
                "read the source first.",
                backend=backend.key,
                path=path,
                operation=operation,
            )
        return None
    if isinstance(exc, StorageError):
        return None
    if isinstance(exc, (ValueError, TypeError)) and path is not None:
        # obstore refuses a malformed path with a plain ValueError/TypeError
        try:
            check_object_path(path)
        except InvalidObjectPathError as invalid:
            return invalid
    if isinstance(exc, (FileNotFoundError, obs_errors.NotFoundError)):
        return ObjectNotFoundError(
            f"No object at {path!r} in backend {backend.key!r}.", backend=backend.key, path=path
        )
    if isinstance(exc, obs_errors.AlreadyExistsError):
        existing = destination or path
        return ObjectExistsError(
            f"An object already exists at {existing!r} in backend {backend.key!r}; "
            "it was not overwritten.",
            backend=backend.key,
            path=existing,
        )
    if isinstance(exc, (obs_errors.PermissionDeniedError, obs_errors.UnauthenticatedError)):
        return StoragePermissionError(
            f"The store refused {operation} on backend {backend.key!r}: "
            f"{redact(first_line(exc))}. Check the backend's credentials and rights.",
            backend=backend.key,
            path=path,
        )
    if isinstance(exc, (obs_errors.NotSupportedError, NotImplementedError)):
        return UnsupportedOperationError(
            f"{operation} is not supported by {backend.describe()}: {redact(first_line(exc))}",
            backend=backend.key,
            path=path,
        )
    if isinstance(exc, (obs_errors.BaseError, OSError)):
        return StorageOperationError(
            f"{operation} failed on backend {backend.key!r}: {redact(first_line(exc))}",
            backend=backend.key,
            path=path,
            operation=operation,
        )
    return None


def is_panic(exc: BaseException) -> bool:
    """Whether `exc` is a Rust panic inside obstore (a `BaseException`, never to leak)."""
    # pyo3's PanicException derives from BaseException and cannot be imported by name.
    kind = type(exc)
    return kind.__name__ == "PanicException" and kind.__module__ == "pyo3_runtime"


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (obstore's run on with causes and backtraces)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
