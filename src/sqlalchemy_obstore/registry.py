"""The backend registry: resolves the backend key stored in a column to a backend.

[`storages`][sqlalchemy_obstore.storages] is the default, process-wide registry that
columns and file objects use unless told otherwise. Applications register their backends
once at start-up (in their lifespan); tests swap backends in and out with
[`BackendRegistry.temporary`][sqlalchemy_obstore.registry.BackendRegistry.temporary]. Code that
needs isolation (multi-tenant apps, parallel tests) can create its own
[`BackendRegistry`][sqlalchemy_obstore.BackendRegistry] and pass it to `StoredObject`.

Reads are lock-free (a lookup reads an immutable snapshot); writes take a lock and
publish a new snapshot, so the registry is safe to use from several threads.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import TYPE_CHECKING

from .errors import BackendAlreadyRegisteredError, BackendNotFoundError

if TYPE_CHECKING:
    from .backends import Backend

__all__ = ("BackendRegistry", "storages")


class BackendRegistry:
    """A thread-safe mapping of backend keys to backends.

    Example:
        >>> from sqlalchemy_obstore import BackendRegistry, ObstoreBackend
        >>> registry = BackendRegistry()
        >>> registry.register_backend(ObstoreBackend("uploads", "memory://"))
        >>> "uploads" in registry, list(registry)
        (True, ['uploads'])
    """

    __slots__ = ("_backends", "_lock")

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._backends: Mapping[str, Backend] = MappingProxyType({})

    def register_backend(self, backend: Backend, *, replace: bool = False) -> None:
        """Register `backend` under its key.

        Args:
            backend: The backend to register.
            replace: Replace a backend already registered under the same key.

        Raises:
            BackendAlreadyRegisteredError: If the key is taken and `replace` is false.
        """
        with self._lock:
            if backend.key in self._backends and not replace:
                raise BackendAlreadyRegisteredError(backend.key)
            self._backends = MappingProxyType({**self._backends, backend.key: backend})

    def unregister_backend(self, key: str) -> Backend:
        """Remove and return the backend registered under `key`.

        Raises:
            BackendNotFoundError: If no backend has that key.
        """
        with self._lock:
            if key not in self._backends:
                raise BackendNotFoundError(key, registered=list(self._backends))
            backends = dict(self._backends)
            backend = backends.pop(key)
            self._backends = MappingProxyType(backends)
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

    def clear(self) -> None:
        """Unregister every backend."""
        with self._lock:
            self._backends = MappingProxyType({})

    @contextmanager
    def temporary(self, *backends: Backend, clear: bool = False) -> Iterator[BackendRegistry]:
        """Register `backends` for the duration of a `with` block, then restore.

        Backends registered under the same keys are replaced inside the block and come
        back afterwards; anything registered or unregistered inside the block is undone.

        Args:
            *backends: Backends to register inside the block.
            clear: Start the block with no other backend registered.

        Example:
            >>> from sqlalchemy_obstore import ObstoreBackend, storages
            >>> with storages.temporary(ObstoreBackend("uploads", "memory://")):
            ...     "uploads" in storages
            True
        """
        with self._lock:
            saved = self._backends
            start = {} if clear else dict(saved)
            start.update({b.key: b for b in backends})
            self._backends = MappingProxyType(start)
        try:
            yield self
        finally:
            with self._lock:
                self._backends = saved

    def __contains__(self, key: object) -> bool:
        return key in self._backends

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._backends))

    def __len__(self) -> int:
        return len(self._backends)

    def __repr__(self) -> str:
        return f"BackendRegistry(keys={sorted(self._backends)!r})"


storages = BackendRegistry()
"""The default registry, used by every column and file object not given another one."""
