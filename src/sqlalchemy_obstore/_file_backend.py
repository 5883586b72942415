"""Which backend a file uses: the key it names, else its registry's default backend.

A file that names no backend (`FileObject(content=...)` without `backend=`, a column
`StoredObject()` without a key) uses the default backend of its registry (see
[`BackendRegistry.set_default`][sqlalchemy_obstore.registry.BackendRegistry.set_default]).
Saving and signing an upload record the resolved key in the file, so that its row keeps
pointing at that backend when the default changes later.

A file decoded from outside data (untrusted, see `FileObject.from_dict`) that names no
backend is never resolved here: only a column may give it a backend, and the session
then vets it against the row (a client cannot reach the default backend by leaving the
key out).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._errors import UntrustedReferenceError
from ._registry import BackendRegistry, storages

if TYPE_CHECKING:
    from .backends import Backend

__all__ = ("file_backend", "file_backend_key")


def file_backend_key(state: Mapping[str, Any]) -> str:
    """The backend key of a file (its `__dict__`): its own, else its registry's default.

    Raises:
        NoDefaultBackendError: If it names none and the registry has no default.
        UntrustedReferenceError: If it names none and was decoded from outside data.
    """
    key: str | None = state["backend"]
    if key is not None:
        return key
    if state["_untrusted"]:
        raise UntrustedReferenceError(
            f"A file decoded from outside data names no backend (path {state['path']!r}); "
            "it is not resolved to the default backend. Assign it to a StoredObject "
            "column (the session checks it against the row), or build it in server code.",
            path=state["path"],
        )
    registry: BackendRegistry = state["_registry"] or storages
    return registry.resolve_key(None)


def file_backend(state: Mapping[str, Any]) -> Backend:
    """The backend a file (its `__dict__`) uses; see `file_backend_key`.

    Raises:
        BackendNotFoundError: If nothing is registered under its key.
    """
    registry: BackendRegistry = state["_registry"] or storages
    key = state["backend"]
    return registry.get_backend(key if key is not None else file_backend_key(state))
