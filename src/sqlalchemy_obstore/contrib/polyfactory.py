"""polyfactory support: factories that build usable `FileObject`s.

Without help, polyfactory's `SQLAlchemyFactory` builds a `StoredObject` column as an empty
`FileObject()` (no content, nothing stored: the flush refuses it) and a
`StoredObject(multiple=True)` column as a list of random strings.
[`ObstoreSQLAlchemyFactory`][sqlalchemy_obstore.contrib.polyfactory.ObstoreSQLAlchemyFactory]
fixes both: each file is a pending `FileObject` with a generated name and reproducible
random content (polyfactory's `seed_random` seeds it), which the session uploads when
the row is flushed; with `__obstore_save__ = True` files are saved to their column's
backend (under its prefix, with its upload policy) as the model is built. Other
factories (dataclasses, Pydantic, msgspec models with `FileObject` fields) get the
provider from
[`FileObjectProviderMixin`][sqlalchemy_obstore.contrib.polyfactory.FileObjectProviderMixin].

Needs polyfactory: `pip install 'sqlalchemy-obstore[testing]'`.

Example:
    ```python
    from sqlalchemy_obstore.contrib.polyfactory import ObstoreSQLAlchemyFactory

    class DocumentFactory(ObstoreSQLAlchemyFactory[Document]):
        __set_relationships__ = False

    doc = DocumentFactory.build()        # doc.file: a pending FileObject, doc.pages: a list
    DocumentFactory.seed_random(42)      # the same files on every run from here on
    ```
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Generic, Optional, TypeGuard, TypeVar

from sqlalchemy import Column
from sqlalchemy import inspect as sa_inspect

from .._errors import MissingDependencyError
from .._file_object import FileObject
from .._types import StoredObject, stored_object_columns

try:
    from polyfactory.factories.base import BaseFactory
    from polyfactory.factories.sqlalchemy_factory import SQLAlchemyFactory
except ImportError as exc:  # pragma: no cover - exercised where polyfactory is absent
    raise MissingDependencyError("polyfactory", "testing") from exc

__all__ = ("FileObjectProviderMixin", "ObstoreSQLAlchemyFactory", "save_pending_files")

T = TypeVar("T")


class FileObjectProviderMixin(BaseFactory[Any]):
    """Makes a polyfactory factory build `FileObject` fields as pending files.

    Each file gets a generated name (its extension drives the content type) and random
    content of `__obstore_file_size__` bytes (a `(min, max)` range), drawn from the
    factory's `__random__` and `__faker__`, so `seed_random()` makes them reproducible.
    Override `build_file_object` for other files (images for an image-only policy):

        class AvatarFactory(ObstoreSQLAlchemyFactory[Avatar]):
            @classmethod
            def build_file_object(cls) -> FileObject:
                return FileObject(filename="a.png", content=PNG_BYTES)

    or give one field its own provider with polyfactory's `Use`.

    Example:
        >>> from dataclasses import dataclass
        >>> from polyfactory.factories import DataclassFactory
        >>> @dataclass
        ... class Upload:
        ...     file: FileObject
        >>> class UploadFactory(FileObjectProviderMixin, DataclassFactory[Upload]):
        ...     __obstore_file_size__ = (10, 10)
        >>> UploadFactory.build().file.has_pending_content
        True
    """

    __is_base_factory__ = True
    __obstore_file_size__: ClassVar[tuple[int, int]] = (1, 4096)
    """Size range, in bytes, of generated content (both ends included)."""

    @classmethod
    def is_supported_type(cls, value: Any) -> TypeGuard[type[Any]]:
        """The mixin builds no model itself; the factory it is mixed into decides."""
        if cls is FileObjectProviderMixin:
            return False
        return super().is_supported_type(value)

    @classmethod
    def build_file_object(cls) -> FileObject:
        """A pending file with a generated name and reproducible random content."""
        low, high = cls.__obstore_file_size__
        size = cls.__random__.randint(low, high)
        return FileObject(
            filename=cls.__faker__.file_name(), content=cls.__random__.randbytes(size)
        )

    @classmethod
    def get_provider_map(cls) -> dict[Any, Callable[[], Any]]:
        """polyfactory's providers, with `FileObject` built by `build_file_object`."""
        providers = super().get_provider_map()
        providers[FileObject] = cls.build_file_object
        return providers


class ObstoreSQLAlchemyFactory(FileObjectProviderMixin, SQLAlchemyFactory[T], Generic[T]):
    """A `SQLAlchemyFactory` that fills `StoredObject` columns with usable files.

    A `StoredObject` column gets a pending `FileObject` (`None` at times when the column
    is nullable, as polyfactory does for optional fields; set
    `__allow_none_optionals__ = False` to always get one), and a
    `StoredObject(multiple=True)` column a list of them. Saved with
    `create_sync`/`create_async`, the session uploads them with the row.

    Attributes:
        __obstore_save__: Save the files to their column's backend while building (under
            the column's prefix, with its upload policy), so `build()` returns models with
            stored files, e.g. to test serialisation or signed URLs without a database.
            The backends must be registered.

    Example:
        >>> from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
        >>> from sqlalchemy_obstore import StoredObject
        >>> from sqlalchemy_obstore.testing import memory_backends
        >>> class Base(DeclarativeBase): ...
        >>> class Report(Base):
        ...     __tablename__ = "reports"
        ...     id: Mapped[int] = mapped_column(primary_key=True)
        ...     file: Mapped[FileObject] = mapped_column(StoredObject(backend="uploads"))
        ...     pages: Mapped[list[FileObject]] = mapped_column(
        ...         StoredObject(backend="uploads", multiple=True), default=list
        ...     )
        >>> class ReportFactory(ObstoreSQLAlchemyFactory[Report]):
        ...     __obstore_save__ = True
        >>> with memory_backends("uploads"):
        ...     report = ReportFactory.build()
        >>> report.file.backend, report.file.path is not None, report.file.size > 0
        ('uploads', True, True)
        >>> all(page.path for page in report.pages)
        True
    """

    __is_base_factory__ = True
    __obstore_save__: ClassVar[bool] = False

    @classmethod
    def get_type_from_column(cls, column: Column[Any]) -> type:
        """`FileObject` (or `list[FileObject]`) for `StoredObject` columns."""
        column_type = column.type
        if not isinstance(column_type, StoredObject):
            return super().get_type_from_column(column)
        annotation: Any = list[FileObject] if column_type.multiple else FileObject
        if column.nullable and not column_type.multiple:
            annotation = Optional[annotation]  # noqa: UP045  # a runtime type for polyfactory
        return annotation  # type: ignore[no-any-return]

    @classmethod
    def build(cls, *args: Any, **kwargs: Any) -> T:
        """Build a model; with `__obstore_save__`, save its pending files first."""
        instance: T = super().build(*args, **kwargs)
        if cls.__obstore_save__:
            save_pending_files(instance)
        return instance


def save_pending_files(instance: object) -> None:
    """Save the pending files of every `StoredObject` column of a mapped instance.

    Each file goes to its column's backend with the column's save options (key prefix,
    key layout, upload policy), as the session would upload it at flush.

    Raises:
        ValidationError: If a file breaks the column's or backend's upload policy.
        BackendNotFoundError: If a column's backend is not registered.
    """
    for key, column_type in stored_object_columns(sa_inspect(type(instance))):
        value = getattr(instance, key, None)
        files = value if isinstance(value, list) else [value]
        for file in files:
            if isinstance(file, FileObject) and file.has_pending_content:
                file.save(options=column_type.save_options_for(instance, key))
