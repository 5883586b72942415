"""The implementation of `sqlalchemy_obstore.types`, documented and imported there."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import msgspec
from sqlalchemy import JSON, Text, cast, event, type_coerce
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapper
from sqlalchemy.orm.base import NO_VALUE, instance_state
from sqlalchemy.types import TypeDecorator

from ._column_defaults import apply_column_defaults
from ._errors import (
    ConfigurationError,
    InvalidFileObjectError,
    InvalidSizeError,
    UntrustedReferenceError,
)
from ._file_object import FileObject, FileObjectList, SaveOptions
from ._keys import KeyContext, KeyFunction, KeyPrefixFunction, row_key_prefix
from ._registry import BackendRegistry, storages
from ._validation import UploadPolicy, parse_size

if TYPE_CHECKING:
    from sqlalchemy.engine import Dialect
    from sqlalchemy.types import TypeEngine

__all__ = ("StoredObject", "stored_object_columns")


class StoredObject(TypeDecorator[Any]):
    """A column type holding one `FileObject` (or a list of them) as JSON.

    Args:
        backend: Key of the backend new files in this column go to (and the default
            backend of stored values that name none). Leave it out to use the
            registry's default backend
            ([`set_default`][sqlalchemy_obstore.registry.BackendRegistry.set_default]),
            resolved when a file is assigned or saved; each row records the key it
            resolved to, so changing the default later does not move existing rows.
        multiple: Store a list of files (`FileObjectList`) instead of one file.
        key_prefix: Extra key prefix for new files of this column, after the backend's:
            a string, or a [`KeyPrefixFunction`][sqlalchemy_obstore.keys.KeyPrefixFunction]
            that derives it from the row at flush
            (`lambda ctx: ("tenants", ctx.instance.tenant_id)`), each value checked as
            one key segment. See [Keys from the row](../how-to/keys-from-row.md).
        key_function: Custom key layout for new files of this column.
        keep_replaced: Keep the objects of replaced or removed files instead of deleting
            them after commit (audit trails, versioning).
        track: Let the session upload and delete this column's files automatically
            (default). With `False` the application saves and deletes files itself.
        cache_control: `Cache-Control` stored with new objects.
        registry: Resolve backends in this registry instead of `storages`.
        policy: [`UploadPolicy`][sqlalchemy_obstore.validation.UploadPolicy] for new files
            of this column, layered field by field on the backend's default policy. A
            refused file makes the flush (and so `commit()`) raise the `ValidationError`;
            nothing is stored and nothing is committed.
        chunk_size: Multipart part size for new files of this column (default 5 MiB);
            content up to this size goes up in one request. Parts grow by themselves
            when a file's length is known and would need more parts than the store
            allows (S3: 10,000); a stream of unknown length holds at most
            `10,000 x chunk_size` on S3 (about 48 GiB by default), so give columns that
            take larger streams a larger `chunk_size`. Each part in flight is held in
            memory. A size string such as `"8 MiB"` is read with
            [`parse_size`][sqlalchemy_obstore.validation.parse_size].
        compress: Store new files of a textual type gzip-compressed with
            `Content-Encoding: gzip` (see
            [`SaveOptions.compress`][sqlalchemy_obstore.file_object.SaveOptions]):
            `size`, `checksum` and the library's reads are those of the stored gzip
            bytes; signed URLs serve them to browsers, which decode them.

    Example:
        >>> from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
        >>> from sqlalchemy_obstore import FileObject, StoredObject
        >>> class Base(DeclarativeBase): ...
        >>> class Document(Base):
        ...     __tablename__ = "documents"
        ...     id: Mapped[int] = mapped_column(primary_key=True)
        ...     file: Mapped[FileObject | None] = mapped_column(StoredObject(backend="uploads"))
        ...     pages: Mapped[list[FileObject]] = mapped_column(
        ...         StoredObject(backend="uploads", multiple=True), default=list
        ...     )
    """

    impl = JSON(none_as_null=True)
    cache_ok = True

    def __init__(
        self,
        backend: str | None = None,
        *,
        multiple: bool = False,
        key_prefix: str | KeyPrefixFunction | None = None,
        key_function: KeyFunction | None = None,
        keep_replaced: bool = False,
        track: bool = True,
        cache_control: str | None = None,
        registry: BackendRegistry | None = None,
        policy: UploadPolicy | None = None,
        chunk_size: int | str | None = None,
        compress: bool = False,
    ) -> None:
        if isinstance(chunk_size, str):
            try:
                chunk_size = parse_size(chunk_size)
            except InvalidSizeError as exc:
                raise InvalidSizeError(f"StoredObject(chunk_size=...): {exc}") from None
        if chunk_size is not None and (
            isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
        ):
            raise ConfigurationError(
                "StoredObject(chunk_size=...) takes a positive number of bytes, "
                f"not {chunk_size!r}."
            )
        if policy is not None and not isinstance(policy, UploadPolicy):
            raise ConfigurationError(
                f"StoredObject(policy=...) takes an UploadPolicy, not {type(policy).__name__}."
            )
        if key_prefix is not None and not isinstance(key_prefix, str) and not callable(key_prefix):
            raise ConfigurationError(
                "StoredObject(key_prefix=...) takes a string or a function of the row "
                f"(a KeyPrefixFunction), not {type(key_prefix).__name__}."
            )
        if backend is not None and (not isinstance(backend, str) or not backend):
            raise ConfigurationError(
                "StoredObject(backend=...) takes the key of a registered backend (a string), "
                "or nothing for the registry's default backend; refer to backends by key, "
                "never by object."
            )
        super().__init__()
        # (in the instance dict, under the constructor's name: SQLAlchemy's cache key of a
        # type is made of those; the `backend` property resolves the default)
        self.__dict__["backend"] = backend
        self.multiple = multiple
        self.key_prefix = key_prefix
        self.key_function = key_function
        self.keep_replaced = keep_replaced
        self.track = track
        self.cache_control = cache_control
        self.registry = registry
        self.policy = policy
        self.chunk_size = chunk_size
        self.compress = compress
        self._columns: list[str] = []

    @property
    def backend(self) -> str:
        """The key of the backend new files of this column go to.

        The key given to the constructor, else the registry's default backend now.

        Raises:
            NoDefaultBackendError: If the column names no backend and the registry has
                no default.
        """
        key: str | None = self.__dict__["backend"]
        return key if key is not None else (self.registry or storages).resolve_key(None)

    @property
    def backend_key(self) -> str | None:
        """The backend key given to the constructor; `None` for the registry's default."""
        key: str | None = self.__dict__["backend"]
        return key

    @property
    def resolved_backend(self) -> str | None:
        """The column's backend key now: its own, else the registry's default, else `None`."""
        key: str | None = self.__dict__["backend"]
        return key if key is not None else (self.registry or storages).default

    @property
    def save_options(self) -> SaveOptions:
        """How the session uploads new files of this column.

        Raises:
            ConfigurationError: If the key prefix is derived from the row: use
                [`save_options_for`][sqlalchemy_obstore.types.StoredObject.save_options_for].
        """
        key_prefix = self.key_prefix
        if key_prefix is not None and not isinstance(key_prefix, str):
            raise ConfigurationError(
                f"{self!r} derives its key prefix from the row: ask for "
                "save_options_for(instance, attribute) instead."
            )
        return self._options(key_prefix)

    def save_options_for(self, instance: object, attribute: str) -> SaveOptions:
        """How the session uploads new files of this column for the row `instance`.

        With a [`KeyPrefixFunction`][sqlalchemy_obstore.keys.KeyPrefixFunction] as
        `key_prefix`, the function is called with a
        [`KeyContext`][sqlalchemy_obstore.keys.KeyContext] and its segments are checked;
        otherwise this is [`save_options`][sqlalchemy_obstore.types.StoredObject.save_options].

        Args:
            instance: The mapped object the files belong to.
            attribute: The name of this column's attribute on it.

        Raises:
            InvalidKeySegmentError: If a value the function returns cannot be a key
                segment.

        Example:
            >>> column = StoredObject("uploads", key_prefix=lambda ctx: ("tenants", 7))
            >>> column.save_options_for(object(), "file").key_prefix
            'tenants/7'
        """
        key_prefix = self.key_prefix
        if key_prefix is not None and not isinstance(key_prefix, str):
            key_prefix = row_key_prefix(key_prefix, KeyContext(instance, attribute, self)) or None
        return self._options(key_prefix)

    def _options(self, key_prefix: str | None) -> SaveOptions:
        # The same inputs make the same (immutable) options: the last ones are reused, as
        # a flush asks once per row. (Compared by value, so a changed setting is seen.)
        inputs = (
            key_prefix,
            self.key_function,
            self.cache_control,
            self.policy,
            self.compress,
            self.chunk_size,
        )
        made: tuple[tuple[Any, ...], SaveOptions] | None = self.__dict__.get("_made_options")
        if made is not None and made[0] == inputs:
            return made[1]
        options = self._new_options(key_prefix)
        self.__dict__["_made_options"] = (inputs, options)
        return options

    def _new_options(self, key_prefix: str | None) -> SaveOptions:
        options = SaveOptions(
            key_prefix=key_prefix,
            key_function=self.key_function,
            cache_control=self.cache_control,
            policy=self.policy,
        )
        if self.compress:
            options = replace(options, compress=True)
        return options if self.chunk_size is None else replace(options, chunk_size=self.chunk_size)

    @property
    def python_type(self) -> type:
        return list if self.multiple else FileObject

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(JSONB(none_as_null=True))
        return dialect.type_descriptor(JSON(none_as_null=True))

    def column_expression(self, column: Any) -> Any:
        """Read JSONB as text on PostgreSQL, so the fast decoder gets the column's text.

        PostgreSQL drivers otherwise decode JSONB themselves with `json.loads` (asyncpg
        through a Python codec per value); `CAST(... AS TEXT)` in the SELECT list hands
        over the text instead, which the result processor decodes several times faster.
        Elsewhere the column is selected as it is.
        """
        if isinstance(self.impl_instance, JSONB) and self._reads_text():
            return type_coerce(cast(column, Text()), self)
        return column

    def _reads_text(self) -> bool:
        """Whether the result processor decodes column text itself (no subclass hook)."""
        return type(self).process_result_value is StoredObject.process_result_value

    def coerce_compared_value(self, op: Any, value: Any) -> Any:
        return self.impl_instance.coerce_compared_value(op, value)

    def _set_parent(self, parent: Any, outer: bool = False, **kw: Any) -> None:
        # Remember which columns use this type so errors about stored data can name them.
        # A column learns its table (and a mapped_column its name) only when attached.
        table = getattr(parent, "table", None)
        if table is not None:
            self._remember_column(parent, table)
        else:
            event.listen(parent, "after_parent_attach", self._remember_column)
        super()._set_parent(parent, outer=outer, **kw)

    def _remember_column(self, column: Any, table: Any) -> None:
        name = getattr(column, "name", None)
        if name:
            qualified = f"{table.name}.{name}" if hasattr(table, "name") else name
            if qualified not in self._columns:
                self._columns.append(qualified)

    def _column_label(self) -> str:
        return " / ".join(self._columns) if self._columns else "a StoredObject column"

    # -- bind ---------------------------------------------------------------------------------
    def _dump(self, value: Any) -> dict[str, Any]:
        if isinstance(value, Mapping):  # a dict in the application's own SQL statement
            value = FileObject.from_dict(value, default_backend=self.resolved_backend, trusted=True)
        if not isinstance(value, FileObject):
            raise InvalidFileObjectError(
                f"{self._column_label()} stores FileObjects, not {type(value).__name__}."
            )
        if value.__dict__["_untrusted"]:
            # A session flush vets these (see lifecycle); only a statement that bypasses
            # it (Core, bulk operations) gets here with one.
            raise UntrustedReferenceError(
                f"{value!r} in {self._column_label()} was decoded from outside data (a "
                "request body), and this statement does not go through a session flush, "
                "which is where a reference is checked against what its row holds. Write it "
                "through the ORM, or build it in server code with "
                "FileObject.from_dict(..., trusted=True) if the application vouches for it.",
                backend=value.backend,
                path=value.path,
            )
        if value.path is None:
            reason = (
                "its content is uploaded by a session's flush, and this statement does not "
                "go through one with tracking on (tracking is disabled for the session or "
                "column, or this is a Core statement): call save() first"
                if value.has_pending_content
                else "it has neither content to upload nor a stored object: give it "
                "content (FileObject(content=...)), or assign a stored file"
            )
            raise InvalidFileObjectError(
                f"{value!r} in {self._column_label()} has not been saved: {reason}."
            )
        data = value.to_dict()
        if data["backend"] is None:  # (the row records the key: the default may change)
            data["backend"] = self.backend
        return data

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if self.multiple:
            if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
                raise InvalidFileObjectError(
                    f"{self._column_label()} is a list column (multiple=True); "
                    f"got {type(value).__name__}."
                )
            return [self._dump(item) for item in value]
        return self._dump(value)

    # -- result ---------------------------------------------------------------------------------
    def _load(self, data: Any) -> FileObject:
        if data.__class__ is dict and (path := data.get("path")).__class__ is str and path:
            # The shape to_dict() wrote, as the driver decoded it: the fast constructor.
            file = FileObject._codec.from_builtins(data, self.resolved_backend, self.registry)
            if file is not None:
                return file
        try:
            return FileObject.from_dict(
                data, default_backend=self.resolved_backend, registry=self.registry, trusted=True
            )
        except InvalidFileObjectError as exc:
            raise InvalidFileObjectError(
                f"Malformed value in {self._column_label()}: {exc}. Fix the row, or set the "
                "column to NULL."
            ) from exc

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        """The driver value → `FileObject` conversion, one function per row value.

        `TypeDecorator`'s own processor calls the JSON type's processor, then
        `process_result_value`, then the loader. Unless a subclass overrides
        `process_result_value`, this decodes the column's text itself with msgspec
        (several times faster than `json.loads`, whatever `json_deserializer` the engine
        has), and the usual single-file shape goes straight from the text to the fast
        constructor; everything else takes `process_result_value`.
        """
        if not self._reads_text():
            return super().result_processor(dialect, coltype)
        backend = self.backend_key
        registry = self.registry
        defaults = registry or storages  # (for a column without a key of its own)
        slow = self.process_result_value
        decode_json = self._decode_json
        from_json = FileObject._codec.from_json
        from_builtins = FileObject._codec.from_builtins

        if self.multiple:

            def process_list(value: Any) -> Any:
                if value.__class__ is str or value.__class__ is bytes:
                    value = decode_json(value)
                return slow(value, dialect)

            return process_list

        def process(value: Any) -> Any:
            if value is None:
                return None
            if value.__class__ is str or value.__class__ is bytes:
                file = from_json(value, backend or defaults.default, registry)
                if file is not None:
                    return file
                value = decode_json(value)
            elif value.__class__ is dict and (path := value.get("path")).__class__ is str and path:
                file = from_builtins(value, backend or defaults.default, registry)
                if file is not None:
                    return file
            return slow(value, dialect)

        return process

    def _decode_json(self, text: str | bytes) -> Any:
        """Column text → Python, for the shapes the fast constructor does not take."""
        try:
            return msgspec.json.decode(text)
        except msgspec.DecodeError:
            pass
        try:  # (what msgspec refuses but Python's json reads: NaN, huge numbers)
            return json.loads(text)
        except ValueError as exc:
            raise InvalidFileObjectError(
                f"Malformed value in {self._column_label()}: not JSON ({exc}). Fix the row, "
                "or set the column to NULL."
            ) from exc

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if self.multiple:
            if not isinstance(value, list):
                raise InvalidFileObjectError(
                    f"Malformed value in {self._column_label()}: a list column holds a JSON "
                    f"array, found {type(value).__name__}."
                )
            return FileObjectList(self._load(item) for item in value)
        if isinstance(value, list):
            raise InvalidFileObjectError(
                f"Malformed value in {self._column_label()}: found a JSON array in a "
                "single-file column (was it declared with multiple=True before?)."
            )
        return self._load(value)

    def __repr__(self) -> str:
        key = self.backend_key
        args = [] if key is None else [repr(key)]
        if self.multiple:
            args.append("multiple=True")
        if isinstance(self.key_prefix, str):
            args.append(f"key_prefix={self.key_prefix!r}")
        elif self.key_prefix is not None:
            name = getattr(self.key_prefix, "__qualname__", type(self.key_prefix).__name__)
            args.append(f"key_prefix={name}")
        if self.keep_replaced:
            args.append("keep_replaced=True")
        if not self.track:
            args.append("track=False")
        if self.cache_control is not None:
            args.append(f"cache_control={self.cache_control!r}")
        if self.policy is not None:
            args.append(f"policy={self.policy!r}")
        if self.chunk_size is not None:
            args.append(f"chunk_size={self.chunk_size}")
        if self.compress:
            args.append("compress=True")
        return f"StoredObject({', '.join(args)})"


