"""Files assigned to a `StoredObject` column take the column's backend and registry.

A file built without a backend (or a registry) gets its column's when it is assigned
(the attribute's `set` event, in `types`) and again before a flush uploads it (in
`lifecycle`, for values the event did not see, such as items appended to a list). A
column without a backend key of its own gives the registry's default backend as it is
then; with no default yet, the file keeps none and the save resolves it (or raises
`NoDefaultBackendError`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from ._file_object import FileObject
from ._mutable import set_quietly

if TYPE_CHECKING:
    from ._registry import BackendRegistry

__all__ = ("ColumnDefaults", "apply_column_defaults")


class ColumnDefaults(Protocol):
    """What a column gives its files (a `StoredObject`): a backend key and a registry."""

    @property
    def resolved_backend(self) -> str | None: ...

    @property
    def registry(self) -> BackendRegistry | None: ...


def apply_column_defaults(column_type: ColumnDefaults, value: Any) -> None:
    """Give files without a backend (or registry) the column's.

    These are not user changes: they are set without marking anything dirty.
    """
    files = value if isinstance(value, list) else [value]
    for file in files:
        if isinstance(file, FileObject):
            d = file.__dict__
            if d["backend"] is None:
                set_quietly(file, backend=column_type.resolved_backend)
            if d["_registry"] is None and column_type.registry is not None:
                set_quietly(file, _registry=column_type.registry)
