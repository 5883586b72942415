"""The column format: one msgspec `Struct`, and everything derived from it.

[`ColumnRow`][sqlalchemy_obstore._column.ColumnRow] *is* the format: its fields, in
order, are the keys `FileObject.to_dict()` writes, and what reading a column accepts
without a detour. The known keys, the attributes a `FileObject` tracks, the facts an
upload writes (what the session restores when it undoes one), the JSON schema, the
encoder and the loaders are derived from it here; the walkers of raw column JSON (garbage
collection, migration) use the helpers at the end. Adding a field means adding it to the
Struct, then to `FileObject.__init__` (and its field checks) and, for an API type, to
`contrib.msgspec.FileObjectDict`; `tests/unit/test_column_format.py` fails until every one
agrees.

This module never imports `file_object`: the file type is given to
[`FileCodec`][sqlalchemy_obstore._column.FileCodec] by the module that defines it, and
the codec works on the file's `__dict__`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timezone
from functools import cache
from typing import Annotated, Any, Generic, Protocol, TypeGuard, TypeVar

import msgspec

from ._errors import InvalidFileObjectError
from ._keys import check_filename, check_object_path

__all__ = (
    "ATTRIBUTES",
    "COLUMN_FORMAT_VERSION",
    "FIELDS",
    "KNOWN_KEYS",
    "UPLOAD_FACTS",
    "ColumnRow",
    "FileCodec",
    "ImageFacts",
    "ObjectFacts",
    "Serializable",
    "column_json_schema",
    "column_value",
    "is_renditions",
    "retarget",
    "rewrite_stored_files",
    "stored_files",
    "to_dict",
    "without_renditions",
)

COLUMN_FORMAT_VERSION = 1
"""Version of the JSON shape written by `FileObject.to_dict()` (the `"v"` field)."""


class _Role:
    """A marker in a field's `Annotated` metadata (msgspec ignores it)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


_UPLOADED = _Role("written by an upload")
"""Marks the facts a save records about the object it wrote (see `UPLOAD_FACTS`)."""

_Timestamp = Annotated[datetime, msgspec.Meta(extra_json_schema={"format": "date-time"})]
_Pixels = Annotated[int, msgspec.Meta(ge=1)]


