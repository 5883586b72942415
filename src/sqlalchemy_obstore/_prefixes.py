"""Which object paths a backend manages: the ones under its prefix.

Garbage collection lists only below a backend's prefix, so an object outside it could
never be collected through that backend. Hence one rule, `check_within`: a backend
writes and deletes only below its prefix. `ObstoreBackend` applies it, before any I/O,
to every write (`put`, `put_buffer`, the destination of `copy`, URLs signed for `PUT`
or `DELETE`) and to every delete; `MirrorBackend` and `OverlayBackend` apply it to their
own prefix before asking any store, and upload tickets to the keys they let a client
write (`require_managed`). Reads are not confined: rows written before the prefix
changed keep their old paths, and they stay readable.

The operations that write one backend's paths into another backend check here, before
they write anything, that the receiving backend manages those paths:

* `migrate` copies each object to the same path in the destination;
* a `MirrorBackend` writes every path of its primary to each mirror;
* an `OverlayBackend` writes and deletes the base's paths in the overlay;
* `reprocess` stores renditions next to their original, in the original's backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._errors import ConfigurationError, InvalidObjectPathError
from ._keys import check_object_path, join_key

if TYPE_CHECKING:
    from ._contract import Backend

__all__ = (
    "check_within",
    "contains",
    "managed_prefix",
    "manages",
    "prefix_of",
    "require_contains",
    "require_managed",
)


def managed_prefix(prefix: str | None) -> str:
    """How every key managed under `prefix` starts: `"<prefix>/"`, or `""` for no prefix.

    Example:
        >>> managed_prefix("/uploads/"), managed_prefix(None)
        ('uploads/', '')
    """
    joined = join_key(prefix)
    return f"{joined}/" if joined else ""


def _prefix_of(backend: Backend) -> str | None:
    return getattr(backend, "prefix", None)


def manages(backend: Backend, path: str) -> bool:
    """Whether `path` lies under `backend`'s prefix (every path does without a prefix)."""
    prefix = managed_prefix(_prefix_of(backend))
    return not prefix or path.startswith(prefix)


def check_within(path: str, within: str, backend: str, action: str) -> str:
    """Refuse to `action` a path that is malformed or outside the managed prefix `within`.

    The one rule for every write and every delete of a backend: `path` is a well-formed
    key ([`check_object_path`][sqlalchemy_obstore.keys.check_object_path]) and, when
    the backend has a prefix, lies under it (`within` is `managed_prefix`'s spelling of
    it, `""` without one). Called before any I/O.

    Args:
        path: The key to write or delete.
        within: The managed prefix (`"uploads/"`), or `""`.
        backend: The backend's key, for the message.
        action: What was asked, for the message (`"write"`, `"delete"`, ...).

    Returns:
        `path`, unchanged.

    Raises:
        InvalidObjectPathError: If the path is malformed or outside the prefix.

    Example:
        >>> check_within("uploads/1f0c/a.txt", "uploads/", "files", "write")
        'uploads/1f0c/a.txt'
        >>> try:
        ...     check_within("uploads/../billing.csv", "uploads/", "files", "write")
        ... except InvalidObjectPathError:
        ...     print("refused")
        refused
    """
    try:
        check_object_path(path)
    except InvalidObjectPathError as malformed:
        managing = f"it manages keys under {within!r}" if within else "it has no prefix"
        raise InvalidObjectPathError(
            f"Refusing to {action} a malformed path in backend {backend!r} ({managing}): "
            f"{malformed}",
            backend=backend,
            path=path if isinstance(path, str) else None,
        ) from None
    if within and not path.startswith(within):
        raise InvalidObjectPathError(
            f"Refusing to {action} {path!r}: backend {backend!r} manages only keys under "
            f"{within!r}, and a write or a delete never leaves that prefix (outside it, an "
            "object could be neither deleted nor collected as garbage through this "
            f"backend). Use a key under {within!r} (the keys the library generates are), "
            "or a backend whose prefix contains this one; reading it works from any path.",
            backend=backend,
            path=path,
        )
    return path


def require_managed(backend: Backend, path: str, action: str) -> str:
    """`check_within` for `backend`'s prefix.

    For writes that do not go through the backend's own operations (the S3 requests of
    upload tickets, URLs a URL signer signs for them).

    Raises:
        InvalidObjectPathError: If the path is malformed or outside the prefix.
    """
    return check_within(path, managed_prefix(_prefix_of(backend)), backend.key, action)


def contains(outer: str | None, inner: str | None) -> bool:
    """Whether every key under the prefix `inner` lies under the prefix `outer`.

    Example:
        >>> contains("uploads", "uploads/docs"), contains(None, "media")
        (True, True)
        >>> contains("media", "uploads"), contains("uploads", None)
        (False, False)
    """
    prefix = managed_prefix(outer)
    return not prefix or managed_prefix(inner).startswith(prefix)


def _shown(prefix: str | None) -> str:
    joined = join_key(prefix)
    return f"prefix {joined!r}" if joined else "no prefix"


def prefix_of(backend: Backend) -> str:
    """`backend`'s prefix as messages name it: `the prefix 'media' of backend 'new'`."""
    joined = join_key(_prefix_of(backend))
    if not joined:
        return f"the root of backend {backend.key!r} (it has no prefix)"
    return f"the prefix {joined!r} of backend {backend.key!r}"


def require_contains(receiver: Backend, origin: Backend, why: str) -> None:
    """Refuse, before anything is written, a `receiver` whose prefix would not hold the
    paths of `origin` (`why` says how `origin`'s paths reach `receiver`).

    Raises:
        ConfigurationError: If `receiver` has a prefix that does not contain `origin`'s.
    """
    outer, inner = _prefix_of(receiver), _prefix_of(origin)
    if contains(outer, inner):
        return
    if join_key(inner):
        advice = (
            f"Give {receiver.key!r} the same prefix as {origin.key!r} ({join_key(inner)!r}), "
            "or a prefix that contains it."
        )
    else:
        advice = (
            f"{origin.key!r} has no prefix, so its paths may lie anywhere in its store: give "
            f"{receiver.key!r} no prefix either."
        )
    raise ConfigurationError(
        f"Backend {receiver.key!r} ({_shown(outer)}) cannot hold the paths of backend "
        f"{origin.key!r} ({_shown(inner)}): {why}, and outside its prefix "
        f"{receiver.key!r} could neither delete them nor collect them as garbage. {advice}",
        backend=receiver.key,
    )
