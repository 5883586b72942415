"""Files from web requests: framework uploads and raw request bodies, streamed.

[`file_from_upload`][sqlalchemy_obstore.uploads.file_from_upload] (also
`FileObject.from_upload`) turns the `UploadFile` of a multipart form — Starlette's and
FastAPI's, or Litestar's — into a pending
[`FileObject`][sqlalchemy_obstore.FileObject]. Nothing is read here: when the file is
saved (by a session flush or `save()`), the bytes stream from the framework's spooled
temporary file into storage chunk by chunk, so a large upload never sits whole in
memory. Neither framework is imported: any object with `file` (a binary file object)
and `filename` works.

[`file_from_stream`][sqlalchemy_obstore.uploads.file_from_stream] takes a raw request
body instead (`request.stream()` in both frameworks) for a `PUT`/`POST` of the bare
bytes: no multipart parsing, no temporary file, the body goes straight from the socket
to storage.

The column's (and backend's) [`UploadPolicy`][sqlalchemy_obstore.validation.UploadPolicy]
applies at save time as for any content: size limits while streaming, content types
sniffed from the first bytes, extensions, validators. The client's filename is display
data only (the object key uses a sanitised form), and its declared content type is a
hint that sniffing overrides when the policy sniffs.

Example:
    >>> import io
    >>> from sqlalchemy_obstore import FileObject, ObstoreBackend, storages
    >>> class Upload:  # what a framework hands a view: .file, .filename, .content_type
    ...     file = io.BytesIO(b"name,qty\\n")
    ...     filename = "C:\\\\Users\\\\me\\\\stock.csv"
    ...     content_type = "text/csv"
    >>> with storages.temporary(ObstoreBackend("uploads", "memory://")):
    ...     f = FileObject.from_upload(Upload(), backend="uploads")
    ...     (f.filename, f.size, f.content_type), f.save().get_content()
    (('stock.csv', 9, 'text/csv'), b'name,qty\\n')
"""

# In the implementation's order, which the reference page follows.
from ._uploads import (  # noqa: I001
    UPLOAD_CHUNK_SIZE,
    UploadContent,
    file_from_upload,
    file_from_stream,
    error_status,
)
from ._public import adopt as _adopt

__all__ = (
    "UPLOAD_CHUNK_SIZE",
    "UploadContent",
    "error_status",
    "file_from_stream",
    "file_from_upload",
)

_adopt(globals())