class ImageFacts(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """What an image policy learnt of a stored image: its size, and what made it.

    Recorded in a column value's `image` field when an
    [`ImagePolicy`][sqlalchemy_obstore.processing.ImagePolicy] processed the upload (for
    the original and for each rendition), and by
    [`reprocess`][sqlalchemy_obstore.reprocessing.reprocess] for files stored before.

    Attributes:
        width: Width in pixels, as displayed (the EXIF orientation applied).
        height: Height in pixels, as displayed.
        spec: For a rendition, the
            [`Rendition.spec`][sqlalchemy_obstore.processing.Rendition.spec] it was made
            to; `reprocess` rebuilds a rendition whose spec differs from the policy's.
            `None` for an original.

    Example:
        >>> ImageFacts(width=640, height=480).width
        640
    """

    width: _Pixels
    height: _Pixels
    spec: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The facts in the column shape (`spec` only when there is one)."""
        data: dict[str, Any] = {"width": self.width, "height": self.height}
        if self.spec is not None:
            data["spec"] = self.spec
        return data


class ColumnRow(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One stored file in a column, as JSON: the column format, field by field.

    msgspec decodes and type-checks column text (or the driver's dict) into this in C.
    A value that does not fit (an unknown field, a field of another type, a rendition
    of another shape, no `content_type`) fails to decode, and the caller takes the
    general path, which keeps unknown fields, checks the path, and reports malformed
    values. That path is lenient: only `path` is required there; a missing `filename`
    is the last segment of `path`, a missing `content_type` is guessed from the
    filename.

    Attributes:
        v: Format version (`COLUMN_FORMAT_VERSION`).
        backend: Backend key; `None` means the column's backend.
        path: Object key in the backend.
        filename: Display name, as uploaded.
        content_type: MIME type.
        content_encoding: `"gzip"` when the object is stored compressed (see
            `SaveOptions.compress`); `size` and `checksum` then describe the stored,
            compressed bytes. Written only when set.
        size: Size in bytes (of the bytes stored).
        etag: Entity tag the store reported.
        version: Version id the store reported.
        checksum: `"<algorithm>:<hex>"` of the content.
        last_modified: When the object was written.
        metadata: Custom str→str metadata (also sent to the store as object metadata).
        info: Row-only JSON values, nested ones included (never sent to the store;
            written only when there are some; `UNSET` when absent).
        renditions: Derived files stored beside this one, by name (written only when
            there are some; `UNSET` when absent, which costs no dict per decoded row).
        image: The image's size (and a rendition's spec), when an image policy
            processed it (see `ImageFacts`; written only then).
    """

    v: Annotated[int, msgspec.Meta(extra_json_schema={"const": COLUMN_FORMAT_VERSION})] = (
        COLUMN_FORMAT_VERSION
    )
    backend: str | None = None
    path: Annotated[str, msgspec.Meta(min_length=1), _UPLOADED]
    filename: str | None = None
    content_type: Annotated[str, msgspec.Meta(min_length=1)]
    content_encoding: Annotated[str | None, _UPLOADED] = None
    size: Annotated[int | None, _UPLOADED] = None
    etag: Annotated[str | None, _UPLOADED] = None
    version: Annotated[str | None, _UPLOADED] = None
    checksum: Annotated[str | None, _UPLOADED] = None
    last_modified: Annotated[_Timestamp | None, _UPLOADED] = None
    metadata: dict[str, str] = {}
    info: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET
    renditions: dict[str, ColumnRow] | msgspec.UnsetType = msgspec.UNSET
    image: ImageFacts | msgspec.UnsetType = msgspec.UNSET


def _marked(role: _Role) -> tuple[str, ...]:
    fields = msgspec.structs.fields(ColumnRow)
    return tuple(f.name for f in fields if role in getattr(f.type, "__metadata__", ()))


FIELDS: tuple[str, ...] = ColumnRow.__struct_fields__
"""Every field of the column format, in the order `to_dict` writes them."""

KNOWN_KEYS = frozenset(FIELDS)
"""The keys a column value may hold besides unknown (preserved) ones."""

_CONTAINERS = ("metadata", "info", "renditions", "image")
"""Fields a `FileObject` holds in internals of its own (`_metadata`, `_info`,
`_renditions`, `_image`)."""

ATTRIBUTES: tuple[str, ...] = tuple(n for n in FIELDS if n != "v" and n not in _CONTAINERS)
"""The fields a `FileObject` holds as plain attributes (assigning one marks the row
dirty); the rest are the format version and the containers."""

UPLOAD_FACTS: tuple[str, ...] = _marked(_UPLOADED)
"""The fields a save records about the object it wrote: what a session restores when it
undoes the upload (the content type stays, it describes the content)."""

_FLAT_KEYS = KNOWN_KEYS - {"renditions", "image"}
_WRITTEN = tuple(name for name in ATTRIBUTES if name != "content_encoding")
"""The attributes `to_dict` always writes (`content_encoding` only when set)."""
_JSON_SCHEMA_NOTES = {
    "metadata": "Custom str→str metadata, also sent to the object store as object metadata.",
    "info": "Row-only JSON values (nested allowed), never sent to the object store.",
}


# -- JSON schema --------------------------------------------------------------------------------
def _inline_references(node: Any) -> Any:
    """`node` with each `$ref` (a nested rendition) replaced by a plain object schema."""
    if isinstance(node, dict):
        if "$ref" in node:
            return {"type": "object"}
        return {key: _inline_references(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline_references(item) for item in node]
    return node


@cache
def _schema() -> dict[str, Any]:
    components = msgspec.json.schema(ColumnRow)
    schema: dict[str, Any] = _inline_references(components["$defs"][ColumnRow.__name__])
    schema["title"] = "FileObject"
    schema["description"] = "A file stored in an object store (sqlalchemy-obstore column format)."
    schema["additionalProperties"] = True  # unknown fields are preserved, not refused
    schema["required"] = ["path"]  # the general path reads older, sparser values too
    for name, note in _JSON_SCHEMA_NOTES.items():
        schema["properties"][name].setdefault("description", note)
    return schema


def column_json_schema() -> dict[str, Any]:
    """The JSON schema of the column shape written by `FileObject.to_dict()`.

    Only `path` is required (reading is lenient); unknown fields are allowed, as the
    column format preserves them. Renditions are described as objects (each one is a
    file in this same shape). A new dict each call: change it freely.

    Example:
        >>> from sqlalchemy_obstore.file_object import column_json_schema
        >>> schema = column_json_schema()
        >>> schema["required"] == ["path"]
        True
        >>> "last_modified" in schema["properties"]
        True
    """
    return copy.deepcopy(_schema())


# -- encoding -----------------------------------------------------------------------------------
def to_dict(d: Mapping[str, Any]) -> dict[str, Any]:
    """The column value of a file, from its state (`file.__dict__`).

    Unknown fields read from a newer column format (`_extra`) come first, unchanged.
    """
    data: dict[str, Any] = dict(d["_extra"])
    data["v"] = COLUMN_FORMAT_VERSION
    for name in _WRITTEN:
        data[name] = d[name]
    encoding = d["content_encoding"]
    if encoding is not None:  # (written only when set: other rows stay as they were)
        data["content_encoding"] = encoding
    modified = d["last_modified"]
    if modified is not None:
        data["last_modified"] = modified.isoformat()
    data["metadata"] = dict(d["_metadata"] or ())
    info = d["_info"]
    if info:
        data["info"] = copy.deepcopy(dict(info))  # (a copy: the caller may keep it)
    renditions = d["_renditions"]
    if renditions:
        data["renditions"] = {name: r.to_dict() for name, r in renditions.items()}
    image = d["_image"]
    if image is not None:
        data["image"] = image.to_dict()
    return data


class Serializable(Protocol):
    """What `column_value` needs of a file."""

    @property
    def is_saved(self) -> bool: ...

    def to_dict(self) -> dict[str, Any]: ...


def column_value(file: Serializable) -> dict[str, Any]:
    """The column shape of a saved file, for serialisers (Pydantic, msgspec, Litestar).

    Raises:
        InvalidFileObjectError: If the file is not saved: its `path` would be null and
            could not be read back.
    """
    if not file.is_saved:
        raise InvalidFileObjectError(
            f"{file!r} has not been saved, so it has no column shape to serialise (its "
            "'path' would be null and could not be read back). Save it, or commit the "
            "session that uploads it, before serialising."
        )
    return file.to_dict()


# -- decoding -----------------------------------------------------------------------------------
def is_renditions(value: object) -> TypeGuard[Mapping[str, Mapping[str, Any]]]:
    """Whether `value` is the column shape of renditions: name → stored file."""
    return isinstance(value, Mapping) and all(
        isinstance(name, str) and isinstance(item, Mapping) and isinstance(item.get("path"), str)
        for name, item in value.items()
    )


_F = TypeVar("_F")

_decode_row = msgspec.json.Decoder(ColumnRow).decode


class FileCodec(Generic[_F]):
    """Builds files of one type from column values, filling each file's `__dict__`.

    Args:
        new: Makes an empty file (without running `__init__`).
        loaded: The state every file loaded from a column starts with; the codec then
            writes the fields (`ATTRIBUTES`) and `_registry`, `_untrusted`,
            `_metadata`, `_info`, `_renditions`, `_image` and `_extra`.
        metadata: Wraps a loaded file's metadata dict: `metadata(file, data)`.
        info: Wraps a loaded file's info dict (checking it): `info(file, data)`.
    """

    __slots__ = ("_info", "_loaded", "_metadata", "_new")

    def __init__(
        self,
        new: Callable[[], _F],
        loaded: Mapping[str, Any],
        metadata: Callable[[_F, dict[str, str]], Any],
        info: Callable[[_F, dict[str, Any]], Any],
    ) -> None:
        self._new = new
        self._loaded = loaded
        self._metadata = metadata
        self._info = info

    def from_row(
        self,
        row: ColumnRow,
        default_backend: str | None,
        registry: object,
        untrusted: bool = False,
    ) -> _F | None:
        """A file filled in directly from a checked row.

        `None` when a rendition names another backend than its original: the general
        path (`from_mapping`) reports that.
        """
        file = self._new()
        d = file.__dict__  # (filled in place: faster than assigning a new __dict__)
        d.update(self._loaded)  # one C call for the internals every loaded file shares
        if registry is not None:
            d["_registry"] = registry
        if untrusted:
            d["_untrusted"] = True
        path = row.path
        d["backend"] = backend = row.backend or default_backend
        d["path"] = path
        filename = row.filename
        d["filename"] = check_filename(filename) if filename else path.rsplit("/", 1)[-1]
        d["content_type"] = row.content_type
        d["content_encoding"] = row.content_encoding
        d["size"] = row.size
        d["etag"] = row.etag
        d["version"] = row.version
        d["checksum"] = row.checksum
        modified = row.last_modified
        if modified is not None and modified.tzinfo is None:
            modified = modified.replace(tzinfo=timezone.utc)
        d["last_modified"] = modified
        if row.metadata:
            d["_metadata"] = self._metadata(file, row.metadata)
        if row.info:  # (checked and copied by the wrapper: a dict may come from anywhere)
            d["_info"] = self._info(file, row.info)
        if row.renditions:
            renditions = {}
            for name, item in row.renditions.items():
                rendition = self.from_row(item, backend, registry, untrusted)
                if rendition is None or rendition.__dict__["backend"] != backend:
                    return None
                renditions[name] = rendition
            d["_renditions"] = renditions
        if row.image:
            d["_image"] = row.image
        return file

    def from_json(
        self, text: str | bytes, default_backend: str | None, registry: object
    ) -> _F | None:
        """A loaded file straight from column text in the format, else `None`.

        Decoding the driver's text straight into `ColumnRow` type-checks every field and
        parses the timestamp in one C call, and costs less than `json.loads` alone.
        """
        try:
            row = _decode_row(text)
        except msgspec.DecodeError:  # (ValidationError is a DecodeError)
            return None
        return self.from_row(row, default_backend, registry)

    def from_builtins(
        self,
        data: Mapping[str, Any],
        default_backend: str | None,
        registry: object,
        untrusted: bool = False,
    ) -> _F | None:
        """A file from a decoded mapping in the format (checked in C), else `None`."""
        try:
            row = msgspec.convert(data, ColumnRow)
        except msgspec.ValidationError:
            return None
        return self.from_row(row, default_backend, registry, untrusted)

    def from_mapping(
        self,
        data: Mapping[str, Any],
        default_backend: str | None,
        registry: object,
        trusted: bool,
        construct: Callable[..., _F],
        fast: bool,
    ) -> _F:
        """`FileObject.from_dict`: any mapping in the column shape, fully validated.

        The usual shape takes `from_builtins` when `fast` (the file type is exactly the
        codec's); anything else goes through `construct` (the file type's constructor,
        called with the fields as keywords), keeping unknown fields.
        """
        if not isinstance(data, Mapping):
            raise InvalidFileObjectError(f"Expected a JSON object, got {type(data).__name__}.")
        path = data.get("path")
        if not isinstance(path, str) or not path:
            raise InvalidFileObjectError(f"A stored file needs a non-empty 'path', got {path!r}.")
        check_object_path(path)
        if fast:
            try:
                row = msgspec.convert(data, ColumnRow)
            except msgspec.ValidationError:
                pass
            except UnicodeError as exc:  # a lone surrogate in a key: not text, not storable
                raise InvalidFileObjectError(f"Malformed stored file: {exc}.") from None
            else:
                if file := self.from_row(row, default_backend, registry, not trusted):
                    return file
        fields = {name: data.get(name) for name in ATTRIBUTES}
        fields["backend"] = fields["backend"] or default_backend
        fields["filename"] = fields["filename"] or path.rsplit("/", 1)[-1]
        fields["metadata"] = data.get("metadata") or {}
        fields["info"] = data.get("info") or None
        try:
            file = construct(**fields, registry=registry)
        except (InvalidFileObjectError, ValueError, TypeError) as exc:
            raise InvalidFileObjectError(f"Malformed stored file {dict(data)!r}: {exc}") from exc
        d = file.__dict__
        d["_untrusted"] = not trusted
        renditions = data.get("renditions")
        if not is_renditions(renditions):
            renditions = None  # (a "renditions" field of another shape is kept as unknown)
        image = _image_facts(data.get("image"))  # (one of another shape is kept as unknown)
        known = _FLAT_KEYS
        if renditions is not None:
            known = known | {"renditions"}
        if image is not None:
            known = known | {"image"}
            d["_image"] = image
        if not data.keys() <= known:
            d["_extra"] = {k: v for k, v in data.items() if k not in known}
        if renditions is not None:
            parsed = {}
            backend = d["backend"]
            for name, item in renditions.items():
                rendition = self.from_mapping(item, backend, registry, trusted, construct, fast)
                if rendition.__dict__["backend"] != backend:
                    raise InvalidFileObjectError(
                        f"Rendition {name!r} of {path!r} names backend "
                        f"{rendition.__dict__['backend']!r}, but renditions are stored beside "
                        f"their original, in backend {backend!r}."
                    )
                parsed[name] = rendition
            d["_renditions"] = parsed
        return file


def _image_facts(value: object) -> ImageFacts | None:
    """`value` as image facts, or `None` when it is absent or of another shape."""
    if value is None:
        return None
    try:
        return msgspec.convert(value, ImageFacts)
    except msgspec.ValidationError:
        return None


# -- raw column JSON (garbage collection, migration) --------------------------------------------
_Entry = tuple[Mapping[str, Any], str]


def _reference(data: Mapping[str, Any], default_backend: str | None) -> tuple[Any, Any]:
    """The `(backend, path)` a raw stored file names (either may be malformed)."""
    return data.get("backend") or default_backend, data.get("path")


def stored_files(value: Any, default_backend: str | None) -> Iterator[_Entry]:
    """Each stored file of a raw column value (a file or a list), renditions included.

    Yields `(entry, backend)`: the file's raw mapping (its `path` a non-empty string)
    and the backend it lives in (its own, else its original's, else `default_backend`).
    Malformed parts are skipped, so a bad row cannot hide the references of others.
    """
    for item in value if isinstance(value, list) else [value]:
        yield from _stored_file(item, default_backend)


def _stored_file(data: Any, default_backend: str | None) -> Iterator[_Entry]:
    if not isinstance(data, Mapping):
        return
    backend, path = _reference(data, default_backend)
    if isinstance(path, str) and path and isinstance(backend, str):
        yield data, backend
    renditions = data.get("renditions")
    if isinstance(renditions, Mapping):
        for item in renditions.values():
            yield from _stored_file(item, backend if isinstance(backend, str) else None)


def rewrite_stored_files(
    value: Any,
    default_backend: str | None,
    edit: Callable[[dict[str, Any], str], None],
) -> Any:
    """A copy of a raw column value in which `edit(entry, backend)` changed each file.

    Every stored file (renditions included, as `stored_files` finds them) is copied and
    its copy handed to `edit` with the backend it lives in; the rest is copied as is.
    """
    if isinstance(value, list):
        return [rewrite_stored_files(item, default_backend, edit) for item in value]
    if not isinstance(value, Mapping):
        return value
    new = dict(value)
    backend, path = _reference(value, default_backend)
    if isinstance(path, str) and path and isinstance(backend, str):
        edit(new, backend)
    renditions = value.get("renditions")
    if isinstance(renditions, Mapping):
        parent = backend if isinstance(backend, str) else None
        new["renditions"] = {
            name: rewrite_stored_files(item, parent, edit) for name, item in renditions.items()
        }
    return new


class ObjectFacts(Protocol):
    """What a store reports about an object it holds (`backends.ObjectInfo` has these)."""

    @property
    def etag(self) -> str | None: ...

    @property
    def version(self) -> str | None: ...

    @property
    def last_modified(self) -> datetime: ...


def retarget(entry: dict[str, Any], backend: str, facts: ObjectFacts | None) -> None:
    """Point a raw stored file at `backend`, with the facts that store reports (if known)."""
    entry["backend"] = backend
    if facts is not None:  # the new store's own etag / version / time
        entry["etag"] = facts.etag
        entry["version"] = facts.version
        entry["last_modified"] = facts.last_modified.isoformat()


def without_renditions(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A raw stored file on its own: its renditions left out."""
    return {k: v for k, v in entry.items() if k != "renditions"}
