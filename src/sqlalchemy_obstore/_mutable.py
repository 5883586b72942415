"""All coupling to SQLAlchemy's `Mutable` machinery (`sqlalchemy.ext.mutable`).

A value stored in a mapped attribute tells the rows holding it when it changes in place,
so they are written at the next flush. This module holds how that works here, and knows
nothing of files: the value classes pass themselves in.

- `MutableValue`: a `Mutable` scalar that remembers the rows holding it in its own
  `__dict__` (no `WeakKeyDictionary` per value: one is built for every row loaded) and
  the lists it is an item of, and wires a mapped attribute with a load listener made
  for loading many rows.
- `MutableItemList`: a `MutableList` of `MutableValue` items; a change to an item marks
  the list's row too, and items removed from it are remembered.
- `notify_holders`: what `changed()` does, flagging only the rows that still hold the value.
- `set_quietly`: the one way to set a value's fields without telling anyone.
- Pickling: holders are weak references and never pickled (`NOT_PICKLED`); SQLAlchemy's
  `pickle`/`unpickle` events re-bind a row's values.

What this relies on of SQLAlchemy (the same in 2.0 and 2.1): `Mutable.changed`,
`coerce`, `_parents` (a mapping of `InstanceState` to attribute key),
`_get_listen_keys`, the `_listen_on_attribute` hook behind `associate_with_attribute`,
the `_sa_event_merge_wo_load` event and the `"ext.mutable.values"` pickle key.
"""

from __future__ import annotations

import weakref
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, SupportsIndex, TypeVar, overload

from sqlalchemy import event
from sqlalchemy.ext.mutable import Mutable, MutableList
from sqlalchemy.orm.attributes import flag_modified

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = (
    "NOT_PICKLED",
    "Holders",
    "MutableItemList",
    "MutableValue",
    "notify_holders",
    "set_quietly",
)

NOT_PICKLED = frozenset({"_parents", "_parent", "_parent_key", "_more_parents", "_containers"})
"""`__dict__` entries of a `MutableValue` that only mean something in this process."""


def set_quietly(value: object, /, **fields: Any) -> None:
    """Set attributes of a mutable value without telling the rows or lists holding it.

    The one way to change a value behind its `changed()` notification, for what is not
    an edit of the value: a column's defaults given to a file assigned to it, an
    upload's results recorded before one `changed()` call for all of them, an undone
    upload put back. Values are stored as given (no field check, no cache reset): pass
    checked values, and call `changed()` afterwards when the holders must know.
    """
    value.__dict__.update(fields)


def _flag(value: object, holders: Iterable[tuple[Any, str]]) -> None:
    """Flag the attributes of `holders` (state, key) that still hold `value` as modified.

    Like `Mutable.changed`, but a row whose attribute no longer holds this value (it
    was reassigned, or expired by a commit or rollback and not loaded again) is left
    alone: the value does not belong to it anymore, and SQLAlchemy would refuse to flag
    an attribute that is not loaded. A row never inserted (no identity key) is left
    alone too: its INSERT writes every value as it is then, flagged or not.
    """
    for state, key in holders:
        if state.key is None:
            continue
        holder = state.obj()
        if holder is not None and state.dict.get(key) is value:
            flag_modified(holder, key)


def notify_holders(value: object) -> None:
    """Mark every row and list holding `value` as modified (what `changed()` does)."""
    d = value.__dict__
    if d.get("_parent") is not None or d.get("_more_parents"):
        _flag(value, Holders(d).items())
    containers = d.get("_containers")
    if containers:
        for ref in list(containers.values()):
            container = ref()
            if container is not None:
                container.changed()