def stored_object_columns(mapper: Mapper[Any]) -> list[tuple[str, StoredObject]]:
    """The `(attribute key, type)` of every `StoredObject` column of a mapper."""
    found = []
    for prop in mapper.column_attrs:
        for column in prop.columns:
            column_type = getattr(column, "type", None)
            if isinstance(column_type, StoredObject):
                found.append((prop.key, column_type))
                break
    return found


@event.listens_for(Mapper, "mapper_configured")
def _track_mutations(mapper: Mapper[Any], class_: type) -> None:
    """Wire in-place change tracking for every `StoredObject` attribute."""
    for key, column_type in stored_object_columns(mapper):
        attribute = getattr(class_, key)
        if column_type.multiple:
            FileObjectList.associate_with_attribute(attribute)
        else:
            FileObject.associate_with_attribute(attribute)
        event.listen(attribute, "set", _column_defaults_setter(column_type, key), retval=True)


UNKNOWN_OLD_VALUE_KEY = "sqlalchemy_obstore.unknown_old_value"
"""`InstanceState.info` key: attributes of a stored row replaced while not loaded."""


def _column_defaults_setter(column_type: StoredObject, key: str) -> Any:
    def set_defaults(target: Any, value: Any, oldvalue: Any, initiator: Any) -> Any:
        apply_column_defaults(column_type, value)
        if oldvalue is NO_VALUE:
            state = instance_state(target)
            if state.key is not None:
                # Replaced while expired (e.g. after a commit): the session reads the
                # committed value during the flush. Loading it here would need I/O,
                # which an AsyncSession cannot do inside an attribute event.
                state.info.setdefault(UNKNOWN_OLD_VALUE_KEY, set()).add(key)
        return value

    return set_defaults
