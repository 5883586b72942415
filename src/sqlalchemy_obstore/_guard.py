"""The enforcement of one upload policy on one upload, while its content streams.

[`Guard`][sqlalchemy_obstore._guard.Guard] checks the filename before reading, every
chunk's running total against the size limits, the first bytes (sniffed type, custom
validators) before the upload starts, and the total when the content ends;
[`refine`][sqlalchemy_obstore._guard.refine] decides the content type a sniffed upload
stores. The policy itself is [`UploadPolicy`][sqlalchemy_obstore.validation.UploadPolicy].
"""

from __future__ import annotations

from typing import Protocol

from ._attributes import ACTIVE_CONTENT_TYPES, DEFAULT_CONTENT_TYPE
from ._errors import (
    FileTooLargeError,
    FileTooSmallError,
    InvalidContentTypeError,
    InvalidExtensionError,
)
from ._validation import UploadPolicy, detect_content_type

__all__ = ("Declared", "Guard", "refine")


class Declared(Protocol):
    """What `Guard.check_head` reads of the file (a `FileObject`): its declared type."""

    @property
    def content_type(self) -> str | None: ...


class Guard:
    """Enforces one policy (and a declared size) on one upload; shared by sync and async.

    `observe` is a `ContentReader` observer, `finish` its end hook; `check_name` runs
    before reading and `check_head` between reading the first part and uploading.
    """

    def __init__(
        self,
        policy: UploadPolicy | None,
        *,
        declared_size: int | None,
        backend: str | None,
        path: str | None,
    ) -> None:
        self.policy = policy
        self.declared_size = declared_size
        self.backend = backend
        self.path = path
        self.finished = False

    @property
    def active(self) -> bool:
        return self.policy is not None or self.declared_size is not None

    def check_name(self, filename: str) -> None:
        policy = self.policy
        if policy is not None and not policy.allows_filename(filename):
            allowed = ", ".join(policy.allowed_extensions or ())
            raise InvalidExtensionError(
                f"The extension of {filename!r} is not allowed (allowed: {allowed}).",
                backend=self.backend,
                path=self.path,
            )

    def observe(self, view: memoryview, total: int) -> None:
        policy = self.policy
        if policy is not None and policy.max_size is not None and total > policy.max_size:
            raise FileTooLargeError(
                limit=policy.max_size, size_seen=total, backend=self.backend, path=self.path
            )
        if policy is not None and policy.image is not None and total > policy.image.max_bytes:
            # Images are decoded in memory: never collect more than this.
            raise FileTooLargeError(
                limit=policy.image.max_bytes,
                size_seen=total,
                backend=self.backend,
                path=self.path,
            )
        if self.declared_size is not None and total > self.declared_size:
            raise FileTooLargeError(
                limit=self.declared_size,
                size_seen=total,
                declared=True,
                backend=self.backend,
                path=self.path,
            )

    def finish(self, total: int) -> None:
        if self.finished:
            return
        self.finished = True
        policy = self.policy
        if self.declared_size is not None and total < self.declared_size:
            raise FileTooSmallError(
                minimum=self.declared_size,
                size=total,
                declared=True,
                backend=self.backend,
                path=self.path,
            )
        if policy is not None and policy.min_size is not None and total < policy.min_size:
            raise FileTooSmallError(
                minimum=policy.min_size, size=total, backend=self.backend, path=self.path
            )

    def check_head(self, file: Declared, head: bytes) -> str | None:
        """Sniff and run validators; return the content type to store, if it changes."""
        policy = self.policy
        if policy is None:
            return None
        stored: str | None = None
        if policy.sniffs:
            declared = file.content_type
            detected = detect_content_type(head)
            stored = refine(detected, declared)
            if not policy.allows_content_type(stored):
                allowed = ", ".join(policy.allowed_content_types or ())
                raise InvalidContentTypeError(
                    f"Content type refused: the file declares {declared!r} but its bytes "
                    f"are {repr(detected) if detected else 'of an unknown type'} "
                    f"(allowed: {allowed}).",
                    declared=declared,
                    detected=detected,
                    backend=self.backend,
                    path=self.path,
                )
        elif not policy.allows_content_type(file.content_type):
            raise InvalidContentTypeError(
                f"Content type {file.content_type!r} is not allowed.",
                declared=file.content_type,
                backend=self.backend,
                path=self.path,
            )
        for validator in policy.validators:
            validator(file, head)
        return stored


# What a declared type may refine, when the bytes only prove its generic family. Text:
# data-only formats no browser executes (anything else declared over plain text, such
# as text/xsl, text/html or text/x-anything, is stored as text/plain). JSON: every
# "+json" type is JSON by definition (RFC 6839). ZIP: formats that are ZIP archives.
_TEXT_REFINEMENTS = frozenset(
    {
        "text/csv",
        "text/tab-separated-values",
        "text/markdown",
        "text/calendar",
        "text/vcard",
    }
)
_ZIP_BASED = frozenset(
    {
        "application/java-archive",
        "application/vnd.android.package-archive",
        "application/x-zip-compressed",
    }
)


def refine(detected: str | None, declared: str | None) -> str:
    """The type to store for a sniffed upload: what the bytes prove.

    The declared type is kept only where the bytes prove its family and the declared
    type is a known, passive refinement of it (CSV is plain text, GeoJSON is JSON, a
    JAR is a ZIP archive). Bytes the sniffer does not recognise are
    `application/octet-stream`, whatever was declared.

    Example:
        >>> refine("text/plain", "text/csv"), refine("text/plain", "text/xsl")
        ('text/csv', 'text/plain')
        >>> refine(None, "text/html")
        'application/octet-stream'
    """
    if detected is None:
        return DEFAULT_CONTENT_TYPE
    base = (declared or "").split(";", 1)[0].strip().lower()
    if not base or base == detected:
        return detected
    if detected == "text/plain" and base in _TEXT_REFINEMENTS:
        return base
    if detected == "application/json" and base.endswith("+json"):
        return base
    if detected == "application/xml" and base.endswith("+xml") and base not in ACTIVE_CONTENT_TYPES:
        return base
    if detected == "application/zip" and (base.endswith("+zip") or base in _ZIP_BASED):
        return base
    return detected
