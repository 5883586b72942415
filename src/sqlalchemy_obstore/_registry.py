"""The implementation of `sqlalchemy_obstore.registry`, documented and imported there."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal, TypeAlias

from ._errors import (
    BackendAlreadyRegisteredError,
    BackendNotFoundError,
    ConfigurationError,
    NoDefaultBackendError,
)
from ._logging import library_logger
from ._telemetry import count_orphans

if TYPE_CHECKING:
    from .backends import Backend

__all__ = (
    "BackendRegistry",
    "OrphanListener",
    "OrphanReason",
    "OrphanReport",
    "StandIn",
    "report_orphans",
    "storages",
)

logger = library_logger("sqlalchemy_obstore")

OrphanReason = Literal["after_commit", "rollback", "failed_flush", "commit_outcome_unknown"]
"""Why objects were left in storage: see
[`OrphanReport`][sqlalchemy_obstore.registry.OrphanReport]."""


@dataclass(frozen=True, slots=True)
class OrphanReport:
    """Objects of one backend that the session lifecycle left in storage, and why.

    Every report is also logged as a WARNING on the `sqlalchemy_obstore` logger. The
    objects are safe to leave (no committed row is broken by them) and the garbage
    collector (`sqlalchemy-obstore gc`) removes every one that no row references.

    Attributes:
        backend: The backend's key.
        paths: The objects' paths in the backend.
        reason: What happened:

            - `"after_commit"`: deleting replaced or removed files after a commit failed;
              the objects are orphans.
            - `"rollback"`: undoing the uploads of a transaction or SAVEPOINT that rolled
              back failed; the objects are orphans.
            - `"failed_flush"`: removing the uploads of a flush whose other uploads failed
              did not work; the objects are orphans.
            - `"commit_outcome_unknown"`: COMMIT was sent and no answer came back (the
              connection died), so nothing was deleted. If the transaction committed,
              the transaction's uploads are referenced and the files it replaced are
              orphans; if it did not, the other way round. `sqlalchemy-obstore verify`
              and `gc` tell which.
        error: The exception behind it: the failed delete's, or the commit's for
            `"commit_outcome_unknown"`; `None` when the delete was not attempted.
    """

    backend: str
    paths: tuple[str, ...]
    reason: OrphanReason
    error: BaseException | None = None


OrphanListener = Callable[[OrphanReport], object]
"""A callable that receives an [`OrphanReport`][sqlalchemy_obstore.registry.OrphanReport]."""

_REGISTRIES: weakref.WeakSet[BackendRegistry] = weakref.WeakSet()

StandIn: TypeAlias = Callable[["Backend", "Backend | None"], "Backend"]
"""Builds what a key resolves to inside an override, from the backend the code under test
registered and the backend the key resolves to now (`None` when it resolves to nothing)."""


class _Override:
    """One active `override` block: the keys it pins and how it stands in for backends."""

    __slots__ = ("every_key", "keys", "stand_in")

    def __init__(self, keys: frozenset[str], stand_in: StandIn | None, every_key: bool) -> None:
        self.keys = keys
        self.stand_in = stand_in
        self.every_key = every_key

    def catches(self, key: str) -> bool:
        return self.every_key or key in self.keys


class BackendRegistry:
    """A thread-safe mapping of backend keys to backends.

    Example:
        >>> from sqlalchemy_obstore import BackendRegistry, ObstoreBackend
        >>> registry = BackendRegistry()
        >>> registry.register_backend(ObstoreBackend("uploads", "memory://"))
        >>> "uploads" in registry, list(registry)
        (True, ['uploads'])
    """

    __slots__ = (
        "__weakref__",
        "_backends",
        "_default",
        "_displaced",
        "_lock",
        "_orphan_listeners",
        "_overrides",
    )

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._backends: Mapping[str, Backend] = MappingProxyType({})
        self._default: str | None = None
        self._orphan_listeners: tuple[OrphanListener, ...] = ()
        _REGISTRIES.add(self)
        # Active `override` blocks, innermost last, and what the code under test registered
        # under the keys they catch.
        self._overrides: tuple[_Override, ...] = ()
        self._displaced: Mapping[str, Backend] = MappingProxyType({})

    def register_backend(
        self, backend: Backend, *, replace: bool = False, default: bool = False
    ) -> None:
        """Register `backend` under its key.

        Args:
            backend: The backend to register.
            replace: Replace a backend already registered under the same key.
            default: Also make its key the registry's default backend (see
                [`set_default`][sqlalchemy_obstore.registry.BackendRegistry.set_default]).

        Inside an [`override`][sqlalchemy_obstore.registry.BackendRegistry.override] block
        that catches the key, the override stays in place instead (see there).

        Raises:
            BackendAlreadyRegisteredError: If the key is taken and `replace` is false.
        """
        with self._lock:
            override = self._catching(backend.key)
            if override is not None:
                self._displace(override, backend)
            elif backend.key in self._backends and not replace:
                raise BackendAlreadyRegisteredError(backend.key)
            else:
                self._backends = MappingProxyType({**self._backends, backend.key: backend})
            if default:
                self._default = backend.key

    def set_default(self, key: str | None) -> None:
        """Make `key` the default backend: what files and columns naming none use.

        A `StoredObject()` column without a backend key and a `FileObject` built
        without `backend=` resolve to this key when they are saved (or signed, or read),
        and the file records the key: rows written then keep pointing at this backend
        when the default changes later. There is no implicit default; `None` removes it.

        Args:
            key: The key of a registered backend, or `None`.

        Raises:
            BackendNotFoundError: If no backend is registered under `key`.

        Example:
            >>> from sqlalchemy_obstore import BackendRegistry, ObstoreBackend
            >>> registry = BackendRegistry()
            >>> registry.register_backend(ObstoreBackend("uploads", "memory://"))
            >>> registry.set_default("uploads")
            >>> registry.default
            'uploads'
        """
        with self._lock:
            if key is not None and key not in self._backends:
                raise BackendNotFoundError(key, registered=list(self._backends))
            self._default = key

    @property
    def default(self) -> str | None:
        """The default backend's key, or `None` when there is none."""
        return self._default

    def resolve_key(self, key: str | None) -> str:
        """`key` itself, or the default backend's key when `key` is `None`.

        Raises:
            NoDefaultBackendError: If `key` is `None` and there is no default backend.
        """
        if key is not None:
            return key
        default = self._default
        if default is None:
            raise NoDefaultBackendError(registered=list(self._backends))
        return default

    def unregister_backend(self, key: str) -> Backend:
        """Remove and return the backend registered under `key`.

        Inside an `override` block that catches the key, this removes what the code under
        test registered under it (and returns that); the override stays. Removing the
        default backend leaves the registry without a default.

        Raises:
            BackendNotFoundError: If no backend has that key.
        """
        with self._lock:
            if self._catching(key) is not None and key in self._displaced:
                displaced = dict(self._displaced)
                removed = displaced.pop(key)
                self._displaced = MappingProxyType(displaced)
                return removed
            if self._catching(key) is not None and key in self._backends:
                return self._backends[key]
            if key not in self._backends:
                raise BackendNotFoundError(key, registered=list(self._backends))
            backends = dict(self._backends)
            backend = backends.pop(key)
            self._backends = MappingProxyType(backends)
            if self._default == key:
                self._default = None
            return backend

    def get_backend(self, key: str) -> Backend:
        """Return the backend registered under `key`.

        Raises:
            BackendNotFoundError: If no backend has that key; the message lists the keys
                that are registered.
        """
        try:
            return self._backends[key]
        except KeyError:
            raise BackendNotFoundError(key, registered=list(self._backends)) from None

    @property
    def backends(self) -> Mapping[str, Backend]:
        """A read-only snapshot of the registered backends, by key."""
        return self._backends

    @property
    def displaced(self) -> Mapping[str, Backend]:
        """What the code under test registered under keys an `override` block catches.

        A read-only snapshot, by key: the backends an application registered (at import or
        at start-up) that the override keeps out of the registry. Empty outside overrides.
        """
        return self._displaced

    def clear(self) -> None:
        """Unregister every backend and the default (keys an `override` block catches keep
        their override)."""
        with self._lock:
            self._default = None
            kept = {k: b for k, b in self._backends.items() if self._catching(k) is not None}
            self._backends = MappingProxyType(kept)
            self._displaced = MappingProxyType({})

    @contextmanager
    def temporary(
        self, *backends: Backend, clear: bool = False, default: str | None = None
    ) -> Iterator[BackendRegistry]:
        """Register `backends` for the duration of a `with` block, then restore.

        Backends registered under the same keys are replaced inside the block and come
        back afterwards; anything registered or unregistered inside the block is undone,
        and so is a change of the default backend.

        Args:
            *backends: Backends to register inside the block.
            clear: Start the block with no other backend registered (and no default).
            default: The default backend's key inside the block (a key registered
                before it or given in `backends`).

        Raises:
            BackendNotFoundError: If `default` is not registered in the block.

        Example:
            >>> from sqlalchemy_obstore import ObstoreBackend, storages
            >>> with storages.temporary(ObstoreBackend("uploads", "memory://")):
            ...     "uploads" in storages
            True
        """
        with self._lock:
            saved = self._backends, self._default
            start = {} if clear else dict(self._backends)
            start.update({b.key: b for b in backends})
            if default is not None and default not in start:
                raise BackendNotFoundError(default, registered=list(start))
            self._backends = MappingProxyType(start)
            if clear or default is not None:
                self._default = default
        try:
            yield self
        finally:
            with self._lock:
                self._backends, self._default = saved

    # -- orphans ----------------------------------------------------------------------------
    def add_orphan_listener(self, listener: OrphanListener) -> OrphanListener:
        """Call `listener` whenever the session lifecycle leaves objects behind.

        `listener` receives an [`OrphanReport`][sqlalchemy_obstore.registry.OrphanReport]
        for objects of a backend registered here: a delete that failed after a commit or
        a rollback, or a commit whose outcome is unknown. Use it to count and alert;
        the garbage collector removes the objects. It runs inside the session's commit
        or rollback (in an `AsyncSession`, in the event loop's thread), so keep it quick
        and free of I/O; an exception it raises is logged and otherwise ignored.

        Args:
            listener: The callable; adding it twice has no effect.

        Returns:
            `listener`, so that this method can be used as a decorator.

        Example:
            >>> from collections import Counter
            >>> from sqlalchemy_obstore import BackendRegistry
            >>> orphans: Counter[str] = Counter()
            >>> registry = BackendRegistry()
            >>> @registry.add_orphan_listener
            ... def count(report):
            ...     orphans[report.reason] += len(report.paths)
        """
        with self._lock:
            if listener not in self._orphan_listeners:
                self._orphan_listeners = (*self._orphan_listeners, listener)
        return listener

    def remove_orphan_listener(self, listener: OrphanListener) -> None:
        """Stop calling `listener` (added with `add_orphan_listener`); unknown ones are ignored."""
        with self._lock:
            self._orphan_listeners = tuple(x for x in self._orphan_listeners if x != listener)

    def _notify_orphans(self, report: OrphanReport) -> None:
        for listener in self._orphan_listeners:
            try:
                listener(report)
            except Exception:
                logger.exception("The orphan listener %r failed on %r", listener, report)

    @contextmanager
    def override(
        self, *backends: Backend, stand_in: StandIn | None = None, every_key: bool = False
    ) -> Iterator[BackendRegistry]:
        """Keep `backends` registered for a block, whatever the code under test registers.

        The tool for testing an application that registers its own backends when it
        starts (a Litestar plugin, a lifespan, a module-level `register_backend`): inside
        the block each key of `backends` resolves to the given backend. When the code
        under test registers a backend under a key the block catches, that call succeeds
        (never `BackendAlreadyRegisteredError`) and the key resolves to
        `stand_in(registered, current)`, or keeps its override without a `stand_in`;
        unregistering such a key removes only the application's registration. What the
        application registered stays visible in
        [`displaced`][sqlalchemy_obstore.registry.BackendRegistry.displaced]. Backends
        already registered under caught keys when the block starts are treated as if
        registered again inside it. On exit the registry is restored as it was, as after
        [`temporary`][sqlalchemy_obstore.registry.BackendRegistry.temporary] (which itself
        ignores overrides: use it to register a real backend deliberately).

        The default backend is a key, so an override leaves it alone: when the code under
        test makes a caught key the default (`register_backend(..., default=True)`,
        `set_default`), files that name no backend go to what the key resolves to inside
        the block, the override. A default chosen inside the block is undone on exit.

        Blocks nest; the innermost block that catches a key decides for it.

        Args:
            *backends: Backends the block pins under their keys.
            stand_in: Called as `stand_in(registered, current)` for each backend the code
                under test registers under a caught key, with what the key resolves to now
                (or `None`); what it returns (under the same key) is what the key resolves
                to. [`memory_stand_in`][sqlalchemy_obstore.testing.memory_stand_in] keeps
                the registered backend's settings and puts its content in memory.
            every_key: Catch every key, not only those of `backends` (needs `stand_in`):
                no backend the code under test registers is used as it is.

        Raises:
            ConfigurationError: For `every_key` without `stand_in`, or a `stand_in` that
                returns a backend with another key.

        Example:
            >>> from sqlalchemy_obstore import ObstoreBackend, storages
            >>> test_backend = ObstoreBackend("uploads", "memory://")
            >>> with storages.override(test_backend):
            ...     storages.register_backend(ObstoreBackend("uploads", "memory://"))  # the app
            ...     storages.get_backend("uploads") is test_backend
            True
        """
        if every_key and stand_in is None:
            raise ConfigurationError(
                "override(every_key=True) needs a stand_in: the function that builds what a "
                "key resolves to from the backend registered under it."
            )
        pinned = {b.key: b for b in backends}
        override = _Override(frozenset(pinned), stand_in, every_key)
        with self._lock:
            saved = (self._backends, self._overrides, self._displaced, self._default)
            sources = {key: self._source(key) for key in (*self._backends, *self._displaced)}
            start = {**self._backends, **pinned}
            displaced = dict(self._displaced)
            for key, source in sources.items():
                if source is None or not override.catches(key):
                    continue
                displaced[key] = source
                if stand_in is not None:
                    start[key] = self._stand_in(stand_in, source, pinned.get(key))
            self._backends = MappingProxyType(start)
            self._displaced = MappingProxyType(displaced)
            self._overrides = (*self._overrides, override)
        try:
            yield self
        finally:
            with self._lock:
                self._backends, self._overrides, self._displaced, self._default = saved

    def _catching(self, key: str) -> _Override | None:
        """The innermost active override that catches `key`, if any."""
        for override in reversed(self._overrides):
            if override.catches(key):
                return override
        return None

    def _source(self, key: str) -> Backend | None:
        """What the code under test has registered under `key` (not an override)."""
        if key in self._displaced:
            return self._displaced[key]
        return self._backends.get(key) if self._catching(key) is None else None

    def _displace(self, override: _Override, backend: Backend) -> None:
        """Record `backend`, registered under a caught key, and apply the stand-in."""
        current = self._backends.get(backend.key)
        if backend is current:
            return
        self._displaced = MappingProxyType({**self._displaced, backend.key: backend})
        if override.stand_in is not None:
            replacement = self._stand_in(override.stand_in, backend, current)
            self._backends = MappingProxyType({**self._backends, backend.key: replacement})

    @staticmethod
    def _stand_in(stand_in: StandIn, backend: Backend, current: Backend | None) -> Backend:
        replacement = stand_in(backend, current)
        if replacement.key != backend.key:
            raise ConfigurationError(
                f"The stand-in for backend {backend.key!r} has the key {replacement.key!r}; "
                "a stand-in must keep the key of the backend it stands in for.",
                backend=backend.key,
            )
        return replacement

    def __contains__(self, key: object) -> bool:
        return key in self._backends

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._backends))

    def __len__(self) -> int:
        return len(self._backends)

    def __repr__(self) -> str:
        default = "" if self._default is None else f", default={self._default!r}"
        return f"BackendRegistry(keys={sorted(self._backends)!r}{default})"


def report_orphans(backend: Backend, report: OrphanReport) -> None:
    """Give `report` to the orphan listeners of every registry where `backend` is registered.

    Called by the session lifecycle; applications that leave objects behind in their
    own code may call it too.

    Args:
        backend: The backend the objects are in (matched by identity).
        report: What was left and why.
    """
    count_orphans(report.backend, report.reason, len(report.paths))
    for registry in list(_REGISTRIES):
        if registry._orphan_listeners and registry._backends.get(backend.key) is backend:
            registry._notify_orphans(report)


storages = BackendRegistry()
"""The default registry, used by every column and file object not given another one."""
