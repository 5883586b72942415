"""The implementation of `sqlalchemy_obstore.file_object`, documented and imported there."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from functools import partial
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

from . import _pydantic
from ._attributes import guess_content_type
from ._column import COLUMN_FORMAT_VERSION, FileCodec, ImageFacts, column_json_schema
from ._column import to_dict as column_to_dict
from ._content import ContentSource, content_kind, text_content
from ._fields import (
    LOADED_INTERNALS,
    NOTHING,
    NOTIFYING,
    STORED_FACTS,
    Metadata,
    check_content_type,
    check_fields,
    check_filename,
    describe,
    field_check,
    pickled_state,
    restored_state,
    stored_facts,
)
from ._file_backend import file_backend
from ._file_constructors import FileConstructors
from ._file_io import FileIOMethods
from ._info import InfoDict
from ._io import run_async, run_sync
from ._mutable import MutableItemList, MutableValue, notify_holders, set_quietly
from ._sign import signing_files
from ._upload import SaveOptions, default_filename, save_options, saving
from .backends import DEFAULT_CHUNK_SIZE, DEFAULT_MAX_CONCURRENCY, Backend
from .errors import InvalidFileObjectError, NoContentError
from .keys import KeyFunction, check_object_path, sanitize_filename
from .keys import check_filename as check_filename_text
from .registry import BackendRegistry
from .validation import UploadPolicy

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


class FileObject(FileIOMethods, FileConstructors, MutableValue):
    """A file stored, or about to be stored, in an object store.

    Build one with content to upload, or with the backend and path of an existing
    object. Every argument is keyword-only.

    Args:
        filename: The display name (the original upload name). It is kept as given in
            `filename`; only a sanitised form appears in object keys. Defaults to the
            name of a `Path` or file object, else the last segment of `path`.
        content: Content to upload: bytes, bytearray, memoryview, `pathlib.Path`, a
            binary file object, or a sync or async iterator of bytes; or `str`, stored
            as UTF-8 with a content type that says so (`text/plain; charset=utf-8`
            unless the filename or `content_type` says otherwise; `charset=utf-8` is
            added to a textual type without one).
        backend: Backend key; a file assigned to a column without one takes the
            column's backend.
        path: Key of an existing object (when there is no `content`).
        content_type: MIME type; guessed from the filename when not given. Printable
            ASCII, at most 255 characters (it is sent as a header).
        size: Size in bytes, for an existing object.
        etag: Entity tag, for an existing object.
        version: Version id, for an existing object.
        checksum: `"<algorithm>:<hex>"`, for an existing object.
        last_modified: Last-modified time, for an existing object.
        metadata: Custom str→str metadata, stored in the column and, where the store
            supports it, as object user metadata. Keys and values may not hold NUL or
            lone surrogates (no JSON column can keep them).
        info: JSON values stored in the column only (nested dicts and lists allowed;
            never sent to the store). See `info`.
        content_encoding: `"gzip"` for an existing object stored compressed (a save
            with `SaveOptions(compress=True)` sets it).
        registry: The registry that resolves `backend` (default: `storages`).

    Raises:
        InvalidFileObjectError: For unusable arguments (for example both `content` and
            `path`, `str` content with a content type declaring another charset, or a
            content type or metadata no store or database can keep).

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
    content_encoding: str | None
    size: int | None
    etag: str | None
    version: str | None
    checksum: str | None
    last_modified: datetime | None

    __hash__: ClassVar[None]  # type: ignore[assignment]  # mutable: not hashable
    _codec: ClassVar[FileCodec[FileObject]]  # builds files from column values (set below)

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
        info: Mapping[str, Any] | None = None,
        content_encoding: str | None = None,
    ) -> None:
        if content is not None:
            if path is not None:
                raise InvalidFileObjectError(
                    "Pass either content= (to upload) or path= (an existing object), not both."
                )
            if content.__class__ is not bytes and not isinstance(content, str):
                content_kind(content)  # validate early
        if filename is None:
            filename = default_filename(content, path)
        elif filename.__class__ is not str:
            check_filename(filename)  # a str (or a subclass)
        check_filename_text(filename)  # no NUL, no lone surrogate: storable and sendable
        if content_type is not None and (content_type.__class__ is not str or content_type):
            # printable ASCII: a header for the store, JSON for the column ("" is a guess)
            content_type = check_content_type(content_type)
        if content.__class__ is not bytes and isinstance(content, str):  # text, as UTF-8
            guessed = guess_content_type(filename)
            content, content_type = text_content(content, content_type, guessed)
        # Written straight into the instance dict: a new file has no holder to notify.
        # (Values of the exact types are taken as given; others are checked after.)
        d = self.__dict__
        d["_content"] = content
        d["_registry"] = registry
        d["_sign_cache"] = NOTHING
        d["_containers"] = NOTHING
        d["_extra"] = NOTHING
        d["_renditions"] = NOTHING
        d["_image"] = None
        d["_metadata"] = Metadata(self, metadata) if metadata else None
        d["_info"] = InfoDict(self, info) if info else None
        d["_untrusted"] = False  # built by the application's own code
        d["backend"] = backend
        d["path"] = None if path is None else check_object_path(path)
        d["filename"] = filename
        d["content_type"] = content_type or guess_content_type(filename)
        d["content_encoding"] = content_encoding
        d["size"] = size
        d["etag"] = etag
        d["version"] = version
        d["checksum"] = checksum
        d["last_modified"] = last_modified
        if not (
            (backend is None or backend.__class__ is str)
            and (content_encoding is None or content_encoding.__class__ is str)
            and (size is None or size.__class__ is int)
            and (etag is None or etag.__class__ is str)
            and (version is None or version.__class__ is str)
            and (checksum is None or checksum.__class__ is str)
            and (last_modified is None or last_modified.__class__ is datetime)
        ):
            check_fields(d, STORED_FACTS)  # a subclass, a bool, a string date, or wrong

    # -- state ----------------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        check = field_check(name)
        if check is not None:  # a field is checked as the constructor checks it
            value = check(value)
        if name == "metadata":
            value = Metadata(self, value)
            name = "_metadata"
        elif name == "info":
            value = InfoDict(self, value)
            name = "_info"
        object.__setattr__(self, name, value)
        if name in NOTIFYING:  # (`set_quietly` is the way around this)
            self.__dict__["_sign_cache"] = NOTHING  # (part of this change, not a quiet set)
            self.changed()

    @property
    def metadata(self) -> dict[str, str]:
        """Custom str→str metadata; in-place changes mark the owning row dirty."""
        metadata: Metadata | None = self.__dict__["_metadata"]
        if metadata is None:  # created on first use, which is not a change
            metadata = Metadata(self, None)
            set_quietly(self, _metadata=metadata)
        return metadata

    @property
    def info(self) -> dict[str, Any]:
        """JSON values of this file kept in the row only (nested values allowed).

        Unlike `metadata` (str→str, sent to the store as object metadata), `info` is
        never sent to the store: use it for what the application wants beside the file
        (dimensions, a parsed summary, tags). Only JSON values are accepted. Changing a
        top-level key marks the row dirty; after changing a nested value in place, call
        `changed()` (or assign the key again).

        Example:
            >>> from sqlalchemy_obstore import FileObject
            >>> f = FileObject(backend="b", path="k/a.pdf", info={"pages": 3})
            >>> f.info["toc"] = [{"title": "Intro", "page": 1}]
            >>> f.to_dict()["info"]
            {'pages': 3, 'toc': [{'title': 'Intro', 'page': 1}]}
        """
        d = self.__dict__
        info: InfoDict | None = d["_info"]
        if info is None:  # created on first use
            info = d["_info"] = InfoDict(self, None)
        return info

    @property
    def renditions(self) -> Mapping[str, FileObject]:
        """The stored renditions of this image, by name (read-only; empty if none).

        Made on save from the policy's
        [`ImagePolicy.renditions`][sqlalchemy_obstore.processing.ImagePolicy], recorded in
        the column and deleted with the original; each is a stored `FileObject`.

        Example:
            >>> from sqlalchemy_obstore import FileObject
            >>> FileObject(backend="b", path="k/a.png").renditions
            mappingproxy({})
        """
        renditions: Mapping[str, FileObject] = self.__dict__["_renditions"]
        return renditions if renditions is NOTHING else MappingProxyType(renditions)

    @property
    def image(self) -> ImageFacts | None:
        """What the image policy recorded of this image (size, a rendition's spec), if any.

        Example:
            >>> FileObject(backend="b", path="k/a.png").image is None
            True
        """
        facts: ImageFacts | None = self.__dict__["_image"]
        return facts

    @property
    def width(self) -> int | None:
        """The image's width in pixels as displayed, when an image policy recorded it."""
        facts: ImageFacts | None = self.__dict__["_image"]
        return None if facts is None else facts.width

    @property
    def height(self) -> int | None:
        """The image's height in pixels as displayed, when an image policy recorded it."""
        facts: ImageFacts | None = self.__dict__["_image"]
        return None if facts is None else facts.height

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
        notify_holders(self)

    def _take_stored_facts(self, source: FileObject) -> None:
        """Become the trusted `source` again but for the filename (the echo of a row's file).

        What the store holds is described by the row, not by the request body.
        """
        set_quietly(self, **stored_facts(self, source.__dict__))

    # -- column shape ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The JSON shape stored in the column; unknown fields read are written back.

        Example:
            >>> FileObject(backend="b", path="k/a.txt", size=1).to_dict()["path"]
            'k/a.txt'
        """
        return column_to_dict(self.__dict__)

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

        The dict names an object, so where it comes from matters (see
        [the threat model](../explanation/security.md)). The result is **untrusted**
        unless `trusted=True`: a session refuses to write it into a row
        (`UntrustedReferenceError`) unless that row and column already hold that very
        object (an edit form's round trip); then only `filename` is taken from the dict,
        the stored facts from the row. Pass `trusted=True` only for data the application
        vouches for (its own rows, a migration), never for a request body.

        Args:
            data: A mapping as produced by `to_dict`.
            default_backend: Backend to use when the data names none.
            registry: The registry that resolves the backend.
            trusted: Whether the application vouches for `data` (see above).

        Raises:
            InvalidFileObjectError: If `data` is not a valid column value (a malformed
                [`path`][sqlalchemy_obstore.keys.check_object_path] included, or a
                rendition on another backend than its original).

        Example:
            >>> f = FileObject.from_dict({"backend": "b", "path": "k/a.txt"})
            >>> f.filename, f.is_trusted
            ('a.txt', False)
            >>> FileObject.from_dict({"backend": "b", "path": "k/a.txt"}, trusted=True).is_trusted
            True
        """
        fast = cls is FileObject  # (a subclass is built by its own constructor)
        return cls._codec.from_mapping(data, default_backend, registry, trusted, cls, fast)

    @property
    def is_trusted(self) -> bool:
        """Whether the application vouches for this file's reference (backend and path).

        `False` for a file decoded from outside data (`from_dict`, Pydantic, msgspec, a
        dict assigned to a column) until a session accepted it as its row's echo.
        """
        return not self.__dict__["_untrusted"]

    # -- pydantic --------------------------------------------------------------------------------
    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        """Let `FileObject` be a Pydantic v2 field type ([how-to](../how-to/serialization.md)).

        Validation takes a `FileObject` or a column-shape dict (`from_dict`, untrusted);
        serialisation gives `to_dict()`, and refuses a file not saved yet.
        """
        return _pydantic.core_schema(cls, FileObject)

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """The JSON schema of the column shape (`path` required, unknown fields allowed)."""
        return column_json_schema()

    # -- equality, repr, pickling ------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FileObject):
            return NotImplemented
        if self.path is None or other.path is None:
            return self is other
        return (self.backend, self.path) == (other.backend, other.path)

    def __repr__(self) -> str:
        return describe("FileObject", self.__dict__)

    def __getstate__(self) -> dict[str, Any]:
        return pickled_state(super().__getstate__())

    def __setstate__(self, state: dict[str, Any]) -> None:
        state, metadata = restored_state(state)
        info = state.pop("_info", None)
        super().__setstate__(state)
        set_quietly(
            self,
            _metadata=Metadata(self, metadata),
            _info=InfoDict(self, info, checked=True) if info else None,
        )

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

    # -- helpers ------------------------------------------------------------------------------
    def _backend(self) -> Backend:
        return file_backend(self.__dict__)  # its own key, else the registry's default

    def _stored(self) -> tuple[Backend, str]:
        if self.path is None:
            raise NoContentError(
                f"{self!r} has not been saved yet: save it (or commit the session) first.",
                backend=self.backend,
            )
        return self._backend(), self.path

    # -- saving ---------------------------------------------------------------------------------
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

        Content up to `chunk_size` goes up in one PUT, longer content as a multipart
        upload with bounded memory. A stored file with nothing pending is left as it is.

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
            ValidationError: If the policy refuses the content (nothing is stored).
            StorageError: If the store refuses or fails the upload.

        Example:
            >>> from sqlalchemy_obstore import FileObject, ObstoreBackend, UploadPolicy, storages
            >>> with storages.temporary(ObstoreBackend("uploads", "memory://")):
            ...     f = FileObject(filename="a.txt", content=b"hi", backend="uploads")
            ...     f.save(policy=UploadPolicy(max_size=1024)).size
            2
        """
        options = save_options(
            options, policy, key_prefix, key_function, use_multipart, chunk_size, max_concurrency
        )
        return saving(self, options, FileObject).run_sync()

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
        options = save_options(
            options, policy, key_prefix, key_function, use_multipart, chunk_size, max_concurrency
        )
        return await saving(self, options, FileObject).run_async()


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


FileObject._codec = FileCodec(
    partial(FileObject.__new__, FileObject), LOADED_INTERNALS, Metadata, InfoDict
)


class FileObjectList(MutableItemList[FileObject]):
    """The list value of a `StoredObject(multiple=True)` column.

    Every list operation (`append`, `extend`, `insert`, `remove`, `pop`, `clear`,
    item and slice assignment, `del`, `+=`, `sort`, `reverse`) marks the row dirty, and
    so do in-place changes to the files in it. Items removed since the row was loaded
    are remembered so the session can delete their objects after commit.
    """

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

    def _coerce_item(self, value: Any) -> FileObject:
        if isinstance(value, FileObject):
            return value
        if isinstance(value, Mapping):
            return FileObject.from_dict(value)
        raise InvalidFileObjectError(
            "A list column holds FileObjects (or dicts in the column shape), "
            f"not {type(value).__name__}."
        )

    def _remember_removed(self, item: FileObject) -> bool:
        return item.path is not None  # a pending file has no object to delete

    def __repr__(self) -> str:
        return f"FileObjectList({list.__repr__(self)})"
