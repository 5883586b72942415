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

# In the implementation's order, which the reference page follows.
from ._file_object import (  # noqa: I001
    COLUMN_FORMAT_VERSION,
    column_json_schema,
    SaveOptions,
    FileObject,
    sign_files,
    sign_files_async,
    FileObjectList,
)
from ._public import adopt as _adopt

__all__ = (
    "COLUMN_FORMAT_VERSION",
    "FileObject",
    "FileObjectList",
    "SaveOptions",
    "column_json_schema",
    "sign_files",
    "sign_files_async",
)

_adopt(globals())
