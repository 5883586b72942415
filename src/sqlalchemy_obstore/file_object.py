"""`FileObject`, the mutable value stored in a `StoredObject` column.

A `FileObject` is either *pending* (it holds content that has not been uploaded yet) or
*stored* (it refers to an object by backend key and path). Saving uploads the content
under a fresh key and turns a pending file into a stored one; the session integration
does that automatically during flush.

It is a SQLAlchemy
[`Mutable`](https://docs.sqlalchemy.org/en/20/orm/extensions/mutable.html): changing its
filename, content type or metadata in place marks the owning row dirty, and
[`FileObjectList`][sqlalchemy_obstore.FileObjectList] does the same for list columns.

Every I/O method has a sync twin without the `_async` suffix; both call the backend's
native obstore operation.
"""

from __future__ import annotations

import hashlib
import weakref
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from functools import partial
from types import MappingProxyType
from typing import (
    TYPE_CHECKING,
    Annotated,
    Any,
    ClassVar,
    SupportsIndex,
    TypeGuard,
    TypeVar,
    overload,
)

import msgspec
from sqlalchemy import event, inspect
from sqlalchemy.ext.mutable import Mutable, MutableList
from sqlalchemy.orm.attributes import flag_modified

from ._attributes import content_disposition, guess_content_type, object_attributes
from ._content import (
    ContentCheckpoint,
    ContentReader,
    ContentSource,
    content_kind,
    format_checksum,
)
from ._io import run_async, run_sync
from ._sign import (
    cached_url,
    signed_download,
    signed_download_async,
    signed_upload,
    signing_files,
    signing_upload,
)
from .backends import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MAX_CONCURRENCY,
    Backend,
    ObstoreBackend,
    SignedURL,
    WriteResult,
)
from .errors import (
    ChecksumMismatchError,
    FileObjectError,
    InvalidFileObjectError,
    NoContentError,
)
from .keys import (
    KeyFunction,
    _default_key,
    build_key,
    check_filename,
    check_object_path,
    join_key,
    sanitize_filename,
)
from .processing import (
    ImagePolicy,
    _Derived,
    _process_image,
    _process_image_async,
    _Processed,
    rendition_path,
)
from .registry import BackendRegistry, storages
from .validation import UploadPolicy, _Guard, effective_policy

if TYPE_CHECKING:
    from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
    from pydantic.json_schema import JsonSchemaValue
    from pydantic_core import CoreSchema
    from typing_extensions import Self

__all__ = (
    "COLUMN_FORMAT_VERSION",
    "FileObject",
    "FileObjectList",
    "SaveOptions",
    "column_json_schema",
    "sign_files",
    "sign_files_async",
)

COLUMN_FORMAT_VERSION = 1
"""Version of the JSON shape written by `FileObject.to_dict()` (the `"v"` field)."""

_KNOWN_KEYS = frozenset(
    {
        "v",
        "backend",
        "path",
        "filename",
        "content_type",
        "size",
        "etag",
        "version",
        "checksum",
        "last_modified",
        "metadata",
    }
)
_TRACKED_FIELDS = frozenset(
    {
        "backend",
        "path",
        "filename",
        "content_type",
        "size",
        "etag",
        "version",
        "checksum",
        "last_modified",
    }
)
_T = TypeVar("_T")
_UNPICKLED = frozenset({"_parents", "_parent", "_parent_key", "_more_parents", "_containers"})
_NOTHING: Mapping[Any, Any] = MappingProxyType({})
"""Shared, read-only and empty: what a new file holds as its unknown fields, renditions,
signed-URL cache and containers until one is written (then it gets its own dict).
Fewer objects per file make loading many rows cheaper (less for the GC to traverse)."""


@dataclass(frozen=True, slots=True)
class SaveOptions:
    """How new content is uploaded: key layout and multipart tuning.

    Columns carry one of these (built from their arguments); `FileObject.save` builds
    one from its keyword arguments.

    Attributes:
        key_prefix: Extra prefix after the backend's prefix.
        key_function: Layout of the key below the prefixes (default `<uuid>/<name>`).
        use_multipart: Force (`True`) or forbid (`False`) multipart uploads.
        chunk_size: Multipart part size; content up to this size is one PUT.
        max_concurrency: Parts uploaded at once.
        cache_control: `Cache-Control` stored with the object.
        policy: [`UploadPolicy`][sqlalchemy_obstore.validation.UploadPolicy] layered on
            the backend's default policy (field by field) for this upload.
    """

    key_prefix: str | None = None
    key_function: KeyFunction | None = None
    use_multipart: bool | None = None
    chunk_size: int = DEFAULT_CHUNK_SIZE
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    cache_control: str | None = None
    policy: UploadPolicy | None = None


_DEFAULT_SAVE_OPTIONS = SaveOptions()


def _flag_holders(value: Mutable) -> None:
    """Flag the rows whose attribute currently holds `value` as modified.

    Like `Mutable.changed`, but a row whose attribute no longer holds this value (it
    was reassigned, or expired by a commit or rollback and not loaded again) is left
    alone: the value does not belong to it anymore, and SQLAlchemy would refuse to flag
    an attribute that is not loaded.
    """
    if isinstance(value, FileObject):
        d = value.__dict__
        if d.get("_parent") is None and not d.get("_more_parents"):
            return  # never held by a row
        holders = value._parents.items()
    else:
        parents = value.__dict__.get("_parents")  # created on first use: none yet, no holder
        if not parents:
            return
        holders = list(parents.items())
    for state, key in holders:
        holder = state.obj()
        if holder is not None and state.dict.get(key) is value:
            flag_modified(holder, key)


