"""A file value's fields: their checks, its metadata dict, and the state around them.

What `FileObject` checks when a field is given or assigned (`FIELD_CHECKS`), the
metadata dict that reports in-place changes to its owner (`Metadata`), and the
functions that read or rebuild a file's `__dict__` as a whole: its repr, its pickled
state, the stored facts it takes over from a trusted file. Nothing here knows the
`FileObject` class: a file is passed in (anything with a `changed()` method and the
fields in its `__dict__`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from functools import partial
from types import MappingProxyType
from typing import Any, Protocol, TypeVar

from ._column import ATTRIBUTES
from ._content import content_kind
from ._errors import FileObjectError, InvalidFileObjectError
from ._info import InfoDict
from ._keys import check_filename as check_filename_text
from ._keys import check_object_path
from ._owned_dict import OwnedDict

__all__ = (
    "FIELD_CHECKS",
    "LOADED_INTERNALS",
    "MAX_CONTENT_TYPE_CHARS",
    "NOTHING",
    "NOTIFYING",
    "STORED_FACTS",
    "TRACKED_FIELDS",
    "UNDO_KEY",
    "Metadata",
    "apply_info",
    "check_content_type",
    "check_fields",
    "check_metadata",
    "check_optional",
    "describe",
    "field_check",
    "parse_datetime",
    "pickled_state",
    "restored_state",
    "stored_facts",
)

_T = TypeVar("_T")

TRACKED_FIELDS = frozenset(ATTRIBUTES)
"""The fields (`ATTRIBUTES`); assigning one marks the holders dirty."""
NOTIFYING = TRACKED_FIELDS | {"_metadata", "_info"}
"""Attributes whose assignment marks the holders dirty (and drops the signed URLs)."""
NOTHING: Mapping[Any, Any] = MappingProxyType({})
"""Shared, read-only and empty: what a new file holds as its unknown fields, renditions,
signed-URL cache and containers until one is written (then it gets its own dict).
Fewer objects per file make loading many rows cheaper (less for the GC to traverse)."""
LOADED_INTERNALS: dict[str, Any] = {  # (a plain dict: copied into every loaded file)
    "_content": None,
    "_registry": None,
    "_sign_cache": NOTHING,
    "_containers": NOTHING,
    "_extra": NOTHING,
    "_renditions": NOTHING,
    "_image": None,
    "_metadata": None,
    "_info": None,
    "_untrusted": False,
}
"""Internals of a file loaded from a row (shared empties are replaced on first write)."""


class _Owner(Protocol):
    def changed(self) -> None: ...


class Metadata(OwnedDict[str]):
    """A str→str dict that tells its owner (a file) when it changes."""

    __slots__ = ()

    def __init__(self, owner: _Owner, data: Mapping[str, str] | None):
        super().__init__(owner, check_metadata(data) if data else None)

    def _check(self, values: dict[str, Any]) -> dict[str, str]:
        return check_metadata(values)

    def setdefault(self, key: str, default: str = "") -> str:
        return super().setdefault(key, default)  # type: ignore[no-any-return]


def _check_metadata_item(key: object, value: object) -> tuple[str, str]:
    if not isinstance(key, str) or not isinstance(value, str):
        raise InvalidFileObjectError(
            f"metadata maps str to str; got {type(key).__name__} → {type(value).__name__}. "
            "Encode other values (for example as JSON) first."
        )
    if not (key.isascii() and value.isascii()) or "\x00" in key or "\x00" in value:
        _check_metadata_text(key, "key")
        _check_metadata_text(value, f"value of {ascii(key)[:40]}")
    return key, value


def _check_metadata_text(text: str, what: str) -> None:
    # What no JSON column can keep (PostgreSQL refuses NUL in JSON text) and what is not
    # text at all (a lone surrogate cannot be encoded as UTF-8): refused as for filenames.
    if "\x00" in text:
        raise InvalidFileObjectError(
            f"The metadata {what} cannot be stored: it holds a NUL character at position "
            f"{text.index(chr(0))}."
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidFileObjectError(
            f"The metadata {what} cannot be stored: it holds a lone surrogate (not text) at "
            f"position {exc.start}."
        ) from None


def check_metadata(data: Mapping[str, str] | None) -> dict[str, str]:
    """`data` as a plain dict, once every key and value is known to be a `str`."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise InvalidFileObjectError(f"metadata must be a mapping, not {type(data).__name__}.")
    return dict(_check_metadata_item(k, v) for k, v in data.items())


def parse_datetime(value: object) -> datetime | None:
    """`last_modified` as an aware datetime (an ISO string without offset is UTC)."""
    if value is None or isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
        except ValueError as exc:
            raise InvalidFileObjectError(
                f"last_modified must be an ISO 8601 timestamp, not {value!r}."
            ) from exc
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    raise InvalidFileObjectError(f"last_modified must be a datetime or ISO string, not {value!r}.")


def check_optional(value: object, kind: type[_T], name: str) -> _T | None:
    """`value` if it is `None` or a `kind` (never a bool); else `InvalidFileObjectError`."""
    if value is None or (isinstance(value, kind) and not isinstance(value, bool)):
        return value
    raise InvalidFileObjectError(f"{name} must be {kind.__name__} or None, not {value!r}.")


def check_filename(value: object) -> str:
    """A filename: a string that can be stored and sent (see `keys.check_filename`)."""
    if not isinstance(value, str):
        raise InvalidFileObjectError(f"filename must be a string, not {type(value).__name__}.")
    return check_filename_text(value)


MAX_CONTENT_TYPE_CHARS = 255
"""The longest `content_type` a file takes (a MIME type and its parameters)."""


