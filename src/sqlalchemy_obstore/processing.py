"""Image uploads: validation, normalisation and renditions (the `images` extra, Pillow).

An [`ImagePolicy`][sqlalchemy_obstore.processing.ImagePolicy] is part of an
[`UploadPolicy`][sqlalchemy_obstore.validation.UploadPolicy] (`UploadPolicy(image=...)`),
so it is declared wherever a policy is (backend, column, one save), layers the same way
(the more specific layer's `ImagePolicy` replaces the other as a whole) and keeps column
types hashable (`cache_ok=True`).

What happens to an upload under an image policy, in order:

1. The usual streaming checks (extension, sniffed type, custom validators on the first
   part). Images are decoded in memory, so the content is collected whole, refused with
   `FileTooLargeError` as soon as it passes `ImagePolicy.max_bytes` (or the policy's
   smaller `max_size`).
2. Steps 3 to 7 run on an image worker thread (see
   [`ProcessingLimits`][sqlalchemy_obstore.processing.ProcessingLimits]): `save_async`
   and an `AsyncSession` flush await them, so the event loop keeps serving; `save`
   blocks until they are done.
3. The **header** is parsed (`Image.open` is lazy, and only the decoders of
   `allowed_formats` are tried). The format, dimensions, pixel count, aspect ratio and
   frame count are checked, and the **memory** that decoding, resizing and encoding
   will need is planned from the declared size, pixel mode and format, all **before**
   any pixel is decoded: a decompression bomb (a tiny file declaring a huge canvas) is
   refused with [`ImageTooLargeError`][sqlalchemy_obstore.ImageTooLargeError] without
   allocating it, and so is an image whose plan exceeds `ImagePolicy.max_memory`.
4. The job reserves its planned memory from the process-wide budget, waiting its turn
   while other images are being processed.
5. The pixels are decoded **once**, no larger than the biggest output needs (JPEG is
   decoded at 1/2, 1/4 or 1/8 scale with `draft()`, other formats are box-reduced
   strip by strip with `reduce()` before the final high-quality resample).
6. With `normalize`, the original is resized to fit and re-encoded (EXIF orientation
   applied, EXIF stripped unless `strip_exif=False`): the stored bytes, size, checksum
   and content type are those of the normalised image.
7. Every [`Rendition`][sqlalchemy_obstore.processing.Rendition] is generated from that
   one decode and stored under `<original key>.renditions/<name>.<ext>`, recorded in
   the column value and exposed as `file.renditions[name]`. Renditions follow the
   original through the session: uploaded in the same flush, deleted on rollback and
   after the commit that replaces or removes the original.

Example:
    >>> from sqlalchemy_obstore.processing import ImagePolicy, Rendition
    >>> from sqlalchemy_obstore.validation import UploadPolicy
    >>> policy = UploadPolicy(
    ...     image=ImagePolicy(max_width=4000, renditions=(Rendition("thumb", 256, 256),))
    ... )
    >>> policy.image.renditions[0].extension
    'webp'
"""

# In the implementation's order, which the reference page follows.
from ._processing import (  # noqa: I001
    ImageFacts,
    DEFAULT_PROCESSING_MEMORY,
    DEFAULT_PROCESSING_WORKERS,
    ProcessingLimits,
    processing_limits,
    set_processing_limits,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_MEMORY,
    DEFAULT_MAX_FRAMES,
    Rendition,
    Normalize,
    ImagePolicy,
    rendition_path,
)
from ._public import adopt as _adopt

__all__ = (
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_FRAMES",
    "DEFAULT_MAX_MEMORY",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_PROCESSING_MEMORY",
    "DEFAULT_PROCESSING_WORKERS",
    "ImageFacts",
    "ImagePolicy",
    "Normalize",
    "ProcessingLimits",
    "Rendition",
    "processing_limits",
    "rendition_path",
    "set_processing_limits",
)

_adopt(globals())
