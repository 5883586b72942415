"""A dict owned by a file: it checks what is put in it and tells the file of each change.

The base of a file's `metadata` (str→str) and `info` (JSON values) dicts: every
mutating method runs the subclass's check on the new entries, then calls the owner's
`changed()`, so the rows holding the file are flagged. The owner is held weakly (a dict
kept after its file is gone tells nobody), and a pickled one is a plain dict.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any, Protocol, TypeVar

__all__ = ("OwnedDict",)

_V = TypeVar("_V")


class _Owner(Protocol):
    def changed(self) -> None: ...


class OwnedDict(dict[str, _V]):
    """A dict that checks its new entries (`_check`) and tells its owner it changed."""

    __slots__ = ("_owner",)

    def __init__(self, owner: _Owner, data: Mapping[str, _V] | None) -> None:
        """`data` must be checked already (subclasses check before calling this)."""
        if data:
            super().__init__(data)
        self._owner = weakref.ref(owner)

    def _check(self, values: dict[str, Any]) -> dict[str, _V]:
        """The new entries `values` as they may be stored (raises when refused)."""
        raise NotImplementedError  # each kind of dict says what it takes

    def _changed(self) -> None:
        owner = self._owner()
        if owner is not None:
            owner.changed()

    def __setitem__(self, key: str, value: _V) -> None:
        super().update(self._check({key: value}))
        self._changed()

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self._changed()

    def clear(self) -> None:
        super().clear()
        self._changed()

    def pop(self, key: str, *default: Any) -> Any:
        value = super().pop(key, *default)
        self._changed()
        return value

    def popitem(self) -> tuple[str, _V]:
        item = super().popitem()
        self._changed()
        return item

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def update(self, *args: Any, **kwargs: Any) -> None:
        super().update(self._check(dict(*args, **kwargs)))
        self._changed()

    def __ior__(self, other: Any) -> OwnedDict[_V]:  # type: ignore[override,misc]
        self.update(other)
        return self

    def __reduce__(self) -> Any:
        return (dict, (dict(self),))
