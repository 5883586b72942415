"""Filename sanitising and object-key generation.

Filenames that arrive with uploads are display data, never paths. Every filename the
library accepts first passes [`check_filename`][sqlalchemy_obstore.keys.check_filename],
which refuses the only characters that cannot be kept at all (NUL and lone surrogates:
no UTF-8 text, JSON column on PostgreSQL or HTTP header can carry them). Two functions
then turn names into something safe to show and to use in keys:

- [`sanitize_filename`][sqlalchemy_obstore.keys.sanitize_filename] gives a harmless
  *display* name: directories, `..`, control and bidi-override characters are gone,
  Unicode is NFC-normalised and the length is bounded, keeping the extension.
- [`key_safe_name`][sqlalchemy_obstore.keys.key_safe_name] goes further for the last
  segment of an object key: only letters, digits and `-_.()+@~` survive.

Object keys are generated fresh for every save, `<prefix>/<uuid>/<safe name>` by
default, so two files with the same name never collide and nothing is overwritten in
place. A custom [`KeyFunction`][sqlalchemy_obstore.keys.KeyFunction] can be set per
backend or per column.

A column can also take part of its key from the row it is saved with
(`StoredObject(key_prefix=function)`, a
[`KeyPrefixFunction`][sqlalchemy_obstore.keys.KeyPrefixFunction] given a
[`KeyContext`][sqlalchemy_obstore.keys.KeyContext]): `<prefix>/tenants/42/<uuid>/<name>`.
Row values are untrusted, so each one is one key segment, checked by
[`key_segment`][sqlalchemy_obstore.keys.key_segment]: a value that is not already a
plain, safe segment is refused, never rewritten.
"""

# In the implementation's order, which the reference page follows.
from ._keys import (  # noqa: I001
    KeyFunction,
    KeySegment,
    KeyContext,
    KeyPrefixFunction,
    DEFAULT_FILENAME,
    MAX_FILENAME_BYTES,
    check_filename,
    sanitize_filename,
    key_safe_name,
    uuid_key,
    join_key,
    validate_key,
    check_object_path,
    build_key,
    MAX_SEGMENT_BYTES,
    key_segment,
    row_key_prefix,
)
from ._public import adopt as _adopt

__all__ = (
    "DEFAULT_FILENAME",
    "MAX_FILENAME_BYTES",
    "MAX_SEGMENT_BYTES",
    "KeyContext",
    "KeyFunction",
    "KeyPrefixFunction",
    "KeySegment",
    "build_key",
    "check_filename",
    "check_object_path",
    "join_key",
    "key_safe_name",
    "key_segment",
    "row_key_prefix",
    "sanitize_filename",
    "uuid_key",
    "validate_key",
)

_adopt(globals())
