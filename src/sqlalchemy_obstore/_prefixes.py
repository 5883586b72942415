"""Which object paths a backend manages: the ones under its prefix.

A backend deletes only below its prefix (`ObstoreBackend.delete` refuses any other path)
and garbage collection lists only below it, so an object written outside the prefix can
never be removed through that backend: it leaks. The operations that write one
backend's paths into another backend check here, before they write anything, that the
receiving backend manages those paths:

* `migrate` copies each object to the same path in the destination;
* a `MirrorBackend` writes every path of its primary to each mirror;
* an `OverlayBackend` writes and deletes the base's paths in the overlay;
* `reprocess` stores renditions next to their original, in the original's backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._errors import ConfigurationError
from ._keys import join_key

if TYPE_CHECKING:
    from ._contract import Backend

__all__ = ("contains", "managed_prefix", "manages", "prefix_of", "require_contains")


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
