"""msgspec hooks: encode and decode `FileObject` fields of msgspec structs.

`FileObject` is not a type msgspec knows, so pass these hooks to its encoders and
decoders. A field annotated `FileObject`, `FileObject | None` or `list[FileObject]`
is then written in the [column format](../concepts/stored-object.md#the-column-format)
(the shape of `FileObject.to_dict()`) and read back from it. The same hooks serve
Litestar's `type_encoders` / `type_decoders`.

Only saved files can be encoded: a pending file (content not uploaded yet) has no
`path`, so `enc_hook` refuses it with `InvalidFileObjectError`, as Pydantic
serialisation does.

msgspec is installed with sqlalchemy-obstore (the column type decodes rows with it);
this module itself imports nothing from it.

Example:
    >>> import msgspec
    >>> from sqlalchemy_obstore import FileObject
    >>> from sqlalchemy_obstore.contrib.msgspec import dec_hook, enc_hook
    >>> class Document(msgspec.Struct):
    ...     title: str
    ...     file: FileObject | None = None
    >>> data = msgspec.json.encode(
    ...     Document("Q3", FileObject(backend="b", path="k/q3.pdf")), enc_hook=enc_hook
    ... )
    >>> msgspec.json.decode(data, type=Document, dec_hook=dec_hook).file
    FileObject(filename='q3.pdf', backend='b', path='k/q3.pdf', content_type='application/pdf')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from typing_extensions import NotRequired, Required, TypedDict

from .._column import column_value
from .._errors import InvalidFileObjectError
from .._file_object import FileObject, FileObjectList, column_json_schema

__all__ = ("FileObjectDict", "ImageFactsDict", "dec_hook", "enc_hook", "schema_hook")


class ImageFactsDict(TypedDict, total=False):
    """The `image` field of the column shape: an image's size, a rendition's spec.

    Example:
        >>> import msgspec
        >>> msgspec.convert({"width": 64, "height": 48}, ImageFactsDict)
        {'width': 64, 'height': 48}
    """

    width: Required[int]
    height: Required[int]
    spec: str


class FileObjectDict(TypedDict, total=False):
    """The column shape of a file, as a `TypedDict` (for msgspec, type checkers, APIs).

    Only `path` is required; see the column format for the meaning of each field.
    Decoding into this type keeps the plain dict; use `FileObject` fields (with
    `dec_hook`) to get `FileObject` values.

    Example:
        >>> import msgspec
        >>> msgspec.json.decode(b'{"path": "k/a.txt"}', type=FileObjectDict)
        {'path': 'k/a.txt'}
    """

    v: int
    backend: str | None
    path: Required[str]
    filename: str
    content_type: str
    content_encoding: NotRequired[str | None]
    size: int | None
    etag: str | None
    version: str | None
    checksum: str | None
    last_modified: str | None
    metadata: dict[str, str]
    info: NotRequired[dict[str, Any]]
    renditions: NotRequired[dict[str, FileObjectDict]]
    image: NotRequired[ImageFactsDict]


def enc_hook(obj: Any) -> Any:
    """Encode a `FileObject` (or `FileObjectList`) for msgspec.

    Args:
        obj: The value msgspec cannot encode natively.

    Returns:
        The column shape (`to_dict()`) of a `FileObject`, a plain list for a
        `FileObjectList`.

    Raises:
        InvalidFileObjectError: If the file is not saved (it has no `path` yet).
        NotImplementedError: For any other type, as msgspec expects.

    Example:
        >>> enc_hook(FileObject(backend="b", path="k/a.txt"))["path"]
        'k/a.txt'
    """
    if isinstance(obj, FileObject):
        return column_value(obj)
    if isinstance(obj, FileObjectList):
        return list(obj)
    raise NotImplementedError(f"Objects of type {type(obj).__name__} are not supported")


def dec_hook(type_: Any, obj: Any) -> Any:
    """Decode a `FileObject` field for msgspec.

    Args:
        type_: The annotated type msgspec asks for (`FileObject` or a subclass).
        obj: The decoded value (a dict in the column shape, or already a `FileObject`
            when converting with `msgspec.convert`).

    Returns:
        The `FileObject`.

    Raises:
        InvalidFileObjectError: If the dict is not a valid column value (a
            `ValueError`, so msgspec reports it as a `msgspec.ValidationError` with the
            field's location).
        NotImplementedError: For any other type, as msgspec expects.

    Example:
        >>> dec_hook(FileObject, {"backend": "b", "path": "k/a.txt"}).filename
        'a.txt'
    """
    if isinstance(type_, type) and issubclass(type_, FileObject):
        if isinstance(obj, type_):
            return obj
        if isinstance(obj, Mapping):
            return type_.from_dict(obj)
        raise InvalidFileObjectError(
            f"Expected an object in the column shape, not {obj.__class__.__name__}."
        )
    raise NotImplementedError(f"Type {type_!r} is not supported")


def schema_hook(type_: Any) -> dict[str, Any]:
    """JSON schema of `FileObject` fields, for `msgspec.json.schema(..., schema_hook=...)`.

    Args:
        type_: The custom type msgspec asks about.

    Returns:
        The schema of the column shape (see
        [`column_json_schema`][sqlalchemy_obstore.file_object.column_json_schema]).

    Raises:
        NotImplementedError: For any other type, as msgspec expects.

    Example:
        >>> schema_hook(FileObject)["required"] == ["path"]
        True
    """
    if isinstance(type_, type) and issubclass(type_, FileObject):
        return column_json_schema()
    raise NotImplementedError(f"Type {type_!r} is not supported")