class Holders:
    """The rows holding a value: `InstanceState` → attribute key, the states held weakly.

    What `Mutable._parents` (a `WeakKeyDictionary`) does, for the operations SQLAlchemy
    and this package use (`[state] = key`, `pop`, `get`, `items`, ...), without a
    container per value: the first holder is kept in the value's own `__dict__` (one
    weak reference and its key), further ones in a dict created only when a value is
    held by several rows at once. This object is only a view, created on each
    `value._parents` access.
    """

    __slots__ = ("_d",)

    def __init__(self, d: dict[str, Any]) -> None:
        self._d = d

    def __setitem__(self, state: Any, key: Any) -> None:
        d = self._d
        first = d.get("_parent")
        holder = first() if first is not None else None
        if holder is None or holder is state:
            d["_parent"] = weakref.ref(state)
            d["_parent_key"] = key
            return
        more: dict[int, tuple[weakref.ref[Any], Any]] | None = d.get("_more_parents")
        if more is None:
            more = d["_more_parents"] = {}
        elif len(more) >= 8:
            for ident in [i for i, (ref, _) in more.items() if ref() is None]:
                del more[ident]
        more[id(state)] = (weakref.ref(state), key)

    def _find(self, state: Any) -> tuple[bool, Any]:
        d = self._d
        first = d.get("_parent")
        if first is not None and first() is state:
            return True, d["_parent_key"]
        more = d.get("_more_parents")
        entry = more.get(id(state)) if more else None
        if entry is not None and entry[0]() is state:
            return True, entry[1]
        return False, None

    def __getitem__(self, state: Any) -> Any:
        found, key = self._find(state)
        if not found:
            raise KeyError(state)
        return key

    def get(self, state: Any, default: Any = None) -> Any:
        found, key = self._find(state)
        return key if found else default

    def pop(self, state: Any, *default: Any) -> Any:
        d = self._d
        first = d.get("_parent")
        if first is not None and first() is state:
            key = d["_parent_key"]
            d["_parent"] = d["_parent_key"] = None
            return key
        more = d.get("_more_parents")
        entry = more.get(id(state)) if more else None
        if more and entry is not None and entry[0]() is state:
            del more[id(state)]
            return entry[1]
        if default:
            return default[0]
        raise KeyError(state)

    def __delitem__(self, state: Any) -> None:
        self.pop(state)

    def __contains__(self, state: object) -> bool:
        return self._find(state)[0]

    def items(self) -> list[tuple[Any, Any]]:
        d = self._d
        found: list[tuple[Any, Any]] = []
        first = d.get("_parent")
        if first is not None and (state := first()) is not None:
            found.append((state, d["_parent_key"]))
        more = d.get("_more_parents")
        if more:
            found.extend((s, key) for ref, key in more.values() if (s := ref()) is not None)
        return found

    def keys(self) -> list[Any]:
        return [state for state, _ in self.items()]

    def values(self) -> list[Any]:
        return [key for _, key in self.items()]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.items())


class MutableValue(Mutable):
    """A `Mutable` scalar whose holders live in its own `__dict__` (see `Holders`).

    A subclass keeps `_containers` in its `__dict__` (any empty mapping to start), calls
    `changed()` from every mutator and, to pickle more, extends `__getstate__` /
    `__setstate__`.
    """

    @property
    def _parents(self) -> Holders:  # type: ignore[override]  # rows holding it: see Holders
        return Holders(self.__dict__)

    def changed(self) -> None:
        """Mark every row (and list) holding this value as modified."""
        notify_holders(self)

    def _attach(self, container: MutableItemList[Any]) -> None:
        d = self.__dict__
        containers = d.get("_containers")
        if not isinstance(containers, dict):  # (a shared read-only empty until now)
            containers = d["_containers"] = {}
        containers[id(container)] = weakref.ref(container)

    def _detach(self, container: MutableItemList[Any]) -> None:
        containers = self.__dict__.get("_containers")
        if containers:
            containers.pop(id(container), None)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in NOT_PICKLED}

    def __setstate__(self, state: dict[str, Any]) -> None:
        d = self.__dict__
        d.update(state)
        d["_containers"] = {}

    @classmethod
    def _listen_on_attribute(cls, attribute: Any, coerce: bool, parent_cls: Any) -> None:
        """Wire in-place change tracking for one mapped attribute (SQLAlchemy's hook).

        Does what `Mutable` does (coerce values, remember the row that holds each
        value so `changed()` can flag it), with a load listener made for the hot path:
        a value of exactly this class just built from a row is bound to that row in two
        dictionary stores, with no coercion call and no `Holders` view. Everything else
        behaves as in `Mutable`.
        """
        key = attribute.key
        if parent_cls is not attribute.class_:
            return
        parent_cls = attribute.class_
        listen_keys = cls._get_listen_keys(attribute)
        ref = weakref.ref

        def load(state: Any, *args: Any) -> None:
            holder = state.obj()  # (what `state.dict` does, without its property call)
            if holder is None:
                return
            value: Any = holder.__dict__.get(key)
            if value is None:
                return
            if value.__class__ is not cls:
                value = cls.coerce(key, value) if coerce else value
                if coerce:
                    state.dict[key] = value
            d = value.__dict__
            first = d.get("_parent")
            if first is None or first() is None:
                d["_parent"] = ref(state)
                d["_parent_key"] = key
            else:
                value._parents[state] = key

        def load_attrs(state: Any, context: Any, attrs: Any) -> None:
            if not attrs or listen_keys.intersection(attrs):
                load(state)

        def set_(target: Any, value: Any, oldvalue: Any, initiator: Any) -> Any:
            if value is oldvalue:
                return value
            if not isinstance(value, cls):
                value = cls.coerce(key, value)
            if value is not None:
                value._parents[target] = key
            if isinstance(oldvalue, cls):
                oldvalue._parents.pop(target, None)  # (raw listener: `target` is the state)
            return value

        def pickle(state: Any, state_dict: dict[str, Any]) -> None:
            value = state.dict.get(key)
            if value is not None:
                state_dict.setdefault("ext.mutable.values", defaultdict(list))[key].append(value)

        def unpickle(state: Any, state_dict: dict[str, Any]) -> None:
            values = state_dict.get("ext.mutable.values")
            if values is None:
                return
            for value in values if isinstance(values, list) else values[key]:
                value._parents[state] = key

        listen = event.listen
        listen(parent_cls, "_sa_event_merge_wo_load", load, raw=True, propagate=True)
        listen(parent_cls, "load", load, raw=True, propagate=True)
        listen(parent_cls, "refresh", load_attrs, raw=True, propagate=True)
        listen(parent_cls, "refresh_flush", load_attrs, raw=True, propagate=True)
        listen(attribute, "set", set_, raw=True, retval=True, propagate=True)
        listen(parent_cls, "pickle", pickle, raw=True, propagate=True)
        listen(parent_cls, "unpickle", unpickle, raw=True, propagate=True)


