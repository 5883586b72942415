"""`StoredObject`, the column type that stores `FileObject` references as JSON.

The column holds a small, versioned JSON document per file (JSONB on PostgreSQL, JSON
elsewhere); the bytes live in the object store. With `multiple=True` it holds a JSON
array and the attribute is a [`FileObjectList`][sqlalchemy_obstore.FileObjectList].
Change tracking is wired automatically for every mapped `StoredObject` column: in-place
changes mark the row dirty without `flag_modified`.
"""

# In the implementation's order, which the reference page follows.
from ._types import (  # noqa: I001
    StoredObject,
    stored_object_columns,
)
from ._public import adopt as _adopt

__all__ = (
    "StoredObject",
    "stored_object_columns",
)

_adopt(globals())
