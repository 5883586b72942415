"""Upload policies: size limits, allowed types and extensions, sniffing, custom validators.

An [`UploadPolicy`][sqlalchemy_obstore.validation.UploadPolicy] says what an upload may
contain. Declare it on a backend (the default for every upload to it), on a column
(`StoredObject(..., policy=...)`) or for one explicit `FileObject.save(policy=...)`.
Layers combine **field by field**: a field set on the more specific layer (save, then
column, then backend) wins, a field left at `None` is inherited, and the `validators` of
every layer run (backend's first).

Everything is checked while the content streams, before anything is kept:

* the extension allow-list before a single byte is read;
* the size limit (and a declared `size` that lies) on every chunk, so an upload that
  passes the limit is aborted at that point (a multipart upload is aborted, nothing is
  stored) with [`FileTooLargeError`][sqlalchemy_obstore.FileTooLargeError];
* the content type, sniffed from the first bytes (see
  [`detect_content_type`][sqlalchemy_obstore.validation.detect_content_type]) and the
  custom validators, before the upload starts;
* the minimum size (and content shorter than declared) when the source is exhausted,
  still before the upload completes.

Example:
    >>> from sqlalchemy_obstore import FileObject, ObstoreBackend, storages
    >>> from sqlalchemy_obstore.validation import UploadPolicy
    >>> images = UploadPolicy(max_size=10_000_000, allowed_content_types=("image/*",))
    >>> with storages.temporary(ObstoreBackend("uploads", "memory://")):
    ...     png = b"\\x89PNG\\r\\n\\x1a\\n" + bytes(32)
    ...     f = FileObject(filename="scan.pdf", content=png, backend="uploads")
    ...     f.save(policy=images).content_type
    'image/png'
"""

# In the implementation's order, which the reference page follows.
from ._validation import (  # noqa: I001
    Validator,
    SNIFF_BYTES,
    SIZE_UNITS,
    parse_size,
    UploadPolicy,
    effective_policy,
    detect_content_type,
)
from ._public import adopt as _adopt

__all__ = (
    "SIZE_UNITS",
    "SNIFF_BYTES",
    "UploadPolicy",
    "Validator",
    "detect_content_type",
    "effective_policy",
    "parse_size",
)

_adopt(globals())
