"""`info`: the row-only JSON values of a file (nested values allowed, never sent to a store).

A file has two dicts of its own data. `metadata` is str→str, stored in the column *and*
sent to the object store as user metadata (headers: `x-amz-meta-*` on S3), so it obeys
the stores' limits. `info` holds any JSON value (objects, arrays, numbers, booleans,
null, strings), is stored in the column only, and is never sent to a store.

Only JSON values are accepted, checked when set, so what is read back from the row is
what was stored (no tuple becoming a list, no datetime becoming a string).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any, Protocol

from ._errors import InvalidFileObjectError
from ._owned_dict import OwnedDict

__all__ = ("InfoDict", "check_json_value")


class _Owner(Protocol):
    def changed(self) -> None: ...


_SCALARS = (str, int, float, bool, type(None))


def check_json_value(value: object, where: str = "info") -> None:
    """Refuse anything but JSON values (dicts with str keys, lists, str, numbers, bools,
    `None`); a float must be finite (JSON has no NaN or infinity)."""
    if isinstance(value, _SCALARS):
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidFileObjectError(f"{where} holds {value!r}: JSON has no NaN or infinity.")
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            check_json_value(item, f"{where}[{index}]")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidFileObjectError(
                    f"{where} has the key {key!r}: JSON object keys are strings."
                )
            check_json_value(item, f"{where}[{key!r}]")
        return
    raise InvalidFileObjectError(
        f"{where} holds a {type(value).__name__}: info takes JSON values only (dict, list, "
        "str, int, float, bool, None). Convert it first (e.g. a datetime to isoformat())."
    )


def _plain(value: Any) -> Any:
    """A copy made of plain dicts and lists (tuples are not JSON values: refused before)."""
    return copy.deepcopy(dict(value)) if isinstance(value, Mapping) else copy.deepcopy(value)


class InfoDict(OwnedDict[Any]):
    """A JSON-object dict that tells its file when a top-level entry changes.

    Nested values are plain dicts and lists: changing one in place
    (`file.info["a"]["b"] = 1`) is not seen; assign the top-level entry again or call
    `file.changed()`.
    """

    __slots__ = ()

    def __init__(self, owner: _Owner, data: Mapping[str, Any] | None, checked: bool = False):
        if data and not checked:
            if not isinstance(data, Mapping):
                raise InvalidFileObjectError(f"info must be a mapping, not {type(data).__name__}.")
            check_json_value(data)
            data = _plain(data)
        super().__init__(owner, data)

    def _check(self, values: dict[str, Any]) -> dict[str, Any]:
        check_json_value(values)
        return values