class _Parents:
    """The rows holding a file: `InstanceState` → attribute key, the states held weakly.

    What `Mutable._parents` (a `WeakKeyDictionary`) does, for the operations SQLAlchemy
    and this package use (`[state] = key`, `pop`, `get`, `items`, ...), without a
    container per file: the first holder is kept in the file's own `__dict__` (one
    weak reference and its key), further ones in a dict created only when a file is
    held by several rows at once. A file is built for every row loaded, so this keeps
    loading cheap. This object is only a view, created on each `file._parents` access.
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


class _Metadata(dict[str, str]):
    """A str→str dict that tells its `FileObject` when it changes."""

    __slots__ = ("_owner",)

    def __init__(self, owner: FileObject, data: Mapping[str, str] | None):
        if data:
            super().__init__(_check_metadata(data))
        self._owner = weakref.ref(owner)

    def _changed(self) -> None:
        owner = self._owner()
        if owner is not None:
            owner.changed()

    def __setitem__(self, key: str, value: str) -> None:
        super().__setitem__(*_check_metadata_item(key, value))
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

    def popitem(self) -> tuple[str, str]:
        item = super().popitem()
        self._changed()
        return item

    def setdefault(self, key: str, default: str = "") -> str:
        if key not in self:
            self[key] = default
        return self[key]

    def update(self, *args: Any, **kwargs: str) -> None:
        super().update(_check_metadata(dict(*args, **kwargs)))
        self._changed()

    def __ior__(self, other: Any) -> Self:  # type: ignore[override,misc]
        self.update(other)
        return self

    def __reduce__(self) -> Any:
        return (dict, (dict(self),))


def _check_metadata_item(key: object, value: object) -> tuple[str, str]:
    if not isinstance(key, str) or not isinstance(value, str):
        raise InvalidFileObjectError(
            f"metadata maps str to str; got {type(key).__name__} → {type(value).__name__}. "
            "Encode other values (for example as JSON) first."
        )
    return key, value


def _check_metadata(data: Mapping[str, str] | None) -> dict[str, str]:
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise InvalidFileObjectError(f"metadata must be a mapping, not {type(data).__name__}.")
    return dict(_check_metadata_item(k, v) for k, v in data.items())


def _parse_datetime(value: object) -> datetime | None:
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


def _optional(value: object, kind: type[_T], name: str) -> _T | None:
    if value is None or (isinstance(value, kind) and not isinstance(value, bool)):
        return value
    raise InvalidFileObjectError(f"{name} must be {kind.__name__} or None, not {value!r}.")


def _check_filename(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidFileObjectError(f"filename must be a string, not {type(value).__name__}.")
    return check_filename(value)


def _check_content_type(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidFileObjectError(f"content_type must be a non-empty string, not {value!r}.")
    return value


_FIELD_CHECKS: dict[str, Callable[[Any], Any]] = {
    "filename": _check_filename,
    "backend": partial(_optional, kind=str, name="backend"),
    "path": lambda value: None if value is None else check_object_path(value),
    "content_type": _check_content_type,
    "size": partial(_optional, kind=int, name="size"),
    "etag": partial(_optional, kind=str, name="etag"),
    "version": partial(_optional, kind=str, name="version"),
    "checksum": partial(_optional, kind=str, name="checksum"),
    "last_modified": _parse_datetime,
}
"""What assigning each field checks (and converts): the same as the constructor."""


@dataclass(slots=True)
class _PendingUpload:
    backend: Backend
    path: str
    reader: ContentReader
    options: SaveOptions
    checkpoint: ContentCheckpoint
    guard: _Guard | None = None
    content_type: str | None = field(default=None)  # the sniffed type, when it differs
    image: ImagePolicy | None = None
    derived: tuple[_Derived, ...] = ()  # renditions to store with the original


class FileObject(Mutable):
    """A file stored, or about to be stored, in an object store.

    Build one with content to upload, or with the backend and path of an existing
    object. Every argument is keyword-only.

    Args:
        filename: The display name (the original upload name). It is kept as given in
            `filename`; only a sanitised form appears in object keys. Defaults to the
            name of a `Path` or file object, else the last segment of `path`.
        content: Content to upload: bytes, bytearray, memoryview, `pathlib.Path`, a
            binary file object, or a sync or async iterator of bytes.
        backend: Backend key; a file assigned to a column without one takes the
            column's backend.
        path: Key of an existing object (when there is no `content`).
        content_type: MIME type; guessed from the filename when not given.
        size: Size in bytes, for an existing object.
        etag: Entity tag, for an existing object.
        version: Version id, for an existing object.
        checksum: `"<algorithm>:<hex>"`, for an existing object.
        last_modified: Last-modified time, for an existing object.
        metadata: Custom str→str metadata, stored in the column and, where the store
            supports it, as object user metadata.
        registry: The registry that resolves `backend` (default: `storages`).

    Raises:
        InvalidFileObjectError: For unusable arguments (for example `str` content, or
            both `content` and `path`).

    Example:
        >>> from sqlalchemy_obstore import FileObject, ObstoreBackend, storages
        >>> with storages.temporary(ObstoreBackend("uploads", "memory://")):
        ...     f = FileObject(filename="hello.txt", content=b"hi", backend="uploads").save()
        ...     f.get_content(), f.size, f.content_type
        (b'hi', 2, 'text/plain')
    """

    # Declared for type checkers; values live in the instance __dict__ (Mutable needs it).
    backend: str | None
    path: str | None
    filename: str
    content_type: str
    size: int | None
    etag: str | None
    version: str | None
    checksum: str | None
    last_modified: datetime | None

    __hash__: ClassVar[None]  # type: ignore[assignment]  # mutable: not hashable

    @property
    def _parents(self) -> _Parents:  # type: ignore[override]  # rows holding it: see _Parents
        return _Parents(self.__dict__)

    def __init__(
        self,
        *,
        filename: str | None = None,
        content: ContentSource | None = None,
        backend: str | None = None,
        path: str | None = None,
        content_type: str | None = None,
        size: int | None = None,
        etag: str | None = None,
        version: str | None = None,
        checksum: str | None = None,
        last_modified: datetime | str | None = None,
        metadata: Mapping[str, str] | None = None,
        registry: BackendRegistry | None = None,
    ) -> None:
        if content is not None:
            if path is not None:
                raise InvalidFileObjectError(
                    "Pass either content= (to upload) or path= (an existing object), not both."
                )
            if content.__class__ is not bytes:
                content_kind(content)  # validate early
        if filename is None:
            filename = _default_filename(content, path)
        elif not isinstance(filename, str):
            raise InvalidFileObjectError(
                f"filename must be a string, not {type(filename).__name__}."
            )
        check_filename(filename)  # no NUL, no lone surrogate: storable and sendable
        # Written straight into the instance dict: a new file has no holder to notify.
        # (Exact-type checks first; anything else goes through the full validation.)
        d = self.__dict__
        d["_ready"] = False
        d["_content"] = content
        d["_registry"] = registry
        d["_sign_cache"] = _NOTHING
        d["_containers"] = _NOTHING
        d["_extra"] = _NOTHING
        d["_renditions"] = _NOTHING
        d["_metadata"] = _Metadata(self, metadata) if metadata else None
        d["_untrusted"] = False  # built by the application's own code
        d["backend"] = (
            backend
            if backend is None or backend.__class__ is str
            else _optional(backend, str, "backend")
        )
        d["path"] = None if path is None else check_object_path(path)
        d["filename"] = filename
        d["content_type"] = content_type or guess_content_type(filename)
        d["size"] = size if size is None or size.__class__ is int else _optional(size, int, "size")
        d["etag"] = etag if etag is None or etag.__class__ is str else _optional(etag, str, "etag")
        d["version"] = (
            version
            if version is None or version.__class__ is str
            else _optional(version, str, "version")
        )
        d["checksum"] = (
            checksum
            if checksum is None or checksum.__class__ is str
            else _optional(checksum, str, "checksum")
        )
        d["last_modified"] = (
            last_modified
            if last_modified is None or last_modified.__class__ is datetime
            else _parse_datetime(last_modified)
        )
        d["_ready"] = True

    # -- state ----------------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        check = _FIELD_CHECKS.get(name)
        if check is not None:  # a field is checked as the constructor checks it
            value = check(value)
        if name == "metadata":
            value = _Metadata(self, value)
            name = "_metadata"
        object.__setattr__(self, name, value)
        if (name in _TRACKED_FIELDS or name == "_metadata") and self.__dict__.get("_ready"):
            self.__dict__["_sign_cache"] = _NOTHING
            self.changed()

    @property
    def metadata(self) -> dict[str, str]:
        """Custom str→str metadata; in-place changes mark the owning row dirty."""
        d = self.__dict__
        metadata: _Metadata | None = d["_metadata"]
        if metadata is None:  # created on first use
            metadata = d["_metadata"] = _Metadata(self, None)
        return metadata

    @property
    def renditions(self) -> Mapping[str, FileObject]:
        """The stored renditions of this image, by name (read-only; empty if none).

        Generated on save from the policy's
        [`ImagePolicy.renditions`][sqlalchemy_obstore.processing.ImagePolicy], recorded
        in the column value and deleted together with the original. Each one is a
        stored `FileObject`: read, stream or sign it like any file.

        Example:
            >>> from sqlalchemy_obstore import FileObject
            >>> FileObject(backend="b", path="k/a.png").renditions
            mappingproxy({})
        """
        renditions: Mapping[str, FileObject] = self.__dict__["_renditions"]
        return renditions if renditions is _NOTHING else MappingProxyType(renditions)

    @property
    def has_pending_content(self) -> bool:
        """Whether there is content waiting to be uploaded."""
        return self.__dict__["_content"] is not None

    @property
    def is_saved(self) -> bool:
        """Whether the file refers to a stored object and has nothing pending."""
        return self.path is not None and not self.has_pending_content

    @property
    def safe_filename(self) -> str:
        """The filename with directories, control characters and `..` removed."""
        return sanitize_filename(self.filename)

    @property
    def url(self) -> str | None:
        """The public URL, when the backend has a `public_base_url`; else `None`."""
        if self.path is None or self.backend is None:
            return None
        return self._backend().public_url(self.path)

    def changed(self) -> None:
        """Mark every row (and list) holding this file as modified."""
        _flag_holders(self)
        containers = self.__dict__["_containers"]
        if not containers:
            return
        for ref in list(containers.values()):
            container = ref()
            if container is not None:
                container.changed()

    def _adopt(self, backend: str, registry: BackendRegistry | None) -> None:
        # Column defaults are not user changes: set them without marking anything dirty.
        d = self.__dict__
        if d["backend"] is None:
            d["backend"] = backend
        if d["_registry"] is None and registry is not None:
            d["_registry"] = registry

    def _take_stored_facts(self, source: FileObject) -> None:
        """Become the trusted `source` object again, keeping only this file's filename.

        The session calls this for an untrusted file accepted as the echo of what its
        row held (see `from_dict`): what the store holds is described by the row, not by
        the request body.
        """
        d, facts = self.__dict__, source.__dict__
        for name in _TRACKED_FIELDS - {"filename"}:
            d[name] = facts[name]
        d["_metadata"] = _Metadata(self, facts["_metadata"]) if facts["_metadata"] else None
        d["_extra"] = dict(facts["_extra"]) if facts["_extra"] else _NOTHING
        d["_renditions"] = dict(facts["_renditions"]) if facts["_renditions"] else _NOTHING
        d["_sign_cache"] = _NOTHING
        d["_untrusted"] = False

    def _attach(self, container: FileObjectList) -> None:
        d = self.__dict__
        if d["_containers"] is _NOTHING:
            d["_containers"] = {}
        d["_containers"][id(container)] = weakref.ref(container)

    def _detach(self, container: FileObjectList) -> None:
        containers = self.__dict__["_containers"]
        if containers:
            containers.pop(id(container), None)

    # -- column shape ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The JSON shape stored in the column (see the column format docs).

        Unknown fields read from a newer column format are written back unchanged.

        Example:
            >>> FileObject(backend="b", path="k/a.txt", size=1).to_dict()["path"]
            'k/a.txt'
        """
        data: dict[str, Any] = dict(self.__dict__["_extra"])
        data.update(
            {
                "v": COLUMN_FORMAT_VERSION,
                "backend": self.backend,
                "path": self.path,
                "filename": self.filename,
                "content_type": self.content_type,
                "size": self.size,
                "etag": self.etag,
                "version": self.version,
                "checksum": self.checksum,
                "last_modified": self.last_modified.isoformat() if self.last_modified else None,
                "metadata": dict(self.__dict__["_metadata"] or ()),
            }
        )
        renditions: dict[str, FileObject] = self.__dict__["_renditions"]
        if renditions:
            data["renditions"] = {name: r.to_dict() for name, r in renditions.items()}
        return data

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        *,
        default_backend: str | None = None,
        registry: BackendRegistry | None = None,
        trusted: bool = False,
    ) -> FileObject:
        """Rebuild a `FileObject` from its column shape.

        A column-shape dict names an object by backend and path, so where it comes from
        matters (see [the threat model](../explanation/security.md)). By default the
        result is **untrusted**: a session refuses to write it into a row
        (`UntrustedReferenceError`) unless the same row and column already hold that very
        object, the round trip of an edit form, and then the stored facts (size,
        checksum, type, metadata, renditions) are kept from the row, only `filename`
        from the dict. Pydantic validation, msgspec's `dec_hook` and assigning a dict to
        a column build untrusted files the same way.

        Pass `trusted=True` only for data the application itself vouches for (its own
        rows, a migration, an admin tool), never for a request body.

        Args:
            data: A mapping as produced by `to_dict`.
            default_backend: Backend to use when the data names none.
            registry: The registry that resolves the backend.
            trusted: Whether the application vouches for `data` (see above).

        Raises:
            InvalidFileObjectError: If `data` is not a valid column value (including a
                malformed `path`, see
                [`check_object_path`][sqlalchemy_obstore.keys.check_object_path], or a
                rendition on another backend than its original).

        Example:
            >>> f = FileObject.from_dict({"backend": "b", "path": "k/a.txt"})
            >>> f.filename, f.is_trusted
            ('a.txt', False)
            >>> FileObject.from_dict({"backend": "b", "path": "k/a.txt"}, trusted=True).is_trusted
            True
        """
        if not isinstance(data, Mapping):
            raise InvalidFileObjectError(f"Expected a JSON object, got {type(data).__name__}.")
        path = data.get("path")
        if not isinstance(path, str) or not path:
            raise InvalidFileObjectError(f"A stored file needs a non-empty 'path', got {path!r}.")
        check_object_path(path)
        if cls is FileObject and (file := _usual_shape(data, default_backend, registry)):
            file.__dict__["_untrusted"] = not trusted
            return file
        try:
            file = cls(
                backend=data.get("backend") or default_backend,
                path=path,
                filename=data.get("filename") or path.rsplit("/", 1)[-1],
                content_type=data.get("content_type"),
                size=data.get("size"),
                etag=data.get("etag"),
                version=data.get("version"),
                checksum=data.get("checksum"),
                last_modified=data.get("last_modified"),
                metadata=data.get("metadata") or {},
                registry=registry,
            )
        except (InvalidFileObjectError, ValueError, TypeError) as exc:
            raise InvalidFileObjectError(f"Malformed stored file {dict(data)!r}: {exc}") from exc
        file.__dict__["_untrusted"] = not trusted
        if data.keys() <= _KNOWN_KEYS:  # the usual case: nothing unknown to keep
            return file
        file.__dict__["_extra"] = {k: v for k, v in data.items() if k not in _KNOWN_KEYS}
        renditions = data.get("renditions")
        if _is_renditions(renditions):
            # (A "renditions" field of another shape is kept as an unknown field.)
            extra = file.__dict__["_extra"]
            del extra["renditions"]
            parsed = {}
            for name, item in renditions.items():
                rendition = cls.from_dict(
                    item, default_backend=file.backend, registry=registry, trusted=trusted
                )
                if rendition.backend != file.backend:
                    raise InvalidFileObjectError(
                        f"Rendition {name!r} of {path!r} names backend {rendition.backend!r}, "
                        f"but renditions are stored beside their original, in backend "
                        f"{file.backend!r}."
                    )
                parsed[name] = rendition
            file.__dict__["_renditions"] = parsed
        return file

    @property
    def is_trusted(self) -> bool:
        """Whether the application vouches for this file's reference (backend and path).

        `False` for a file decoded from outside data (`from_dict` without
        `trusted=True`, Pydantic validation, msgspec's `dec_hook`, a dict assigned to a
        column) until a session accepted it as the echo of what its row already held.
        Files built with the constructor, loaded from rows, saved or redeemed from an
        upload ticket are trusted. See `from_dict`.
        """
        return not self.__dict__["_untrusted"]

    # -- pydantic --------------------------------------------------------------------------------
    @classmethod
    def __get_pydantic_core_schema__(
        cls, source_type: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        """Let `FileObject` be a field type in Pydantic v2 models.

        Validation accepts a `FileObject` (passed through unchanged) or a dict in the
        column shape (rebuilt with `from_dict`). Serialisation gives `to_dict()`, in
        Python and JSON mode alike. A file that is not saved yet (pending content, no
        stored object) is refused with `InvalidFileObjectError`: its dict would have no
        `path` and could not be validated back.

        Pydantic is imported only here, so it stays an optional dependency.

        Example:
            >>> from pydantic import BaseModel
            >>> class Out(BaseModel):
            ...     file: FileObject
            >>> dumped = Out(file={"backend": "b", "path": "k/a.txt"}).model_dump()
            >>> dumped["file"].get("filename")
            'a.txt'
        """
        from pydantic_core import core_schema

        def validate(value: Any) -> FileObject:
            if isinstance(value, cls):
                return value
            if isinstance(value, Mapping):
                return cls.from_dict(value)
            kind = type(value).__name__
            raise InvalidFileObjectError(
                f"Expected a FileObject or a column-shape dict, not {kind}."
            )

        return core_schema.no_info_plain_validator_function(
            validate,
            serialization=core_schema.plain_serializer_function_ser_schema(
                _serialize, when_used="always"
            ),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """The JSON schema of the column shape (`path` required, unknown fields allowed).

        Example:
            >>> from pydantic import TypeAdapter
            >>> TypeAdapter(FileObject).json_schema()["required"] == ["path"]
            True
        """
        return column_json_schema()

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        filename: str | None = None,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        backend: str | None = None,
        timeout: float | None = 30.0,
        deadline: float | None = 300.0,
        max_size: int | None = None,
        max_redirects: int = 3,
        allow_private: bool = False,
        allow_networks: Iterable[str] = (),
        headers: Mapping[str, str] | None = None,
        forward_headers: Iterable[str] = (),
    ) -> FileObject:
        """A pending file whose content is downloaded from `url` when it is saved.

        Nothing is fetched here: the download happens in `save()` (with `httpx.Client`)
        or `save_async()` / an `AsyncSession` flush (with `httpx.AsyncClient`), and the
        body streams into storage chunk by chunk with bounded memory. A failed or
        rolled-back upload leaves the file pending: the next save downloads it again.

        Fetching is guarded against server-side request forgery: only http(s) URLs
        without credentials; the host is resolved and refused if any address is
        loopback, private, link-local (cloud metadata), CGNAT, multicast, reserved or
        a mapped form of those; the connection goes to the vetted address; redirects
        are re-checked hop by hop. See
        [`sqlalchemy_obstore.remote`][sqlalchemy_obstore.remote].

        When the response arrives, a `filename` not given here is taken from its
        `Content-Disposition` (else the final URL's last path segment) and a
        `content_type` not given here from its `Content-Type`. The object key is
        built before the download starts, from the name known then (the one given, or
        the URL's last path segment).

        Args:
            url: The `http://` or `https://` URL to download.
            filename: Display name; defaults as described above.
            content_type: MIME type; defaults to the response's `Content-Type`.
            metadata: Custom str→str metadata.
            backend: Backend key (or leave it to the column).
            timeout: Seconds for resolving, for connecting, and for each wait for data.
            deadline: Seconds for the whole fetch, redirects and body included
                (`RemoteTimeoutError` beyond it); `None` turns it off.
            max_size: Largest body accepted, in bytes (`FileTooLargeError` beyond it,
                checked against `Content-Length` and over the decoded bytes while
                streaming).
            max_redirects: Redirects to follow, each checked like the first URL.
            allow_private: Allow loopback, private and other blocked addresses.
            allow_networks: Blocked networks to allow anyway, e.g. `("10.1.0.0/16",)`.
            headers: Extra request headers, sent to the URL's origin only.
            forward_headers: Names of `headers` that may follow a redirect to another
                origin (never credentials).

        Raises:
            MissingDependencyError: If httpx is not installed (the `http` extra).
            ForbiddenAddressError: Now, for a URL that is not http(s), has credentials
                or names a blocked IP literal; at save time for blocked hosts and hops.
            RemoteTimeoutError: At save time, when a wait passes `timeout` or the whole
                fetch its `deadline`.
            RemoteFetchError: At save time, for a non-2xx answer, too many redirects,
                an undecodable body or a network failure.
            FileTooLargeError: At save time, when the body passes `max_size`.

        Example:
            >>> f = FileObject.from_url("https://example.com/files/report.pdf", backend="b")
            >>> f.filename, f.content_type, f.has_pending_content
            ('report.pdf', 'application/pdf', True)
        """
        from .remote import RemoteResponse, RemoteSource

        holder: list[weakref.ref[FileObject]] = []

        def on_response(response: RemoteResponse) -> None:
            file = holder[0]() if holder else None
            if file is None:
                return
            # Set without marking rows dirty: the save that is running does that.
            d = file.__dict__
            if filename is None and response.filename:
                d["filename"] = response.filename
            if content_type is None:
                d["content_type"] = response.content_type or guess_content_type(d["filename"])

        source = RemoteSource(
            url,
            timeout=timeout,
            deadline=deadline,
            max_size=max_size,
            max_redirects=max_redirects,
            allow_private=allow_private,
            allow_networks=allow_networks,
            headers=headers,
            forward_headers=forward_headers,
            on_response=on_response,
        )
        file = cls(
            filename=filename if filename is not None else source.filename or "file",
            content=source,
            content_type=content_type,
            metadata=metadata,
            backend=backend,
        )
        holder.append(weakref.ref(file))
        return file

    @classmethod
    def from_upload(
        cls,
        upload: Any,
        *,
        backend: str | None = None,
        filename: str | None = None,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> FileObject:
        """A pending file streamed from a Starlette/FastAPI or Litestar `UploadFile`.

        Nothing is read here; saving streams from the framework's spooled temporary
        file, and the column's upload policy applies as for any content. See
        [`file_from_upload`][sqlalchemy_obstore.uploads.file_from_upload].

        Example:
            >>> import io
            >>> from types import SimpleNamespace
            >>> upload = SimpleNamespace(file=io.BytesIO(b"hi"), filename="a.txt")
            >>> FileObject.from_upload(upload).size
            2
        """
        from .uploads import file_from_upload

        return file_from_upload(
            upload,
            backend=backend,
            filename=filename,
            content_type=content_type,
            metadata=metadata,
            file_class=cls,
        )

    # -- equality, repr, pickling ------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FileObject):
            return NotImplemented
        if self.path is None or other.path is None:
            return self is other
        return (self.backend, self.path) == (other.backend, other.path)

    def __repr__(self) -> str:
        fields = [f"filename={self.filename!r}"]
        if self.backend is not None:
            fields.append(f"backend={self.backend!r}")
        if self.path is not None:
            fields.append(f"path={self.path!r}")
        if self.size is not None:
            fields.append(f"size={self.size}")
        fields.append(f"content_type={self.content_type!r}")
        if self.has_pending_content:
            fields.append("pending=True")
        return f"FileObject({', '.join(fields)})"

    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in _UNPICKLED}
        state["_sign_cache"] = {}
        state["_metadata"] = dict(self.__dict__["_metadata"] or ())
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

    def __setstate__(self, state: dict[str, Any]) -> None:
        metadata = state.pop("_metadata", {})
        self.__dict__.update(state)
        self.__dict__["_containers"] = {}
        self.__dict__.setdefault("_renditions", {})
        self.__dict__.setdefault("_untrusted", False)
        self.__dict__["_metadata"] = _Metadata(self, metadata)

    # -- Mutable contract -------------------------------------------------------------------
    @classmethod
    def coerce(cls, key: str, value: Any) -> FileObject | None:
        """Convert a value assigned to a single-file column (`None`, FileObject or dict)."""
        if value is None or isinstance(value, FileObject):
            return value
        if isinstance(value, Mapping):
            return cls.from_dict(value)
        raise ValueError(
            f"Attribute {key!r} accepts a FileObject, a dict in the column shape or None, "
            f"not {type(value).__name__}."
        )

    @classmethod
    def _listen_on_attribute(cls, attribute: Any, coerce: bool, parent_cls: Any) -> None:
        """Wire in-place change tracking for one mapped attribute (SQLAlchemy's hook).

        Does what `Mutable` does (coerce values, remember the row that holds each file
        so `changed()` can flag it), with a load listener made for the hot path: a
        file just built from a row is bound to that row in two dictionary stores, with
        no coercion call and no parents view. Everything else behaves as in `Mutable`.
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
            if value.__class__ is not FileObject:
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
                oldvalue._parents.pop(inspect(target), None)
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

    # -- helpers ------------------------------------------------------------------------------
    def _backend(self) -> Backend:
        if self.backend is None:
            raise FileObjectError(
                f"{self!r} has no backend: pass backend= or assign it to a StoredObject column."
            )
        registry: BackendRegistry = self.__dict__["_registry"] or storages
        return registry.get_backend(self.backend)

    def _stored(self) -> tuple[Backend, str]:
        if self.path is None:
            raise NoContentError(
                f"{self!r} has not been saved yet: save it (or commit the session) first.",
                backend=self.backend,
            )
        return self._backend(), self.path

    # -- saving ---------------------------------------------------------------------------------
    def _plan_buffer(self, options: SaveOptions) -> tuple[Backend, str, dict[str, str]] | None:
        """`(backend, path, attributes)` when the upload can skip the streaming machinery.

        That is bytes content that fits in one part, with no policy anywhere (so no
        validator, sniffing or image processing) and no declared size to enforce: the
        body goes to the store as it is, one PUT that refuses to overwrite, and the
        checksum is one hash call. Everything else returns `None` and streams.
        """
        d = self.__dict__
        content = d["_content"]
        kind = content.__class__
        if (
            (kind is not bytes and kind is not bytearray)
            or d["size"] is not None
            or options.policy is not None
            or options.use_multipart is True
            or len(content) > options.chunk_size
        ):
            return None
        backend = self._backend()
        if getattr(backend, "policy", None) is not None:
            return None
        filename = d["filename"]
        prefix = backend.prefix
        if options.key_prefix:
            prefix = join_key(prefix, options.key_prefix)
        key_function = options.key_function or backend.key_function
        path = (
            _default_key(filename, prefix)
            if key_function is None
            else build_key(filename, prefix=prefix, key_function=key_function)
        )
        metadata = d["_metadata"]
        if metadata or options.cache_control:
            attributes = object_attributes(
                filename=filename,
                content_type=d["content_type"],
                metadata=metadata or {},
                cache_control=options.cache_control,
                include_metadata=getattr(backend, "write_metadata", True),
            )
        else:
            content_type = d["content_type"]
            attributes = {
                "Content-Type": content_type,
                "Content-Disposition": content_disposition(filename, content_type),
            }
        return backend, path, attributes

    def _finish_buffer(self, backend: Backend, path: str, result: WriteResult) -> None:
        """Record a finished `_plan_buffer` upload (what `_finish_upload` does, directly)."""
        d = self.__dict__
        content = d["_content"]
        algorithm = backend.checksum_algorithm
        d["path"] = path
        d["size"] = len(content)
        d["checksum"] = (
            f"{algorithm}:{_hash(algorithm, content)}" if algorithm is not None else None
        )
        d["etag"] = result.etag
        d["version"] = result.version
        d["last_modified"] = datetime.now(timezone.utc)
        d["_content"] = None
        d["_renditions"] = _NOTHING
        d["_sign_cache"] = _NOTHING
        if (
            self.__class__ is not FileObject
            or d.get("_parent") is not None
            or d.get("_more_parents")
            or d["_containers"]
        ):
            self.changed()  # (a file no row or list holds has nobody to tell)

    def _begin_upload(self, options: SaveOptions) -> _PendingUpload | None:
        content = self.__dict__["_content"]
        if content is None:
            if self.path is None:
                raise NoContentError(f"{self!r} has no content to save.", backend=self.backend)
            return None
        backend = self._backend()
        path = build_key(
            self.filename,
            prefix=join_key(backend.prefix, options.key_prefix),
            key_function=options.key_function or backend.key_function,
        )
        guard = _Guard(
            effective_policy(getattr(backend, "policy", None), options.policy),
            declared_size=self.size,
            backend=backend.key,
            path=path,
        )
        guard.check_name(self.filename)  # before a single byte is read
        checkpoint = ContentCheckpoint(content)
        reader = ContentReader(
            content,
            chunk_size=options.chunk_size,
            checksum_algorithm=backend.checksum_algorithm,
            observers=[guard.observe] if guard.active else (),
            end_observers=[guard.finish] if guard.active else (),
        )
        image = guard.policy.image if guard.policy is not None else None
        return _PendingUpload(backend, path, reader, options, checkpoint, guard, image=image)

    def _check_head(self, upload: _PendingUpload) -> None:
        """Sniff the type and run custom validators on the first part, before uploading."""
        if upload.guard is not None:
            upload.content_type = upload.guard.check_head(self, upload.reader.head)

    def _process(self, upload: _PendingUpload, data: bytes) -> bytes:
        """Validate and normalise an image held whole; remember its renditions."""
        assert upload.image is not None
        result = _process_image(data, upload.image, backend=upload.backend.key, path=upload.path)
        return self._processed(upload, data, result)

    async def _process_async(self, upload: _PendingUpload, data: bytes) -> bytes:
        """`_process` with the decoding and encoding in a worker thread, off the loop."""
        assert upload.image is not None
        result = await _process_image_async(
            data, upload.image, backend=upload.backend.key, path=upload.path
        )
        return self._processed(upload, data, result)

    def _processed(self, upload: _PendingUpload, data: bytes, result: _Processed) -> bytes:
        upload.content_type = result.content_type
        upload.derived = result.renditions
        if result.data is not data:
            # Normalised: size and checksum are those of the bytes stored.
            upload.reader = ContentReader(
                result.data,
                chunk_size=upload.options.chunk_size,
                checksum_algorithm=upload.backend.checksum_algorithm,
            )
            return bytes(upload.reader.open())
        return data

    def _rendition_uploads(
        self, upload: _PendingUpload
    ) -> list[tuple[str, _Derived, dict[str, Any]]]:
        """`(path, rendition, put arguments)` of each rendition to store."""
        jobs = []
        for derived in upload.derived:
            attributes = object_attributes(
                filename=self._rendition_filename(derived),
                content_type=derived.content_type,
                metadata={},
                cache_control=upload.options.cache_control,
                include_metadata=False,
            )
            arguments = {"attributes": attributes, "create_only": True}
            jobs.append((rendition_path(upload.path, derived.rendition), derived, arguments))
        return jobs

    def _rendition_filename(self, derived: _Derived) -> str:
        stem = self.filename.rsplit(".", 1)[0] if "." in self.filename else self.filename
        return f"{stem}.{derived.rendition.name}.{derived.rendition.extension}"

    def _rendition_file(
        self, upload: _PendingUpload, path: str, derived: _Derived, result: WriteResult
    ) -> FileObject:
        algorithm = upload.backend.checksum_algorithm
        return FileObject(
            backend=upload.backend.key,
            path=path,
            filename=self._rendition_filename(derived),
            content_type=derived.content_type,
            size=len(derived.data),
            checksum=format_checksum(algorithm, hashlib.new(algorithm, derived.data).hexdigest())
            if algorithm
            else None,
            etag=result.etag,
            version=result.version,
            last_modified=datetime.now(timezone.utc),
            registry=self.__dict__["_registry"],
        )

    def _put_renditions(self, upload: _PendingUpload) -> dict[str, FileObject]:
        done: dict[str, FileObject] = {}
        try:
            for path, derived, arguments in self._rendition_uploads(upload):
                result = upload.backend.put(path, derived.data, **arguments)
                done[derived.rendition.name] = self._rendition_file(upload, path, derived, result)
        except BaseException:
            for stored in (upload.path, *(r.path for r in done.values() if r.path)):
                upload.backend.delete(stored)
            raise
        return done

    async def _put_renditions_async(self, upload: _PendingUpload) -> dict[str, FileObject]:
        done: dict[str, FileObject] = {}
        try:
            for path, derived, arguments in self._rendition_uploads(upload):
                result = await upload.backend.put_async(path, derived.data, **arguments)
                done[derived.rendition.name] = self._rendition_file(upload, path, derived, result)
        except BaseException:
            for stored in (upload.path, *(r.path for r in done.values() if r.path)):
                await upload.backend.delete_async(stored)
            raise
        return done

    def _late_error(self, upload: _PendingUpload) -> BaseException | None:
        """End checks a store skipped (it stopped reading early): the object must go."""
        guard = upload.guard
        if guard is None or not guard.active or guard.finished:
            return None
        try:
            guard.finish(upload.reader.size)
        except Exception as exc:
            return exc
        return None

    def _put_arguments(self, upload: _PendingUpload, body: Any) -> dict[str, Any]:
        backend = upload.backend
        # obstore ignores multipart in "create" mode, so refuse-to-overwrite is only asked
        # for content that goes up in one PUT anyway (it fits in one part).
        single_part = (
            not isinstance(body, (Iterator, AsyncIterator))
            and memoryview(body).nbytes <= upload.options.chunk_size
        )
        attributes = object_attributes(
            filename=self.filename,
            content_type=upload.content_type or self.content_type,
            metadata=self.metadata,
            cache_control=upload.options.cache_control,
            include_metadata=getattr(backend, "write_metadata", True),
        )
        return {
            "attributes": attributes,
            # A fresh key never exists; refuse to overwrite anyway (custom key functions).
            "create_only": single_part and upload.options.use_multipart is not True,
            "use_multipart": upload.options.use_multipart,
            "chunk_size": upload.options.chunk_size,
            "max_concurrency": upload.options.max_concurrency,
        }

    def _finish_upload(
        self,
        upload: _PendingUpload,
        result: WriteResult,
        renditions: dict[str, FileObject] | None = None,
    ) -> None:
        d = self.__dict__
        d["_ready"] = False
        try:
            d["_renditions"] = renditions or {}
            self.path = upload.path
            self.size = upload.reader.size
            self.checksum = upload.reader.checksum
            self.etag = result.etag
            self.version = result.version
            self.last_modified = datetime.now(timezone.utc)
            if upload.content_type is not None:
                self.content_type = upload.content_type
            d["_content"] = None
            d["_sign_cache"] = _NOTHING
        finally:
            d["_ready"] = True
        self.changed()

    def _upload_failed(self, upload: _PendingUpload, exc: BaseException) -> None:
        # Give the content back rewound, or mark a one-shot stream as used up: a retry
        # must never store only what is left of it.
        if upload.reader.started:
            self.__dict__["_content"] = upload.checkpoint.restore()
        # A validator that stopped the stream is the real cause; obstore may have
        # re-raised it or wrapped it.
        if upload.reader.error is not None and upload.reader.error is not exc:
            raise upload.reader.error from None

    def save(
        self,
        *,
        use_multipart: bool | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        key_prefix: str | None = None,
        key_function: KeyFunction | None = None,
        options: SaveOptions | None = None,
        policy: UploadPolicy | None = None,
    ) -> Self:
        """Upload pending content under a fresh key and record what the store reports.

        Content up to `chunk_size` goes up in one PUT (refused if the key exists);
        longer content streams as a multipart upload with bounded memory. A file with
        nothing pending that is already stored is left as it is.

        Args:
            use_multipart: Force or forbid multipart; by default decided by size.
            chunk_size: Multipart part size (and the single-PUT threshold).
            max_concurrency: Parts uploaded at once.
            key_prefix: Extra key prefix after the backend's prefix.
            key_function: Custom key layout for this save.
            options: All of the above as one object (overrides the keywords).
            policy: An [`UploadPolicy`][sqlalchemy_obstore.validation.UploadPolicy] for
                this upload, layered on `options.policy` and the backend's policy.

        Returns:
            This file, now stored.

        Raises:
            NoContentError: If there is neither content nor a stored object.
            BackendNotFoundError: If the backend key is not registered.
            ValidationError: If the policy refuses the content (nothing is stored; the
                file keeps its content, rewound where possible).
            StorageError: If the store refuses or fails the upload.

        Example:
            >>> from sqlalchemy_obstore import FileObject, ObstoreBackend, storages
            >>> from sqlalchemy_obstore.validation import UploadPolicy
            >>> with storages.temporary(ObstoreBackend("uploads", "memory://")):
            ...     f = FileObject(filename="a.txt", content=b"hi", backend="uploads")
            ...     f.save(policy=UploadPolicy(max_size=1024)).size
            2
        """
        options = _with_policy(
            options
            or _save_options(key_prefix, key_function, use_multipart, chunk_size, max_concurrency),
            policy,
        )
        plan = self._plan_buffer(options)
        if plan is not None:
            backend, path, attributes = plan
            content = self.__dict__["_content"]
            if backend.__class__ is ObstoreBackend:  # (the same put, fewer layers)
                result = backend._put_new(path, content, attributes, options.use_multipart)
            else:
                result = backend.put(path, content, **_buffer_put_arguments(attributes, options))
            self._finish_buffer(backend, path, result)
            return self
        upload = self._begin_upload(options)
        if upload is None:
            return self
        try:
            body = upload.reader.open()
            self._check_head(upload)
            if upload.image is not None:
                body = self._process(upload, _collect(body))
            result = upload.backend.put(upload.path, body, **self._put_arguments(upload, body))
            if (late := self._late_error(upload)) is not None:
                upload.backend.delete(upload.path)
                raise late
            renditions = self._put_renditions(upload)
        except BaseException as exc:
            self._upload_failed(upload, exc)
            raise
        self._finish_upload(upload, result, renditions)
        return self

    async def save_async(
        self,
        *,
        use_multipart: bool | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        key_prefix: str | None = None,
        key_function: KeyFunction | None = None,
        options: SaveOptions | None = None,
        policy: UploadPolicy | None = None,
    ) -> Self:
        """Async version of [`save`][sqlalchemy_obstore.file_object.FileObject.save].

        Also accepts async iterators as content.
        """
        options = _with_policy(
            options
            or _save_options(key_prefix, key_function, use_multipart, chunk_size, max_concurrency),
            policy,
        )
        plan = self._plan_buffer(options)
        if plan is not None:
            backend, path, attributes = plan
            result = await backend.put_async(
                path, self.__dict__["_content"], **_buffer_put_arguments(attributes, options)
            )
            self._finish_buffer(backend, path, result)
            return self
        upload = self._begin_upload(options)
        if upload is None:
            return self
        try:
            body = await upload.reader.open_async()
            self._check_head(upload)
            if upload.image is not None:
                body = await self._process_async(upload, await _collect_async(body))
            result = await upload.backend.put_async(
                upload.path, body, **self._put_arguments(upload, body)
            )
            if (late := self._late_error(upload)) is not None:
                await upload.backend.delete_async(upload.path)
                raise late
            renditions = await self._put_renditions_async(upload)
        except BaseException as exc:
            self._upload_failed(upload, exc)
            raise
        self._finish_upload(upload, result, renditions)
        return self

    # -- reading ----------------------------------------------------------------------------------
    def get_content(self) -> bytes:
        """Read the whole stored object into memory.

        Raises:
            NoContentError: If the file has not been saved.
            ObjectNotFoundError: If the object is missing from the store.
        """
        backend, path = self._stored()
        return backend.get_bytes(path)

    async def get_content_async(self) -> bytes:
        """Async version of
        [`get_content`][sqlalchemy_obstore.file_object.FileObject.get_content].
        """
        backend, path = self._stored()
        return await backend.get_bytes_async(path)

    def iter_chunks(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
        """Stream the stored object in chunks of about `chunk_size` bytes.

        Memory stays bounded by the chunk size, whatever the object's size.
        """
        backend, path = self._stored()
        return backend.iter_chunks(path, chunk_size=chunk_size)

    def iter_chunks_async(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> AsyncIterator[bytes]:
        """Async version of
        [`iter_chunks`][sqlalchemy_obstore.file_object.FileObject.iter_chunks].
        """
        backend, path = self._stored()
        return backend.iter_chunks_async(path, chunk_size=chunk_size)

    def get_range(self, start: int, length: int) -> bytes:
        """Read `length` bytes from offset `start` (fewer at the end of the object)."""
        backend, path = self._stored()
        return backend.get_range(path, start, length)

    async def get_range_async(self, start: int, length: int) -> bytes:
        """Async version of [`get_range`][sqlalchemy_obstore.file_object.FileObject.get_range]."""
        backend, path = self._stored()
        return await backend.get_range_async(path, start, length)

    def exists(self) -> bool:
        """Whether the stored object exists (`False` for an unsaved file)."""
        if self.path is None:
            return False
        backend, path = self._stored()
        return backend.exists(path)

    async def exists_async(self) -> bool:
        """Async version of [`exists`][sqlalchemy_obstore.file_object.FileObject.exists]."""
        if self.path is None:
            return False
        backend, path = self._stored()
        return await backend.exists_async(path)

    def _verifier(self) -> tuple[Backend, str, Any]:
        backend, path = self._stored()
        algorithm, _, digest = (self.checksum or "").partition(":")
        if not algorithm or not digest:
            raise FileObjectError(
                f"{self!r} has no checksum recorded, so it cannot be verified: it was stored "
                "by a backend with checksum_algorithm=None or created from a bare path.",
                backend=self.backend,
                path=self.path,
            )
        try:
            hasher = hashlib.new(algorithm)
        except ValueError as exc:
            raise FileObjectError(
                f"Cannot verify {self!r}: unknown checksum algorithm {algorithm!r}.",
                backend=self.backend,
                path=self.path,
            ) from exc
        return backend, path, hasher

    def _verified(self, backend: Backend, path: str, hasher: Any, size: int) -> bool:
        expected = self.checksum or ""
        algorithm = expected.partition(":")[0]
        actual = f"{algorithm}:{hasher.hexdigest()}"
        if actual.lower() != expected.lower() or (self.size is not None and size != self.size):
            raise ChecksumMismatchError(
                expected=expected,
                actual=actual,
                expected_size=self.size,
                actual_size=size,
                backend=backend.key,
                path=path,
            )
        return True

    def verify(self, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> bool:
        """Re-read the stored object and check it against the recorded checksum and size.

        The object is streamed (memory stays bounded by `chunk_size`) and hashed with
        the algorithm recorded in `checksum`.

        Returns:
            `True` when the object matches.

        Raises:
            ChecksumMismatchError: If the stored bytes differ from what was recorded.
            ObjectNotFoundError: If the object is missing.
            FileObjectError: If no checksum is recorded (or its algorithm is unknown).
            NoContentError: If the file has not been saved.

        Example:
            >>> from sqlalchemy_obstore import FileObject, ObstoreBackend, storages
            >>> with storages.temporary(ObstoreBackend("uploads", "memory://")):
            ...     FileObject(filename="a.txt", content=b"hi", backend="uploads").save().verify()
            True
        """
        backend, path, hasher = self._verifier()
        size = 0
        for chunk in backend.iter_chunks(path, chunk_size=chunk_size):
            hasher.update(chunk)
            size += len(chunk)
        return self._verified(backend, path, hasher, size)

    async def verify_async(self, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> bool:
        """Async version of [`verify`][sqlalchemy_obstore.file_object.FileObject.verify]."""
        backend, path, hasher = self._verifier()
        size = 0
        async for chunk in backend.iter_chunks_async(path, chunk_size=chunk_size):
            hasher.update(chunk)
            size += len(chunk)
        return self._verified(backend, path, hasher, size)

    def _apply_info(self, info: Any) -> None:
        self.size = info.size
        self.etag = info.etag
        self.version = info.version
        self.last_modified = info.last_modified
        if info.content_type:
            self.content_type = info.content_type

    def refresh(self) -> Self:
        """Reload size, etag, version, last-modified and content type from the store.

        Raises:
            ObjectNotFoundError: If the object is missing.
        """
        backend, path = self._stored()
        self._apply_info(backend.head(path))
        return self

    async def refresh_async(self) -> Self:
        """Async version of [`refresh`][sqlalchemy_obstore.file_object.FileObject.refresh]."""
        backend, path = self._stored()
        self._apply_info(await backend.head_async(path))
        return self

    def delete(self) -> None:
        """Delete the stored object now (missing objects are not an error).

        This acts immediately and outside any transaction. To remove a file from a row,
        assign `None` (or remove it from the list) and commit: the session deletes the
        object only after the commit succeeded.
        """
        backend, path = self._stored()
        backend.delete(path)

    async def delete_async(self) -> None:
        """Async version of [`delete`][sqlalchemy_obstore.file_object.FileObject.delete]."""
        backend, path = self._stored()
        await backend.delete_async(path)

    # -- signing ----------------------------------------------------------------------------------
    def sign(self, *, expires_in: int | timedelta = 3600, for_upload: bool = False) -> str:
        """Return a signed URL for downloading (GET) or, with `for_upload`, uploading (PUT).

        Download URLs are cached on the object and reused while more than half of
        their lifetime remains, so a URL is never handed out nearly expired.

        An upload URL is only issued for a file that has no stored object yet: it gets a
        fresh key, the client PUTs the bytes there (sending
        `backend.upload_headers`), and `refresh()` then records size and etag.

        Args:
            expires_in: Lifetime in seconds or as a timedelta.
            for_upload: Sign a PUT instead of a GET.

        Raises:
            UnsupportedOperationError: If the store cannot sign (local, memory).
            InvalidExpiryError: If the lifetime is not positive or exceeds the store's
                limit (7 days on S3 and GCS).
        """
        if for_upload:
            return run_sync(signing_upload(self, expires_in))
        if (url := cached_url(self.__dict__, expires_in)) is not None:
            return url
        return signed_download(self, expires_in)

    async def sign_async(
        self, *, expires_in: int | timedelta = 3600, for_upload: bool = False
    ) -> str:
        """Async version of [`sign`][sqlalchemy_obstore.file_object.FileObject.sign]."""
        if for_upload:
            return await run_async(signing_upload(self, expires_in))
        if (url := cached_url(self.__dict__, expires_in)) is not None:
            return url
        return await signed_download_async(self, expires_in)

    def sign_upload(self, *, expires_in: int | timedelta = 300) -> SignedURL:
        """Like `sign(for_upload=True)`, returning the URL with the headers to send."""
        url = self.sign(expires_in=expires_in, for_upload=True)
        return signed_upload(self, url, expires_in)

    async def sign_upload_async(self, *, expires_in: int | timedelta = 300) -> SignedURL:
        """Async version of
        [`sign_upload`][sqlalchemy_obstore.file_object.FileObject.sign_upload].
        """
        url = await self.sign_async(expires_in=expires_in, for_upload=True)
        return signed_upload(self, url, expires_in)


def sign_files(files: Iterable[FileObject], *, expires_in: int | timedelta = 3600) -> list[str]:
    """Signed download URLs for many stored files, in order: one store call per backend.

    For a page of rows: URLs still in a file's cache are reused, the others are
    signed in one batch per backend (`Backend.sign` with a list of paths) and cached
    on their files, exactly as `FileObject.sign()` would.

    Args:
        files: Stored `FileObject`s, from any rows, columns and backends.
        expires_in: Lifetime in seconds or as a timedelta (checked per backend).

    Raises:
        NoContentError: If a file has not been saved.
        UnsupportedOperationError: If a backend cannot sign (local and memory stores
            without an attached signer).
        InvalidExpiryError: If the lifetime is not positive or exceeds a store's limit.

    Example:
        >>> from sqlalchemy_obstore import FileObject, ObstoreBackend, storages, sign_files
        >>> from sqlalchemy_obstore.signing import HmacUrlSigner
        >>> backend = ObstoreBackend("uploads", "memory://")
        >>> backend.url_signer = HmacUrlSigner("x" * 32, base_url="https://example.com/files")
        >>> with storages.temporary(backend):
        ...     files = [FileObject(backend="uploads", path=f"k/{n}.txt") for n in "ab"]
        ...     for url in sign_files(files):
        ...         print(url.split("?")[0])
        https://example.com/files/uploads/k/a.txt
        https://example.com/files/uploads/k/b.txt
    """
    return run_sync(signing_files(files, expires_in, FileObject))


async def sign_files_async(
    files: Iterable[FileObject], *, expires_in: int | timedelta = 3600
) -> list[str]:
    """Async version of [`sign_files`][sqlalchemy_obstore.file_object.sign_files].

    The batches of different backends are signed concurrently.
    """
    return await run_async(signing_files(files, expires_in, FileObject))


def _serialize(value: FileObject) -> dict[str, Any]:
    """The column shape of a saved file, for serialisers (Pydantic, msgspec)."""
    if not isinstance(value, FileObject):
        raise InvalidFileObjectError(f"Expected a FileObject, got {type(value).__name__}.")
    if not value.is_saved:
        raise InvalidFileObjectError(
            f"{value!r} has not been saved, so it has no column shape to serialise (its "
            "'path' would be null and could not be read back). Save it, or commit the "
            "session that uploads it, before serialising."
        )
    return value.to_dict()


_NULLABLE_STRING: dict[str, Any] = {"anyOf": [{"type": "string"}, {"type": "null"}]}


def column_json_schema() -> dict[str, Any]:
    """The JSON schema of the column shape written by `FileObject.to_dict()`.

    Only `path` is required (reading is lenient); unknown fields are allowed, as the
    column format preserves them.

    Example:
        >>> from sqlalchemy_obstore.file_object import column_json_schema
        >>> schema = column_json_schema()
        >>> schema["required"] == ["path"]
        True
        >>> "last_modified" in schema["properties"]
        True
    """
    return {
        "title": "FileObject",
        "description": "A file stored in an object store (sqlalchemy-obstore column format).",
        "type": "object",
        "properties": {
            "v": {"type": "integer", "const": COLUMN_FORMAT_VERSION},
            "backend": dict(_NULLABLE_STRING),
            "path": {"type": "string", "minLength": 1},
            "filename": {"type": "string"},
            "content_type": {"type": "string"},
            "size": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
            "etag": dict(_NULLABLE_STRING),
            "version": dict(_NULLABLE_STRING),
            "checksum": dict(_NULLABLE_STRING),
            "last_modified": {
                "anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]
            },
            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
            "renditions": {"type": "object", "additionalProperties": {"type": "object"}},
        },
        "required": ["path"],
        "additionalProperties": True,
    }


def _is_renditions(value: object) -> TypeGuard[Mapping[str, Mapping[str, Any]]]:
    """Whether `value` is the column shape of renditions: name → stored file."""
    return isinstance(value, Mapping) and all(
        isinstance(name, str) and isinstance(item, Mapping) and isinstance(item.get("path"), str)
        for name, item in value.items()
    )


def _collect(body: Any) -> bytes:
    """The whole upload body in memory (bounded by the policy's limits while it is read)."""
    if isinstance(body, Iterator):
        return b"".join(body)
    return bytes(body)


async def _collect_async(body: Any) -> bytes:
    if isinstance(body, AsyncIterator):
        return b"".join([chunk async for chunk in body])
    return _collect(body)


def _save_options(
    key_prefix: str | None,
    key_function: KeyFunction | None,
    use_multipart: bool | None,
    chunk_size: int,
    max_concurrency: int,
) -> SaveOptions:
    """The `SaveOptions` of `save()`'s keywords (the shared default when none is set)."""
    if (
        key_prefix is None
        and key_function is None
        and use_multipart is None
        and chunk_size == DEFAULT_CHUNK_SIZE
        and max_concurrency == DEFAULT_MAX_CONCURRENCY
    ):
        return _DEFAULT_SAVE_OPTIONS
    return SaveOptions(key_prefix, key_function, use_multipart, chunk_size, max_concurrency)


def _buffer_put_arguments(attributes: dict[str, str], options: SaveOptions) -> dict[str, Any]:
    """`Backend.put` keywords for a `_plan_buffer` upload."""
    return {
        "attributes": attributes,
        "create_only": True,  # a fresh key never exists; refuse to overwrite anyway
        "use_multipart": options.use_multipart,
        "chunk_size": options.chunk_size,
        "max_concurrency": options.max_concurrency,
    }


_HASHERS: dict[str, Any] = {}


def _hash(algorithm: str, data: bytes | bytearray) -> str:
    """The hex digest of `data` with the `hashlib` algorithm `algorithm` (one call)."""
    make = _HASHERS.get(algorithm)
    if make is None:
        make = getattr(hashlib, algorithm, None)
        if not callable(make) or algorithm not in hashlib.algorithms_guaranteed:
            make = partial(hashlib.new, algorithm)
        _HASHERS[algorithm] = make
    digest: str = make(data).hexdigest()
    return digest


_LOADED_INTERNALS: dict[str, Any] = {
    "_ready": True,
    "_content": None,
    "_registry": None,
    "_sign_cache": _NOTHING,
    "_containers": _NOTHING,
    "_extra": _NOTHING,
    "_renditions": _NOTHING,
    "_metadata": None,
    "_untrusted": False,
}
"""Internals of a file loaded from a row (shared empties are replaced on first write)."""


def _usual_shape(
    data: Mapping[str, Any], default_backend: str | None, registry: BackendRegistry | None
) -> FileObject | None:
    """`from_dict` for the shape `to_dict` writes, built without a detour through `__init__`.

    Rows are read far more often than anything else: msgspec checks the mapping against
    `_ColumnRow` in C and the file is filled in directly. Anything else (unknown fields,
    renditions, other types) returns `None`, and the caller takes the general, fully
    validating path.
    """
    try:
        row = msgspec.convert(data, _ColumnRow)
    except msgspec.ValidationError:
        return None
    return _file_from_row(row, default_backend, registry)


class _ColumnRow(msgspec.Struct, forbid_unknown_fields=True):
    """The usual column shape, as msgspec decodes and type-checks it (in C, from the text).

    Any other shape (unknown fields, renditions, other types) fails to decode into it;
    the caller then takes the general, fully validating path, which keeps unknown fields.
    """

    path: Annotated[str, msgspec.Meta(min_length=1)]
    content_type: Annotated[str, msgspec.Meta(min_length=1)]
    v: int = COLUMN_FORMAT_VERSION
    backend: str | None = None
    filename: str | None = None
    size: int | None = None
    etag: str | None = None
    version: str | None = None
    checksum: str | None = None
    last_modified: datetime | None = None
    metadata: dict[str, str] = {}


_decode_row = msgspec.json.Decoder(_ColumnRow).decode


def _file_from_json(
    text: str | bytes, default_backend: str | None, registry: BackendRegistry | None
) -> FileObject | None:
    """The fast constructor for column text in the usual shape, else `None`.

    Decoding the driver's text straight into `_ColumnRow` type-checks every field and
    parses the timestamp in one C call, and costs less than `json.loads` alone.
    """
    try:
        row = _decode_row(text)
    except msgspec.DecodeError:  # (ValidationError is a DecodeError)
        return None
    return _file_from_row(row, default_backend, registry)


def _file_from_row(
    row: _ColumnRow, default_backend: str | None, registry: BackendRegistry | None
) -> FileObject:
    """A loaded `FileObject` filled in directly from a checked `_ColumnRow`."""
    file: FileObject = FileObject.__new__(FileObject)
    d = file.__dict__  # (filled in place: faster than assigning a new __dict__)
    d.update(_LOADED_INTERNALS)  # one C call for the internals every loaded file shares
    if registry is not None:
        d["_registry"] = registry
    path = row.path
    d["backend"] = row.backend or default_backend
    d["path"] = path
    d["filename"] = check_filename(row.filename) if row.filename else path.rsplit("/", 1)[-1]
    d["content_type"] = row.content_type
    d["size"] = row.size
    d["etag"] = row.etag
    d["version"] = row.version
    d["checksum"] = row.checksum
    modified = row.last_modified
    if modified is not None and modified.tzinfo is None:
        modified = modified.replace(tzinfo=timezone.utc)
    d["last_modified"] = modified
    if row.metadata:
        d["_metadata"] = _Metadata(file, row.metadata)
    return file


def _with_policy(options: SaveOptions, policy: UploadPolicy | None) -> SaveOptions:
    """`options` with `policy` layered on its own policy."""
    if policy is None:
        return options
    if not isinstance(policy, UploadPolicy):
        raise InvalidFileObjectError(f"policy must be an UploadPolicy, not {policy!r}.")
    return replace(options, policy=effective_policy(options.policy, policy))


def _default_filename(content: object, path: str | None) -> str:
    from pathlib import Path

    if isinstance(content, Path):
        return content.name
    name = getattr(content, "name", None) if content is not None else None
    if isinstance(name, str) and name:
        return name.replace("\\", "/").rsplit("/", 1)[-1]
    if isinstance(path, str) and path:  # a non-str path is refused by __init__ right after
        return path.rsplit("/", 1)[-1]
    return "file"


class FileObjectList(MutableList[FileObject]):
    """The list value of a `StoredObject(multiple=True)` column.

    Every list operation (`append`, `extend`, `insert`, `remove`, `pop`, `clear`,
    item and slice assignment, `del`, `+=`, `sort`, `reverse`) marks the row dirty, and
    so do in-place changes to the files in it. Items removed since the row was loaded
    are remembered so the session can delete their objects after commit.
    """

    def __init__(self, items: Iterable[Any] = ()) -> None:
        super().__init__(_coerce_item(i) for i in items)
        self._removed: list[FileObject] = []
        for item in self:
            item._attach(self)

    def changed(self) -> None:
        """Mark the row holding this list as modified."""
        _flag_holders(self)

    @classmethod
    def coerce(cls, key: str, value: Any) -> FileObjectList | None:
        """Convert a value assigned to a list column (`None`, list of files or dicts)."""
        if value is None or isinstance(value, FileObjectList):
            return value
        if isinstance(value, (list, tuple)):
            try:
                return cls(value)
            except InvalidFileObjectError as exc:
                raise ValueError(f"Attribute {key!r}: {exc}") from exc
        raise ValueError(
            f"Attribute {key!r} accepts a list of FileObjects (or dicts in the column shape), "
            f"not {type(value).__name__}."
        )

    @property
    def removed(self) -> tuple[FileObject, ...]:
        """Files removed from this list since it was loaded or last committed."""
        return tuple(self._removed)

    def _added(self, items: Iterable[FileObject]) -> None:
        for item in items:
            item._attach(self)

    def _dropped(self, items: Iterable[FileObject]) -> None:
        for item in items:
            item._detach(self)
            if item.path is not None and not any(item is kept for kept in self):
                self._removed.append(item)

    def __setitem__(self, index: Any, value: Any) -> None:
        old = self[index]
        if isinstance(index, slice):
            new = [_coerce_item(v) for v in value]
            super().__setitem__(index, new)
            self._dropped(old)
            self._added(new)
        else:
            item = _coerce_item(value)
            super().__setitem__(index, item)
            self._dropped([old])
            self._added([item])

    def __delitem__(self, index: SupportsIndex | slice) -> None:
        old = self[index]
        super().__delitem__(index)
        self._dropped(old if isinstance(old, list) else [old])

    def pop(self, *arg: SupportsIndex) -> FileObject:
        item = super().pop(*arg)
        self._dropped([item])
        return item

    def append(self, x: Any) -> None:
        item = _coerce_item(x)
        super().append(item)
        self._added([item])

    def extend(self, x: Iterable[Any]) -> None:
        items = [_coerce_item(i) for i in x]
        super().extend(items)
        self._added(items)

    def __iadd__(self, x: Iterable[Any]) -> Self:  # type: ignore[override,misc]
        self.extend(x)
        return self

    def insert(self, i: SupportsIndex, x: Any) -> None:
        item = _coerce_item(x)
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

    def __reduce_ex__(self, protocol: SupportsIndex) -> Any:
        return (FileObjectList, (list(self),), None)

    def __repr__(self) -> str:
        return f"FileObjectList({list.__repr__(self)})"

    @overload
    def __getitem__(self, index: SupportsIndex) -> FileObject: ...
    @overload
    def __getitem__(self, index: slice) -> list[FileObject]: ...
    def __getitem__(self, index: SupportsIndex | slice) -> FileObject | list[FileObject]:
        return list.__getitem__(self, index)


def _coerce_item(value: Any) -> FileObject:
    if isinstance(value, FileObject):
        return value
    if isinstance(value, Mapping):
        return FileObject.from_dict(value)
    raise InvalidFileObjectError(
        "A list column holds FileObjects (or dicts in the column shape), "
        f"not {type(value).__name__}."
    )