def check_content_type(value: object) -> str:
    """`value` if it can be a file's `content_type`, else `InvalidFileObjectError`.

    A content type travels as an HTTP header (to the store, and in every download) and
    in the JSON column, so it must be printable ASCII (no control character, CR, LF or
    NUL, nothing a store would refuse as a header or a database as JSON text), at most
    `MAX_CONTENT_TYPE_CHARS` characters. A client's declared type is untrusted input:
    one that is not such a string is a typed error (422 through `error_status`), never
    an error of the store or the database.
    """
    if not isinstance(value, str) or not value:
        raise InvalidFileObjectError(f"content_type must be a non-empty string, not {value!r}.")
    if len(value) > MAX_CONTENT_TYPE_CHARS:
        raise InvalidFileObjectError(
            f"content_type is {len(value)} characters long; at most {MAX_CONTENT_TYPE_CHARS} "
            "are accepted."
        )
    if not (value.isascii() and value.isprintable()):
        raise InvalidFileObjectError(
            f"content_type {ascii(value)[:80]} cannot be stored or sent as a header: it must "
            "be printable ASCII (no control characters, line breaks or NUL)."
        )
    return value


FIELD_CHECKS: dict[str, Callable[[Any], Any]] = {
    "filename": check_filename,
    "backend": partial(check_optional, kind=str, name="backend"),
    "path": lambda value: None if value is None else check_object_path(value),
    "content_type": check_content_type,
    "content_encoding": partial(check_optional, kind=str, name="content_encoding"),
    "size": partial(check_optional, kind=int, name="size"),
    "etag": partial(check_optional, kind=str, name="etag"),
    "version": partial(check_optional, kind=str, name="version"),
    "checksum": partial(check_optional, kind=str, name="checksum"),
    "last_modified": parse_datetime,
}
"""What assigning each field checks (and converts): the same as the constructor."""
field_check = FIELD_CHECKS.get
"""The check of an attribute name, `None` for a name that is not a field."""

STORED_FACTS = (
    "backend",
    "content_encoding",
    "size",
    "etag",
    "version",
    "checksum",
    "last_modified",
)
"""The fields the constructor takes as given when `None` or of their exact type."""


def check_fields(d: dict[str, Any], names: tuple[str, ...]) -> None:
    """Check (and convert) the fields `names` of the `__dict__` `d` in place."""
    for name in names:
        d[name] = FIELD_CHECKS[name](d[name])


def stored_facts(file: _Owner, source: Mapping[str, Any]) -> dict[str, Any]:
    """What `file` takes from the `__dict__` of a trusted `source` to become it again.

    Every field but `filename`, copies of its metadata, unknown fields and renditions,
    no signed URL, and trust.
    """
    return {
        **{name: source[name] for name in TRACKED_FIELDS - {"filename"}},
        "_metadata": Metadata(file, source["_metadata"]) if source["_metadata"] else None,
        "_extra": dict(source["_extra"]) if source["_extra"] else NOTHING,
        "_renditions": dict(source["_renditions"]) if source["_renditions"] else NOTHING,
        "_image": source["_image"],
        "_info": InfoDict(file, source["_info"]) if source.get("_info") else None,
        "_sign_cache": NOTHING,
        "_untrusted": False,
    }


def apply_info(file: object, info: Any) -> None:
    """Assign what the store reports of an object (`ObjectInfo`) to `file`'s fields."""
    file.size = info.size  # type: ignore[attr-defined]
    file.etag = info.etag  # type: ignore[attr-defined]
    file.version = info.version  # type: ignore[attr-defined]
    file.last_modified = info.last_modified  # type: ignore[attr-defined]
    if info.content_type:
        file.content_type = info.content_type  # type: ignore[attr-defined]


def describe(name: str, d: Mapping[str, Any]) -> str:
    """The repr of a file whose `__dict__` is `d`: the fields that say which file it is."""
    fields = [f"filename={d['filename']!r}"]
    if d["backend"] is not None:
        fields.append(f"backend={d['backend']!r}")
    if d["path"] is not None:
        fields.append(f"path={d['path']!r}")
    if d["size"] is not None:
        fields.append(f"size={d['size']}")
    fields.append(f"content_type={d['content_type']!r}")
    if d["_content"] is not None:
        fields.append("pending=True")
    return f"{name}({', '.join(fields)})"


UNDO_KEY = "_undo"
"""In a file's `__dict__`, while a session may still undo its uploads: what each upload
replaced, by path (see `_session_io`). Never pickled or copied."""


def pickled_state(state: dict[str, Any]) -> dict[str, Any]:
    """`state` (a copy of a file's `__dict__` without its holders) made picklable.

    Containers become plain dicts and the signed URLs are dropped; pending content can
    be pickled only as bytes or a path.
    """
    state.pop(UNDO_KEY, None)
    state["_sign_cache"] = {}
    state["_metadata"] = dict(state.get("_metadata") or ())
    state["_info"] = dict(state.get("_info") or ())
    state["_extra"] = dict(state.get("_extra") or ())
    state["_renditions"] = dict(state.get("_renditions") or ())
    content = state.get("_content")
    if content is not None and content_kind(content) not in {"buffer", "path"}:
        raise FileObjectError(
            "A FileObject whose pending content is a stream cannot be pickled; save it first."
        )
    if isinstance(content, memoryview):
        state["_content"] = bytes(content)
    return state


def restored_state(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """A pickled state split into the `__dict__` to restore and the metadata to wrap.

    State pickled by older versions lacks the renditions, the image facts and the trust
    flag.
    """
    metadata = state.pop("_metadata", {})
    state.setdefault("_renditions", {})
    state.setdefault("_image", None)
    state.setdefault("_untrusted", False)
    return state, metadata
