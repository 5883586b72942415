"""The library's errors as HTTP answers: what the web integrations install by default.

A refused upload, a forged or replayed upload ticket, a completed direct upload whose
object never arrived: these are the client's doing and have an HTTP status
([`error_status`][sqlalchemy_obstore.uploads.error_status]). The Litestar plugin and
the Starlette/FastAPI extension register one handler per error class below, answering
`{"status_code", "detail", "error"}` with that status, unless the application handles
the class (or a library class above it) itself. Every other error, among them a server
bug such as encoding a file that was never saved, stays a `500`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .._errors import (
    InvalidFilenameError,
    InvalidObjectPathError,
    ObjectNotFoundError,
    StorageError,
    UntrustedReferenceError,
    UploadTicketError,
    ValidationError,
    redact,
)
from .._uploads import error_status

__all__ = ("CLIENT_ERRORS", "error_body", "error_classes_to_handle")

CLIENT_ERRORS: tuple[type[StorageError], ...] = (
    ValidationError,
    ObjectNotFoundError,
    UploadTicketError,
    UntrustedReferenceError,
    InvalidObjectPathError,
    InvalidFilenameError,
)
"""The error classes a client causes; their subclasses are answered by the same handler."""


def error_classes_to_handle(registered: Iterable[object]) -> list[type[StorageError]]:
    """The `CLIENT_ERRORS` not handled yet, given the keys of the app's handler map.

    A class is left alone when the application registered a handler for it or for a
    library error class above it (a handler for `StorageError` handles them all).
    Handlers for other keys (`Exception`, `ValueError`, status codes) do not count: the
    framework picks the most specific class, and ours are more specific.
    """
    handled = [k for k in registered if isinstance(k, type) and issubclass(k, StorageError)]
    return [cls for cls in CLIENT_ERRORS if not any(issubclass(cls, k) for k in handled)]


def error_body(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """The status and JSON body answering a client error (`400` when no status is known)."""
    status = error_status(exc) or 400
    return status, {
        "status_code": status,
        "detail": redact(str(exc)) or type(exc).__name__,
        "error": type(exc).__name__,
    }