_V = TypeVar("_V", bound=MutableValue)


class MutableItemList(MutableList[_V]):
    """A `MutableList` of `MutableValue` items that tracks its items too.

    A change to an item marks the row holding the list (the items know the lists they
    are in), every item put in goes through `_coerce_item`, and items taken out that are
    no longer in the list are remembered (`_removed`) when `_remember_removed` says so.
    A subclass defines those two and `coerce`.
    """

    def __init__(self, items: Iterable[Any] = ()) -> None:
        coerce_item = self._coerce_item
        super().__init__(coerce_item(i) for i in items)
        self._removed: list[_V] = []
        for item in self:
            item._attach(self)

    def _coerce_item(self, value: Any) -> _V:
        """The item to store for `value` (raise for a value the list cannot hold)."""
        raise NotImplementedError

    def _remember_removed(self, item: _V) -> bool:
        """Whether `item`, taken out of the list, is remembered in `_removed`."""
        return True

    def changed(self) -> None:
        """Mark the row holding this list as modified."""
        parents = self.__dict__.get("_parents")  # created on first use: none yet, no holder
        if parents:
            _flag(self, list(parents.items()))

    def _added(self, items: Iterable[_V]) -> None:
        for item in items:
            item._attach(self)

    def _dropped(self, items: Iterable[_V]) -> None:
        for item in items:
            item._detach(self)
            if self._remember_removed(item) and not any(item is kept for kept in self):
                self._removed.append(item)

    def __setitem__(self, index: Any, value: Any) -> None:
        old = self[index]
        if isinstance(index, slice):
            new = [self._coerce_item(v) for v in value]
            super().__setitem__(index, new)
            self._dropped(old)
            self._added(new)
        else:
            item = self._coerce_item(value)
            super().__setitem__(index, item)
            self._dropped([old])
            self._added([item])

    def __delitem__(self, index: SupportsIndex | slice) -> None:
        old = self[index]
        super().__delitem__(index)
        self._dropped(old if isinstance(old, list) else [old])

    def pop(self, *arg: SupportsIndex) -> _V:
        item = super().pop(*arg)
        self._dropped([item])
        return item

    def append(self, x: Any) -> None:
        item = self._coerce_item(x)
        super().append(item)
        self._added([item])

    def extend(self, x: Iterable[Any]) -> None:
        items = [self._coerce_item(i) for i in x]
        super().extend(items)
        self._added(items)

    def __iadd__(self, x: Iterable[Any]) -> Self:  # type: ignore[override,misc]
        self.extend(x)
        return self

    def insert(self, i: SupportsIndex, x: Any) -> None:
        item = self._coerce_item(x)
        super().insert(i, item)
        self._added([item])

    def remove(self, i: Any) -> None:
        for index, item in enumerate(self):
            if item is i or item == i:
                del self[index]
                return
        raise ValueError(f"{i!r} is not in the list")

    def clear(self) -> None:
        old = list(self)
        super().clear()
        self._dropped(old)

    def __getstate__(self) -> Any:
        return (list(self), list(self._removed))

    def __setstate__(self, state: Any) -> None:
        items, removed = state if isinstance(state, tuple) else (state, [])
        self[:] = items
        self._removed = list(removed)

    @overload
    def __getitem__(self, index: SupportsIndex) -> _V: ...
    @overload
    def __getitem__(self, index: slice) -> list[_V]: ...
    def __getitem__(self, index: SupportsIndex | slice) -> _V | list[_V]:
        return list.__getitem__(self, index)
