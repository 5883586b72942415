"""Pydantic v2 support for a file class: its core schema.

Pydantic is imported only when a schema is built, so it stays an optional dependency.
The file classes are passed in: validation rebuilds dicts with the field type's
`from_dict`, and serialisation gives any file's column value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._column import column_value
from ._errors import InvalidFileObjectError

if TYPE_CHECKING:
    from pydantic_core import CoreSchema

__all__ = ("core_schema",)


def core_schema(cls: Any, base: type[Any]) -> CoreSchema:
    """Validate a `cls` (unchanged) or a column-shape dict; serialise a `base` to its column.

    A file that is not saved yet is refused when serialised (`InvalidFileObjectError`):
    its dict would have no `path` and could not be validated back.

    Example:
        >>> from pydantic import BaseModel
        >>> from sqlalchemy_obstore import FileObject
        >>> class Out(BaseModel):
        ...     file: FileObject
        >>> dumped = Out(file={"backend": "b", "path": "k/a.txt"}).model_dump()
        >>> dumped["file"].get("filename")
        'a.txt'
    """
    from pydantic_core import core_schema

    def validate(value: Any) -> Any:
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            return cls.from_dict(value)
        kind = type(value).__name__
        raise InvalidFileObjectError(f"Expected a FileObject or a column-shape dict, not {kind}.")

    def serialize(value: Any) -> dict[str, Any]:
        if not isinstance(value, base):  # (Pydantic may hand over anything)
            raise InvalidFileObjectError(f"Expected a FileObject, got {type(value).__name__}.")
        return column_value(value)

    return core_schema.no_info_plain_validator_function(
        validate,
        serialization=core_schema.plain_serializer_function_ser_schema(
            serialize, when_used="always"
        ),
    )
