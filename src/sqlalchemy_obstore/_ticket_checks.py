"""What redeeming a ticket checks on the uploaded object (no I/O).

Once the object's head (and, when the ticket sniffs, its first bytes) are read,
`verdict` decides the content type to record and the violation, if any: a type the
ticket's lists refuse, or an object the store would display inline although its type is
not a passive one. `garbage` lists what to delete afterwards. The size rule is the
ticket's own (`_ticket_claims.size_violation`).
"""

from __future__ import annotations

from ._attributes import guess_content_type, serves_inline
from ._errors import InvalidContentTypeError, ValidationError
from ._guard import refine
from ._ticket_claims import Claims
from ._validation import detect_content_type
from .backends import Backend, ObjectInfo

__all__ = ("garbage", "store_serves", "verdict")

_GENERIC_TYPES = frozenset({"application/octet-stream", "binary/octet-stream"})


def store_serves(backend: Backend) -> bool:
    """Whether the store itself serves objects, with the attributes they were put with.

    S3, GCS and Azure do, through the URLs they sign; local files and memory do not
    (the signed-URL route serves them and applies the inline rule itself).
    """
    native = getattr(backend, "supports_native_signing", backend.supports_signing)
    return bool(native) and backend.supports_attributes


def _declared_type(claims: Claims, info: ObjectInfo) -> str:
    """The type the upload declared: the stored one unless generic, else the filename's."""
    stored = (info.content_type or "").split(";", 1)[0].strip().lower()
    if stored and stored not in _GENERIC_TYPES:
        return info.content_type or stored
    return guess_content_type(claims.filename)


def _content_type(
    claims: Claims, info: ObjectInfo, head: bytes | None
) -> tuple[str, ValidationError | None]:
    """The content type to record, and the violation, if any (plain code)."""
    declared = _declared_type(claims, info)
    policies = claims.policies()
    if head is None:  # not sniffing: the declared type must be allowed
        for policy in policies:
            if not policy.allows_content_type(declared):
                return declared, InvalidContentTypeError(
                    f"Content type {declared!r} is not allowed.",
                    declared=declared,
                    backend=claims.backend,
                    path=claims.path,
                )
        return declared, None
    detected = detect_content_type(head)
    stored = refine(detected, declared)
    for policy in policies:
        if not policy.allows_content_type(stored):
            allowed = ", ".join(policy.allowed_content_types or ())
            return stored, InvalidContentTypeError(
                f"Content type refused: the file declares {declared!r} but its bytes are "
                f"{repr(detected) if detected else 'of an unknown type'} "
                f"(allowed: {allowed}).",
                declared=declared,
                detected=detected,
                backend=claims.backend,
                path=claims.path,
            )
    return stored, None


def _rendered_by_store(
    claims: Claims, backend: Backend, info: ObjectInfo
) -> ValidationError | None:
    """A violation if the store would display the object inline in a browser.

    The client chose the attributes of its own PUT, and the store serves them
    through signed GET URLs: unless the object is an `attachment` or of a passive
    type (see `serves_inline`), it is refused. Stores that do not serve objects
    themselves (local files, memory: the signed-URL route applies the rule when it
    serves them) are not concerned; a missing type is sent by the stores as
    `application/octet-stream`, which browsers download.
    """
    if not store_serves(backend):
        return None
    disposition = info.attributes.get("Content-Disposition", "")
    stored = (info.content_type or "").split(";", 1)[0].strip().lower()
    if (
        disposition.strip().lower().startswith("attachment")
        or not stored
        or stored in _GENERIC_TYPES
        or serves_inline(stored)
    ):
        return None
    return InvalidContentTypeError(
        f"The upload was stored as {stored!r} without an 'attachment' "
        "Content-Disposition, so the store would display it in the browser. Upload it "
        "again sending the grant's headers (they include the Content-Disposition).",
        declared=stored,
        backend=claims.backend,
        path=claims.path,
    )


def verdict(
    claims: Claims, backend: Backend, info: ObjectInfo, head: bytes | None
) -> tuple[str, ValidationError | None]:
    """The content type to record and the violation, if any, once the size passed."""
    content_type, violation = _content_type(claims, info, head)
    if violation is None:
        violation = _rendered_by_store(claims, backend, info)
    return content_type, violation


def garbage(claims: Claims, violation: ValidationError | None) -> list[str]:
    """What to delete after the checks: the staging object, and a refused file."""
    paths = [] if claims.upload_path is None else [claims.upload_path]
    if violation is not None:
        paths.append(claims.path)
    return paths
