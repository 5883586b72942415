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
2. The **header** is parsed (`Image.open` is lazy, and only the decoders of
   `allowed_formats` are tried). The format, dimensions, pixel count, aspect ratio and
   frame count are checked, and the **memory** that decoding, resizing and encoding
   will need is computed from the declared size and pixel mode, all **before** any
   pixel is decoded: a decompression bomb (a tiny file declaring a huge canvas) is
   refused with [`ImageTooLargeError`][sqlalchemy_obstore.ImageTooLargeError] without
   allocating it.
3. The job reserves that memory from the process-wide budget
   ([`ProcessingLimits`][sqlalchemy_obstore.processing.ProcessingLimits]), waiting its
   turn if other images are being processed. `save_async` (and an `AsyncSession`
   flush) run steps 2 to 6 in a worker thread, so the event loop keeps serving.
4. The pixels are decoded **once**, no larger than the biggest output needs (JPEG is
   decoded at 1/2, 1/4 or 1/8 scale with `draft()`, other formats are box-reduced
   strip by strip with `reduce()` before the final high-quality resample).
5. With `normalize`, the original is resized to fit and re-encoded (EXIF orientation
   applied, EXIF stripped unless `strip_exif=False`): the stored bytes, size, checksum
   and content type are those of the normalised image.
6. Every [`Rendition`][sqlalchemy_obstore.processing.Rendition] is generated from that
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

from __future__ import annotations

import functools
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ._offload import (
    DEFAULT_PROCESSING_MEMORY,
    DEFAULT_PROCESSING_WORKERS,
    ProcessingLimits,
    hold_memory,
    processing_limits,
    run_in_worker,
    set_processing_limits,
)
from .errors import (
    ConfigurationError,
    ImageTooLargeError,
    InvalidImageError,
    MissingDependencyError,
    StorageError,
)

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = (
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_FRAMES",
    "DEFAULT_MAX_MEMORY",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_PROCESSING_MEMORY",
    "DEFAULT_PROCESSING_WORKERS",
    "ImagePolicy",
    "Normalize",
    "ProcessingLimits",
    "Rendition",
    "processing_limits",
    "rendition_path",
    "set_processing_limits",
)

_MIB = 1024 * 1024
DEFAULT_MAX_PIXELS = 50_000_000
"""Default `ImagePolicy.max_pixels`: 50 megapixels."""
DEFAULT_MAX_BYTES = 50 * _MIB
"""Default `ImagePolicy.max_bytes`: images are decoded in memory, so they are bounded."""
DEFAULT_MAX_MEMORY = 256 * _MIB
"""Default `ImagePolicy.max_memory`: 256 MiB to decode, resize and encode one image.

Enough for any image within `DEFAULT_MAX_PIXELS` in PNG or JPEG with thumbnail-sized
renditions (a 50 MP RGBA PNG decodes to 200 MB); not for every combination (a 50 MP WebP,
whose decoder holds four copies, or a full-size re-encode of a 50 MP image to WebP).
"""
DEFAULT_MAX_FRAMES = 1000
"""Default `ImagePolicy.max_frames`: animations of up to 1000 frames."""

_REFUSED_FORMATS = {
    "ICO": "Pillow decodes an icon while opening it, before its size can be checked",
    "ICNS": "its header does not state the size of the images it embeds",
    "EPS": "it is rendered by Ghostscript, a full interpreter, at a size it chooses",
    "WMF": "it is a vector format, rendered at a size it chooses",
    "EMF": "it is a vector format, rendered at a size it chooses",
}

_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "TIFF": "tiff"}


def _pil() -> Any:
    """Import Pillow or raise `MissingDependencyError`."""
    try:
        from PIL import Image, ImageOps
    except ImportError as exc:
        raise MissingDependencyError("pillow", "images") from exc
    return Image, ImageOps


def _check_positive(name: str, value: object, *, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigurationError(f"{name} must be a positive int, not {value!r}.")


def _check_quality(value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 100:
        raise ConfigurationError(f"quality must be an int from 1 to 100, not {value!r}.")


@dataclass(frozen=True)
class Rendition:
    """A derived image generated on save and stored next to the original.

    Args:
        name: Key in `file.renditions` and in the object key
            (`<original key>.renditions/<name>.<ext>`).
        width: Target width in pixels.
        height: Target height in pixels.
        format: Pillow format name of the rendition (`"WEBP"`, `"JPEG"`, `"PNG"`).
        quality: Encoder quality, 1 to 100 (lossy formats).
        mode: `"fit"` scales the image to fit inside `width` x `height` keeping its aspect
            ratio (never upscaling); `"cover"` scales and crops to exactly that size.

    Raises:
        ConfigurationError: For an empty or path-like name, non-positive sizes, an
            unknown mode or a quality outside 1..100.

    Example:
        >>> Rendition("thumbnail", 256, 256).extension
        'webp'
    """

    name: str
    width: int
    height: int
    format: str = "WEBP"
    quality: int = 80
    mode: Literal["fit", "cover"] = "fit"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or "/" in self.name:
            raise ConfigurationError(f"A rendition name is a non-empty word, not {self.name!r}.")
        _check_positive("width", self.width, allow_none=False)
        _check_positive("height", self.height, allow_none=False)
        _check_quality(self.quality)
        if self.mode not in ("fit", "cover"):
            raise ConfigurationError(f"mode must be 'fit' or 'cover', not {self.mode!r}.")
        object.__setattr__(self, "format", str(self.format).upper())

    @property
    def extension(self) -> str:
        """The file extension of the rendition's format.

        Example:
            >>> Rendition("small", 64, 64, format="jpeg").extension
            'jpg'
        """
        return _EXTENSIONS.get(self.format, self.format.lower())


@dataclass(frozen=True)
class Normalize:
    """How the original image is rewritten before it is stored.

    Args:
        max_width: Resize (keeping the aspect ratio, never upscaling) to at most this
            width; `None` for no bound.
        max_height: Same for the height.
        format: Re-encode to this Pillow format (`None`: keep the uploaded format).
        quality: Encoder quality, 1 to 100 (lossy formats).

    Example:
        >>> Normalize(max_width=2048, max_height=2048, format="webp").format
        'WEBP'
    """

    max_width: int | None = None
    max_height: int | None = None
    format: str | None = None
    quality: int = 85

    def __post_init__(self) -> None:
        _check_positive("max_width", self.max_width)
        _check_positive("max_height", self.max_height)
        _check_quality(self.quality)
        if self.format is not None:
            object.__setattr__(self, "format", str(self.format).upper())


@dataclass(frozen=True)
class ImagePolicy:
    """What an image upload may be, and what is made of it; immutable and hashable.

    Use it as `UploadPolicy(image=ImagePolicy(...))`. With an image policy, content that
    is not a decodable image in an allowed format is refused.

    Args:
        max_width: Largest width in pixels.
        max_height: Largest height in pixels.
        min_width: Smallest width in pixels.
        min_height: Smallest height in pixels.
        max_pixels: Largest `width * height`, checked from the header before any pixel
            is decoded (the decompression-bomb guard).
        max_bytes: Largest encoded size: the content is held in memory to be decoded
            (the `UploadPolicy.max_size`, when smaller, applies too).
        allowed_formats: Pillow format names (`"PNG"`, `"JPEG"`, `"WEBP"`, ...); only
            their decoders ever see the bytes. ICO, ICNS, EPS, WMF and EMF are refused:
            their decoded size cannot be known before decoding.
        min_aspect_ratio: Smallest `width / height`.
        max_aspect_ratio: Largest `width / height`.
        normalize: Rewrite the original before it is stored (see `Normalize`); the
            EXIF orientation is applied first. Without it the uploaded bytes are stored
            unchanged.
        strip_exif: Drop EXIF metadata (GPS position, camera serial, ...) when the image
            is re-encoded (by `normalize`; renditions never carry EXIF).
        renditions: Derived images generated on save (see `Rendition`).
        max_memory: Largest amount of memory, in bytes, that processing one image may
            need: the decoded pixels, working copies and encoders' buffers of the
            normalised original and every rendition. It is computed from the header
            (dimensions, pixel mode, format, orientation) before any pixel is decoded;
            a larger image is refused with `ImageTooLargeError`. The estimate is also
            what the job reserves from the process-wide budget
            ([`ProcessingLimits`][sqlalchemy_obstore.processing.ProcessingLimits]).
        max_frames: Largest number of frames (animated GIF, PNG, WebP; TIFF pages),
            counted without decoding them. Only the first frame is decoded (for the
            checks, `normalize` and renditions); the original is stored as uploaded
            unless `normalize` re-encodes it, which keeps only the first frame.

    Raises:
        ConfigurationError: For non-positive limits, minimums above maximums, duplicate
            rendition names, or a format whose size cannot be checked before decoding.

    Example:
        >>> policy = ImagePolicy(max_width=4096, allowed_formats=("png", "jpeg"))
        >>> policy.allowed_formats
        ('PNG', 'JPEG')
    """

    max_width: int | None = None
    max_height: int | None = None
    min_width: int | None = None
    min_height: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = DEFAULT_MAX_BYTES
    allowed_formats: tuple[str, ...] = ("PNG", "JPEG", "WEBP")
    min_aspect_ratio: float | None = None
    max_aspect_ratio: float | None = None
    normalize: Normalize | None = None
    strip_exif: bool = True
    renditions: tuple[Rendition, ...] = ()
    max_memory: int = DEFAULT_MAX_MEMORY
    max_frames: int = DEFAULT_MAX_FRAMES

    def __post_init__(self) -> None:
        for name in ("max_width", "max_height", "min_width", "min_height"):
            _check_positive(name, getattr(self, name))
        for name in ("max_pixels", "max_bytes", "max_memory", "max_frames"):
            _check_positive(name, getattr(self, name), allow_none=False)
        for low, high in (("min_width", "max_width"), ("min_height", "max_height")):
            lo, hi = getattr(self, low), getattr(self, high)
            if lo is not None and hi is not None and lo > hi:
                raise ConfigurationError(f"{low} ({lo}) is larger than {high} ({hi}).")
        if (
            self.min_aspect_ratio is not None
            and self.max_aspect_ratio is not None
            and self.min_aspect_ratio > self.max_aspect_ratio
        ):
            raise ConfigurationError("min_aspect_ratio is larger than max_aspect_ratio.")
        formats = self.allowed_formats
        if isinstance(formats, str):
            formats = (formats,)
        formats = tuple(str(f).upper() for f in formats)
        for name in formats:
            if name in _REFUSED_FORMATS:
                raise ConfigurationError(
                    f"allowed_formats cannot include {name}: {_REFUSED_FORMATS[name]}. "
                    "Convert such files to PNG before upload."
                )
        object.__setattr__(self, "allowed_formats", formats)
        renditions = tuple(self.renditions)
        for rendition in renditions:
            if not isinstance(rendition, Rendition):
                raise ConfigurationError(f"renditions takes Rendition objects, not {rendition!r}.")
        names = [r.name for r in renditions]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"Rendition names must be unique: {names}.")
        object.__setattr__(self, "renditions", renditions)
        if self.normalize is not None and not isinstance(self.normalize, Normalize):
            raise ConfigurationError(f"normalize takes a Normalize, not {self.normalize!r}.")


# -- processing (internal) ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Derived:
    rendition: Rendition
    data: bytes
    content_type: str


@dataclass(frozen=True, slots=True)
class _Processed:
    data: bytes  # what to store as the original (the input itself when not normalised)
    content_type: str
    renditions: tuple[_Derived, ...]


def rendition_path(original: str, rendition: Rendition) -> str:
    """The object key of `rendition` of the object stored at `original`.

    Example:
        >>> rendition_path("uploads/1b2c/cat.png", Rendition("thumb", 64, 64))
        'uploads/1b2c/cat.png.renditions/thumb.webp'
    """
    return f"{original}.renditions/{rendition.name}.{rendition.extension}"


def _refuse(message: str, *, backend: str | None, path: str | None) -> InvalidImageError:
    return InvalidImageError(message, backend=backend, path=path)


# -- the memory model ------------------------------------------------------------------------
# Measured with Pillow 13 as peak RSS growth, worst case over pixel modes and noisy content
# (which neither compresses nor decodes cheaply). tests/unit/test_processing.py checks the
# estimate against the real peak of representative jobs.
_DECODER_COPIES = {
    "PNG": (0, 0), "JPEG": (0, 0), "MPO": (0, 0), "GIF": (0, 0), "BMP": (0, 0), "DIB": (0, 0),
    "TIFF": (0, 0), "PPM": (0, 0), "TGA": (0, 0), "QOI": (1, 0), "AVIF": (2, 0), "WEBP": (4, 2),
}  # fmt: skip
"""Buffers of the decoded size a decoder holds besides the image: while it decodes, and
until the image object is gone (libwebp keeps its canvases)."""
_UNKNOWN_DECODER_COPIES = (4, 2)
_ENCODER_BYTES = {
    "JPEG": (2, 2), "PNG": (4, 8), "TIFF": (6, 8), "BMP": (6, 8), "GIF": (12, 12),
    "AVIF": (32, 40), "WEBP": (24, 40),
}  # fmt: skip
"""Bytes per output pixel an encoder holds, its output included: (opaque, with alpha)."""
_UNKNOWN_ENCODER_BYTES = (48, 48)
_ENCODED_BYTES = {"JPEG": 1.0, "WEBP": 2.0, "AVIF": 2.0, "GIF": 2.0}
"""Largest encoded size per pixel (incompressible content); others up to 4.1 (PNG, TIFF)."""
_UNKNOWN_ENCODED_BYTES = 4.1
_OVERHEAD = 8 * _MIB
"""Codec state, tables and bookkeeping, whatever the image size."""
_SLACK = 1.1
"""Allocator slack: freed buffers are not always reusable for the next, larger one."""
_REDUCING_GAP = 2.0
"""Box-reduce (or JPEG-draft) to no less than twice the output, then resample (Pillow's
`thumbnail` default): indistinguishable from a full-resolution resample in practice."""
_STRIP_BYTES = 4 * _MIB
"""Rows converted and reduced at a time when the source needs a working mode."""
_ORIENTATION = 0x0112
_SWAPPING = (5, 6, 7, 8)
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def _bytes_per_pixel(mode: str) -> int:
    """Bytes per pixel of Pillow's in-memory storage (RGB is stored in 4 bytes)."""
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4


def _working_modes(mode: str, transparency: bool) -> tuple[str, ...]:
    """Conversions to a mode Pillow resamples correctly and cheaply, in order.

    Alpha is premultiplied once (`RGBa`), so no resize converts the whole image again;
    palettes and other modes are expanded, as encoding would need anyway.
    """
    if mode in ("RGB", "L"):
        return ()
    if mode == "RGBA":
        return ("RGBa",)
    if mode == "LA":
        return ("La",)
    if transparency or mode in _ALPHA_MODES:
        return ("RGBA", "RGBa")
    if mode == "1":
        return ("L",)
    return ("RGB",)


@dataclass(frozen=True, slots=True)
class _Target:
    """One output, as displayed: the normalised original (`rendition=None`) or a rendition."""

    rendition: Rendition | None
    format: str
    quality: int
    size: tuple[int, int]
    cover: bool


@dataclass(frozen=True, slots=True)
class _Step:
    """One output as made from the stored (not yet oriented) pixels."""

    target: _Target
    size: tuple[int, int]  # before the orientation is applied
    box: tuple[float, float, float, float]  # region of the source, in header pixels

    @property
    def pixels(self) -> int:
        return self.size[0] * self.size[1]


@dataclass(frozen=True, slots=True)
class _Source:
    """What the header says about the pixels to decode."""

    format: str
    size: tuple[int, int]  # declared (as stored)
    decoded: tuple[int, int]  # as it will be decoded (smaller after a JPEG draft)
    mode: str
    transparency: bool
    decoder_copies: tuple[float, float]  # (while decoding, kept after)
    orientation: int  # the EXIF orientation still to apply (1: none)


def _fit(size: tuple[int, int], box: tuple[int, int]) -> tuple[int, int]:
    """`size` scaled to fit in `box`, keeping its aspect ratio, never enlarged.

    The same rounding as Pillow's `Image.thumbnail`.
    """
    width, height = size
    x, y = box
    if x >= width and y >= height:
        return size
    aspect = width / height
    if x / y >= aspect:
        x = max(
            min(math.floor(y * aspect), math.ceil(y * aspect), key=lambda n: abs(aspect - n / y)), 1
        )
    else:
        y = max(
            min(
                math.floor(x / aspect),
                math.ceil(x / aspect),
                key=lambda n: 0 if n == 0 else abs(aspect - x / n),
            ),
            1,
        )
    return x, y


def _targets(policy: ImagePolicy, shown: tuple[int, int], source_format: str) -> list[_Target]:
    """The outputs `policy` asks for, for an image displayed at `shown`."""
    targets = []
    normalize = policy.normalize
    if normalize is not None:
        bound = (normalize.max_width or shown[0], normalize.max_height or shown[1])
        fmt = normalize.format or source_format
        targets.append(_Target(None, fmt, normalize.quality, _fit(shown, bound), False))
    for rendition in policy.renditions:
        cover = rendition.mode == "cover"
        box = (rendition.width, rendition.height)
        size = box if cover else _fit(shown, box)
        targets.append(_Target(rendition, rendition.format, rendition.quality, size, cover))
    return targets


def _steps(targets: Sequence[_Target], stored: tuple[int, int], swap: bool) -> list[_Step]:
    """Each target as a resample of a region of the stored pixels.

    A cover crop is centred, so cropping the stored pixels and orienting the result
    is the same as cropping the oriented image.
    """
    width, height = stored
    steps = []
    for target in targets:
        size = (target.size[1], target.size[0]) if swap else target.size
        box: tuple[float, float, float, float] = (0.0, 0.0, float(width), float(height))
        if target.cover:
            ratio = size[0] / size[1]
            if width / height >= ratio:
                crop = (ratio * height, float(height))
            else:
                crop = (float(width), width / ratio)
            left, top = (width - crop[0]) / 2, (height - crop[1]) / 2
            box = (left, top, left + crop[0], top + crop[1])
        steps.append(_Step(target, size, box))
    return steps


def _draft_size(steps: Sequence[_Step], stored: tuple[int, int]) -> tuple[int, int]:
    """The smallest decode that still gives every output `_REDUCING_GAP` times its pixels."""
    need = (1, 1)
    for step in steps:
        scale = max(
            step.size[0] / (step.box[2] - step.box[0]), step.size[1] / (step.box[3] - step.box[1])
        )
        need = (
            max(need[0], math.ceil(stored[0] * scale * _REDUCING_GAP)),
            max(need[1], math.ceil(stored[1] * scale * _REDUCING_GAP)),
        )
    return min(need[0], stored[0]), min(need[1], stored[1])


def _output_factor(box: tuple[float, float, float, float], size: tuple[int, int]) -> int:
    """The integer box reduction of `box` that leaves `_REDUCING_GAP` times `size`."""
    left, top, right, bottom = box
    factor = min(
        (right - left) / (size[0] * _REDUCING_GAP), (bottom - top) / (size[1] * _REDUCING_GAP)
    )
    return max(1, math.floor(factor))


def _reduce_factor(
    steps: Sequence[_Step], stored: tuple[int, int], decoded: tuple[int, int]
) -> int:
    """The box reduction of the whole decoded image that still serves every output."""
    scale_x, scale_y = decoded[0] / stored[0], decoded[1] / stored[1]
    factor = math.inf
    for step in steps:
        left, top, right, bottom = step.box
        box = (left * scale_x, top * scale_y, right * scale_x, bottom * scale_y)
        factor = min(factor, _output_factor(box, step.size))
    return 1 if factor == math.inf else int(factor)


def _reduced(size: tuple[int, int], factor: int) -> tuple[int, int]:
    return -(-size[0] // factor), -(-size[1] // factor)


def _strip_rows(width: int, factor: int) -> int:
    """Rows reduced at a time: a multiple of `factor` (so strips give the same result)."""
    return max(factor, _STRIP_BYTES // max(1, width * 4) // factor * factor)


@dataclass(frozen=True, slots=True)
class _Layout:
    """How the decoded pixels become the base every output is resampled from.

    With a reduction, the base is a new, smaller image already in the working mode;
    without, the base is the decoded image itself and each output converts the rows it
    reads, strip by strip. Either way no full-size converted copy ever exists.
    """

    factor: int  # box reduction (1: none)
    chain: tuple[str, ...]  # conversions to the working mode
    size: tuple[int, int]  # of the base
    mode: str  # of the base

    @property
    def resample_chain(self) -> tuple[str, ...]:
        """Conversions left to apply to rows read from the base."""
        return self.chain if self.factor == 1 else ()


def _layout(
    steps: Sequence[_Step],
    stored: tuple[int, int],
    decoded: tuple[int, int],
    mode: str,
    transparency: bool,
) -> _Layout:
    """The one place `_estimate` and `_render` both take their decisions from."""
    factor = _reduce_factor(steps, stored, decoded)
    chain = _working_modes(mode, transparency)
    if factor > 1:
        return _Layout(factor, chain, _reduced(decoded, factor), chain[-1] if chain else mode)
    return _Layout(1, chain, decoded, mode)


def _is_whole(step: _Step, layout: _Layout, stored: tuple[int, int]) -> bool:
    """Whether `step` is the whole base image as it is (no resample, no copy)."""
    return step.size == layout.size and step.box == (0.0, 0.0, float(stored[0]), float(stored[1]))


@dataclass(frozen=True, slots=True)
class _Band:
    """Output rows `top` to `top + rows` of a resample, made from one strip of the base."""

    crop: tuple[int, int, int, int]  # the strip of the base
    box: tuple[float, float, float, float]  # the region to resample, in strip pixels
    top: int
    rows: int


def _bands(
    box: tuple[float, float, float, float], size: tuple[int, int], base: tuple[int, int]
) -> list[_Band]:
    """Split a LANCZOS resample of `box` (base pixels) to `size` into strips of the base.

    Each strip holds every source row (and column) the filter reads for its output
    rows, so the result is the same as one resample of the whole base, while only a
    strip is ever copied, converted or held as the horizontal pass's intermediate.
    """
    left, top, right, bottom = box
    scale_x, scale_y = (right - left) / size[0], (bottom - top) / size[1]
    reach_x = 3 * max(scale_x, 1.0) + 1  # LANCZOS support, plus rounding
    reach_y = 3 * max(scale_y, 1.0) + 1
    x0, x1 = max(0, math.floor(left - reach_x)), min(base[0], math.ceil(right + reach_x))
    budget_rows = _STRIP_BYTES // max(1, (x1 - x0) * 4)
    rows = max(16, math.floor((budget_rows - 2 * reach_y) / scale_y))
    bands = []
    for first in range(0, size[1], rows):
        last = min(size[1], first + rows)
        y_from, y_to = top + first * scale_y, top + last * scale_y
        y0 = max(0, math.floor(y_from - reach_y))
        y1 = min(base[1], math.ceil(y_to + reach_y))
        bands.append(
            _Band(
                (x0, y0, x1, y1),
                (left - x0, y_from - y0, right - x0, y_to - y0),
                first,
                last - first,
            )
        )
    return bands


def _in_base(
    step: _Step, layout: _Layout, stored: tuple[int, int]
) -> tuple[float, float, float, float]:
    """`step.box` (header pixels) in pixels of the base."""
    scale_x, scale_y = layout.size[0] / stored[0], layout.size[1] / stored[1]
    left, top, right, bottom = step.box
    return left * scale_x, top * scale_y, right * scale_x, bottom * scale_y


@dataclass(frozen=True, slots=True)
class _Reduction:
    """An output made by box-reducing a region of the base, then resampling the result.

    (What Pillow's `thumbnail` does with `reducing_gap`, on a region, strip by strip.)
    """

    region: tuple[int, int, int, int]  # of the base: the box, plus the filter's reach
    factor: int
    box: tuple[float, float, float, float]  # the output's box, in reduced pixels

    @property
    def size(self) -> tuple[int, int]:
        left, top, right, bottom = self.region
        return _reduced((right - left, bottom - top), self.factor)


def _reduction(
    box: tuple[float, float, float, float], size: tuple[int, int], base: tuple[int, int]
) -> _Reduction | None:
    """How to make an output much smaller than its box; `None` to resample it directly."""
    factor = _output_factor(box, size)
    if factor == 1:
        return None
    left, top, right, bottom = box
    reach = factor * (math.ceil(3 * _REDUCING_GAP * 2) + 1)  # LANCZOS reach, reduced pixels
    x0, y0 = max(0, math.floor(left) - reach), max(0, math.floor(top) - reach)
    x1, y1 = min(base[0], math.ceil(right) + reach), min(base[1], math.ceil(bottom) + reach)
    reduced = _reduced((x1 - x0, y1 - y0), factor)
    inner = (
        (left - x0) / factor,
        (top - y0) / factor,
        min(reduced[0], (right - x0) / factor),
        min(reduced[1], (bottom - y0) / factor),
    )
    return _Reduction((x0, y0, x1, y1), factor, inner)


def _making(
    step: _Step, layout: _Layout, stored: tuple[int, int], bpp: int, chain: tuple[str, ...]
) -> int:
    """Bytes `_resample` holds besides the base and the output it makes."""
    box = _in_base(step, layout, stored)
    converted = 4 * len(chain)
    reduction = _reduction(box, step.size, layout.size)
    if reduction is not None:
        x0, y0, x1, y1 = reduction.region
        strip = _strip_rows(x1 - x0, reduction.factor) * (x1 - x0) * (bpp + converted)
        width, height = reduction.size
        small = width * height * 4
        return strip + small + max(step.size[0] * height, width * step.size[1]) * 4
    largest = 0
    for band in _bands(box, step.size, layout.size):
        x0, y0, x1, y1 = band.crop
        rows = y1 - y0
        strip = (x1 - x0) * rows * (bpp + converted)  # the strip, converted
        largest = max(largest, strip + step.size[0] * (rows + band.rows) * 4)
    return largest


def _estimate(source: _Source, steps: Sequence[_Step]) -> int:
    """Peak bytes `_render` holds for `steps`, phase by phase (an upper bound).

    Mirrors `_render`: decode (plus the decoder's own copies), reduce to the base (strip
    by strip), resample every output from it (strip by strip), drop the base, then
    orient, convert and encode the outputs one at a time.
    """
    width, height = source.decoded
    source_bpp = _bytes_per_pixel(source.mode)
    decoded = width * height * source_bpp
    decoding, kept_by_decoder = source.decoder_copies
    phases = [decoded * (1 + decoding)]
    if not steps:
        return math.ceil(phases[0] * _SLACK) + _OVERHEAD
    layout = _layout(steps, source.size, source.decoded, source.mode, source.transparency)
    base_bpp = _bytes_per_pixel(layout.mode)
    base = layout.size[0] * layout.size[1] * base_bpp
    if layout.factor > 1:
        rows = _strip_rows(width, layout.factor) if layout.chain else 0
        strip = rows * width * (source_bpp + 4 * len(layout.chain))
        phases.append(decoded + base + strip)
    out_mode = layout.chain[-1] if layout.chain else layout.mode
    out_bpp = _bytes_per_pixel(out_mode)
    chain = layout.resample_chain
    kept = False
    held = 0.0  # every output's pixels, then its encoded bytes
    making = 0  # the largest set of buffers making one output
    encoding = 0.0
    for step in steps:
        pixels = step.pixels
        fmt = step.target.format
        if _is_whole(step, layout, source.size):
            kept = True
            held += pixels * _ENCODED_BYTES.get(fmt, _UNKNOWN_ENCODED_BYTES)
            modes = _encoding_modes(layout.mode, fmt)
        else:
            held += pixels * out_bpp
            making = max(making, _making(step, layout, source.size, base_bpp, chain))
            modes = _encoding_modes(out_mode, fmt)
        copies = (source.orientation != 1) + len(modes)  # oriented, converted
        alpha = (modes[-1] if modes else out_mode) in _ALPHA_MODES
        encoder = _ENCODER_BYTES.get(fmt, _UNKNOWN_ENCODER_BYTES)[alpha]
        encoding = max(encoding, pixels * (4 * copies + encoder))
    phases.append(base + held + making)
    phases.append((base if kept else 0) + held + encoding)
    peak = max(phases[0], decoded * kept_by_decoder + max(phases[1:]))
    return math.ceil(peak * _SLACK) + _OVERHEAD


# -- reading the header ------------------------------------------------------------------------
def _open(data: bytes, policy: ImagePolicy, *, backend: str | None, path: str | None) -> PILImage:
    """Parse the header with the decoders of the allowed formats only; nothing is decoded."""
    Image, _ = _pil()
    Image.init()
    formats = [name for name in policy.allowed_formats if name in Image.OPEN]
    if not formats:
        raise _refuse(
            f"This Pillow installation reads none of the allowed formats "
            f"({', '.join(policy.allowed_formats)}).",
            backend=backend,
            path=path,
        )
    try:
        image: PILImage = Image.open(io.BytesIO(data), formats=formats)
    except Image.UnidentifiedImageError as exc:
        raise _refuse(
            f"The content is not an image in an allowed format "
            f"(allowed: {', '.join(policy.allowed_formats)}).",
            backend=backend,
            path=path,
        ) from exc
    return image


def _check_header(
    image: PILImage, policy: ImagePolicy, *, backend: str | None, path: str | None
) -> None:
    """Checks on what the header declares; no pixel has been decoded yet."""
    if image.format not in policy.allowed_formats:
        raise _refuse(
            f"Image format {image.format!r} is not allowed "
            f"(allowed: {', '.join(policy.allowed_formats)}).",
            backend=backend,
            path=path,
        )
    width, height = image.size
    if width <= 0 or height <= 0:
        raise _refuse(
            f"The image declares an empty size {width}x{height}.", backend=backend, path=path
        )
    if width * height > policy.max_pixels:
        raise ImageTooLargeError(
            f"The image declares {width}x{height} = {width * height} pixels, more than the "
            f"limit of {policy.max_pixels} (a possible decompression bomb; "
            "ImagePolicy.max_pixels sets the limit).",
            limit=policy.max_pixels,
            actual=width * height,
            unit="pixels",
            backend=backend,
            path=path,
        )
    checks = (
        ("width", width, policy.min_width, policy.max_width),
        ("height", height, policy.min_height, policy.max_height),
    )
    for name, value, low, high in checks:
        if high is not None and value > high:
            raise _refuse(
                f"The image {name} {value} px is larger than {high} px.", backend=backend, path=path
            )
        if low is not None and value < low:
            raise _refuse(
                f"The image {name} {value} px is smaller than {low} px.", backend=backend, path=path
            )
    ratio = width / height
    if (policy.min_aspect_ratio is not None and ratio < policy.min_aspect_ratio) or (
        policy.max_aspect_ratio is not None and ratio > policy.max_aspect_ratio
    ):
        raise _refuse(
            f"The aspect ratio {ratio:.3f} ({width}x{height}) is outside "
            f"[{policy.min_aspect_ratio}, {policy.max_aspect_ratio}].",
            backend=backend,
            path=path,
        )


def _gif_frames(data: bytes, limit: int) -> int:
    """Image descriptors in a GIF, counted up to `limit + 1` without decoding any.

    (Pillow's `n_frames` walks the whole file, and its `seek` decodes every frame.)
    """
    end = len(data)
    if end < 13:
        return 1
    position = 13
    if data[10] & 0x80:  # global colour table
        position += 3 << ((data[10] & 7) + 1)
    frames = 0
    while position < end and frames <= limit:
        block = data[position]
        if block == 0x2C:  # image descriptor
            frames += 1
            if position + 10 > end:
                break
            flags = data[position + 9]
            position += 10
            if flags & 0x80:  # local colour table
                position += 3 << ((flags & 7) + 1)
            position += 1  # LZW minimum code size
        elif block == 0x21:  # extension: label, then sub-blocks
            position += 2
        else:  # the trailer, or garbage: Pillow stops there too
            break
        while position < end and data[position]:  # data sub-blocks
            position += data[position] + 1
        position += 1
    return max(frames, 1)


def _frames(image: PILImage, data: bytes, limit: int) -> int:
    """The number of frames, counted up to `limit + 1`, without decoding pixels."""
    if image.format == "GIF":
        return _gif_frames(data, limit)
    if image.format == "TIFF":
        count = 1
        try:
            while count <= limit:
                image.seek(count)  # reads the next directory, not its pixels
                count += 1
        except EOFError:
            pass
        finally:
            image.seek(0)
        return count
    return int(getattr(image, "n_frames", 1))  # PNG, WebP, AVIF, MPO: from the header


def _orientation(image: PILImage, data: bytes) -> int:
    """The EXIF orientation still to apply to the decoded pixels, read without decoding.

    Pillow's TIFF decoder orients the pixels itself. A PNG may carry its EXIF after the
    pixels, where Pillow would only find it by decoding them: the chunks are walked
    instead.
    """
    if image.format == "TIFF":
        return 1
    if image.format == "PNG" and "exif" not in image.info:
        found = _png_exif(data)
        if found is not None:
            Image, _ = _pil()
            exif = Image.Exif()
            exif.load(found)
            return _valid_orientation(exif.get(_ORIENTATION, 1))
        xmp = image.info.get("XML:com.adobe.xmp") or ""
        match = re.search(r'tiff:Orientation(?:="|>)([0-9])', str(xmp))
        return _valid_orientation(int(match[1]) if match else 1)
    return _valid_orientation(image.getexif().get(_ORIENTATION, 1))


def _valid_orientation(value: object) -> int:
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _png_exif(data: bytes) -> bytes | None:
    """The content of a PNG's `eXIf` chunk, wherever it is, or `None`."""
    position, end = 8, len(data)
    while position + 8 <= end:
        length = int.from_bytes(data[position : position + 4], "big")
        kind = data[position + 4 : position + 8]
        if kind == b"eXIf":
            return data[position + 8 : position + 8 + length]
        if kind == b"IEND":
            break
        position += 12 + length
    return None


def _decoder_copies(image: PILImage) -> tuple[float, float]:
    decoding, kept = _DECODER_COPIES.get(image.format or "", _UNKNOWN_DECODER_COPIES)
    if image.format == "TIFF" and _valid_orientation(image.getexif().get(_ORIENTATION)) != 1:
        decoding += 1  # Pillow orients TIFF pixels into a second buffer as it decodes
    return float(decoding), float(kept)


@dataclass(slots=True)
class _Job:
    """An opened image, checked and planned; `_render` decodes and encodes it."""

    image: PILImage
    policy: ImagePolicy
    source: _Source
    estimate: int


def _inspect(
    image: PILImage, data: bytes, policy: ImagePolicy, *, backend: str | None, path: str | None
) -> _Job:
    """Check the header and plan the decode; refuse what exceeds a limit. No pixel is read."""
    _check_header(image, policy, backend=backend, path=path)
    frames = _frames(image, data, policy.max_frames)
    if frames > policy.max_frames:
        raise ImageTooLargeError(
            f"The image has more than {policy.max_frames} frames (ImagePolicy.max_frames "
            "sets the limit).",
            limit=policy.max_frames,
            actual=frames,
            unit="frames",
            backend=backend,
            path=path,
        )
    stored: tuple[int, int] = image.size
    source_format: str = image.format or "PNG"
    orientation = _orientation(image, data)
    steps = _steps_for(policy, stored, source_format, orientation)
    draft = _draft_size(steps, stored)
    if draft[0] < stored[0] and draft[1] < stored[1]:
        image.draft(None, draft)  # JPEG: decode at 1/2, 1/4 or 1/8 scale; others: no-op
    source = _Source(
        format=source_format,
        size=stored,
        decoded=image.size,
        mode=image.mode,
        transparency="transparency" in image.info,
        decoder_copies=_decoder_copies(image),
        orientation=orientation,
    )
    estimate = _estimate(source, steps)
    if estimate > policy.max_memory:
        raise ImageTooLargeError(
            f"Processing this {stored[0]}x{stored[1]} {source_format} image would need about "
            f"{math.ceil(estimate / _MIB)} MiB of memory, more than the limit of "
            f"{policy.max_memory / _MIB:g} MiB (ImagePolicy.max_memory sets the limit).",
            limit=policy.max_memory,
            actual=estimate,
            unit="bytes",
            backend=backend,
            path=path,
        )
    return _Job(image, policy, source, estimate)


def _steps_for(
    policy: ImagePolicy, stored: tuple[int, int], source_format: str, orientation: int
) -> list[_Step]:
    swap = orientation in _SWAPPING
    shown = (stored[1], stored[0]) if swap else stored
    return _steps(_targets(policy, shown, source_format), stored, swap)


# -- decoding, resizing, encoding ----------------------------------------------------------------
def _base(image: PILImage, layout: _Layout) -> PILImage:
    """The pixels outputs are resampled from: `image` itself, or its box reduction."""
    if layout.factor == 1:
        return image
    return _reduce_region(image, layout.chain, (0, 0, *image.size), layout.factor)


def _reduce_region(
    image: PILImage, chain: tuple[str, ...], region: tuple[int, int, int, int], factor: int
) -> PILImage:
    """Box-reduce `region` of `image` by `factor`, converting through `chain` first.

    The conversion goes strip by strip (whole multiples of `factor` rows, so the result
    is that of one reduction), so the converted copy of the region never exists.
    """
    Image, _ = _pil()
    if not chain:
        return image.reduce(factor, box=region)
    x0, y0, x1, y1 = region
    result: PILImage = Image.new(chain[-1], _reduced((x1 - x0, y1 - y0), factor))
    rows = _strip_rows(x1 - x0, factor)
    for top in range(y0, y1, rows):
        strip = _converted(image.crop((x0, top, x1, min(y1, top + rows))), chain)
        small = strip.reduce(factor)
        strip.close()
        result.paste(small, (0, (top - y0) // factor))
        small.close()
    return result


def _converted(image: PILImage, modes: Sequence[str]) -> PILImage:
    """`image` converted through `modes`, closing it and every intermediate."""
    for mode in modes:
        image, previous = image.convert(mode), image
        previous.close()
    return image


def _resample(
    base: PILImage,
    chain: tuple[str, ...],
    box: tuple[float, float, float, float],
    size: tuple[int, int],
) -> PILImage:
    """LANCZOS-resample `box` of `base` to `size`, converting through `chain`.

    Much smaller outputs are box-reduced first (see `_Reduction`); the others are
    resampled strip by strip (see `_bands`), each strip horizontally then vertically as
    one resample of the whole base would (the two passes are explicit, so their order
    does not depend on the shape of the strip). No full-size copy is ever made.
    """
    Image, _ = _pil()
    lanczos = Image.Resampling.LANCZOS
    reduction = _reduction(box, size, base.size)
    if reduction is not None:
        small = _reduce_region(base, chain, reduction.region, reduction.factor)
        try:
            return small.resize(size, lanczos, box=reduction.box)
        finally:
            small.close()
    output: PILImage = Image.new(chain[-1] if chain else base.mode, size)
    for band in _bands(box, size, base.size):
        strip = _converted(base.crop(band.crop), chain)
        left, top, right, bottom = band.box
        rows = strip.size[1]
        wide = strip.resize((size[0], rows), lanczos, box=(left, 0, right, rows))
        strip.close()
        part = wide.resize((size[0], band.rows), lanczos, box=(0, top, size[0], bottom))
        wide.close()
        output.paste(part, (0, band.top))
        part.close()
    return output


def _encoding_modes(mode: str, format: str) -> tuple[str, ...]:
    """Conversions that make pixels of `mode` storable as `format`, in order."""
    if mode == "RGBa":
        return ("RGB",) if format == "JPEG" else ("RGBA",)
    if mode == "La":
        return ("LA", "L") if format == "JPEG" else ("LA",)
    if format == "JPEG":
        return () if mode in ("RGB", "L") else ("RGB",)
    if mode in ("RGB", "RGBA", "L", "LA", "P"):
        return ()
    return ("RGBA",) if mode in _ALPHA_MODES else ("RGB",)


def _encodable(image: PILImage, format: str) -> PILImage:
    """`image` in a mode `format` can store: `image` itself or a new image."""
    modes = _encoding_modes(image.mode, format)
    return _converted(image.convert(modes[0]), modes[1:]) if modes else image


def _encode(image: PILImage, format: str, quality: int, exif: bytes | None = None) -> bytes:
    out = io.BytesIO()
    options: dict[str, Any] = {"quality": quality} if format in ("JPEG", "WEBP", "AVIF") else {}
    if exif:
        options["exif"] = exif
    image.save(out, format=format, **options)
    return out.getvalue()


def _transpose_method(orientation: int) -> Any:
    """The `Image.Transpose` that displays an image of this EXIF orientation upright."""
    Image, _ = _pil()
    return {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_270,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90,
    }.get(orientation)


def _kept_exif(image: PILImage, orientation: int) -> bytes | None:
    """The original EXIF for a re-encoded image, its orientation reset (the pixels are)."""
    raw = image.info.get("exif")
    if not raw:
        return None
    if orientation == 1:
        return bytes(raw)
    exif = image.getexif()
    exif[_ORIENTATION] = 1
    return bytes(exif.tobytes())


def _output(output: PILImage, target: _Target, method: Any, exif: bytes | None) -> bytes:
    """Orient, convert and encode one output; closes what it made, not `output`."""
    oriented = output.transpose(method) if method is not None else output
    try:
        ready = _encodable(oriented, target.format)
        try:
            return _encode(ready, target.format, target.quality, exif)
        finally:
            if ready is not oriented:
                ready.close()
    finally:
        if oriented is not output:
            oriented.close()


def _render(job: _Job, *, backend: str | None, path: str | None) -> list[tuple[_Target, bytes]]:
    """Decode once and make every output from that decode, in the order `_estimate` counts."""
    Image, _ = _pil()
    image, source, policy = job.image, job.source, job.policy
    try:
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise
    except Exception as exc:
        raise _refuse(f"The image cannot be decoded: {exc}", backend=backend, path=path) from exc
    planned = source.decoded[0] * source.decoded[1] * _bytes_per_pixel(source.mode)
    if image.size[0] * image.size[1] * _bytes_per_pixel(image.mode) > planned:
        raise _refuse(  # a decoder that did not honour its header
            f"The image decoded to {image.size[0]}x{image.size[1]} {image.mode}, larger than "
            f"its header declared ({source.decoded[0]}x{source.decoded[1]} {source.mode}).",
            backend=backend,
            path=path,
        )
    orientation = source.orientation  # (what was planned for, read from the bytes)
    steps = _steps_for(policy, source.size, source.format, orientation)
    if not steps:
        return []
    exif = None if policy.strip_exif else _kept_exif(image, orientation)
    layout = _layout(steps, source.size, image.size, image.mode, "transparency" in image.info)
    base = _base(image, layout)
    if base is not image:
        image.close()  # the decoded pixels are no longer needed
    outputs: list[PILImage] = []
    try:
        for step in steps:
            if _is_whole(step, layout, source.size):
                outputs.append(base)
            else:
                box = _in_base(step, layout, source.size)
                outputs.append(_resample(base, layout.resample_chain, box, step.size))
        if all(output is not base for output in outputs):
            base.close()
        method = _transpose_method(orientation)
        results = []
        for step, output in zip(steps, outputs, strict=True):
            kept = exif if step.target.rendition is None else None
            results.append((step.target, _output(output, step.target, method, kept)))
            if output is not base:
                output.close()  # (the base goes once every output is encoded)
        return results
    finally:
        for output in outputs:
            output.close()
        base.close()


def _mime(format: str) -> str:
    Image, _ = _pil()
    mime: str | None = Image.MIME.get(format)
    return mime or f"image/{format.lower()}"


def _process_image(
    data: bytes, policy: ImagePolicy, *, backend: str | None = None, path: str | None = None
) -> _Processed:
    """Validate `data` against `policy`, normalise it and build its renditions.

    Runs in the calling thread, after reserving the job's memory estimate from the
    process-wide budget (waiting for it if need be). Raises `InvalidImageError`
    (`ImageTooLargeError` for resource limits, from the header, before any pixel is
    decoded) and `MissingDependencyError` without Pillow.
    """
    Image, _ = _pil()
    try:
        with _open(data, policy, backend=backend, path=path) as image:
            job = _inspect(image, data, policy, backend=backend, path=path)
            with hold_memory(job.estimate):
                outputs = _render(job, backend=backend, path=path)
    except (StorageError, MemoryError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(
            f"The image is too large to decode safely: {exc}",
            limit=policy.max_pixels,
            actual=None,
            unit="pixels",
            backend=backend,
            path=path,
        ) from exc
    except Exception as exc:  # whatever Pillow raises on malformed input
        raise _refuse(
            f"The content is not a readable image: {exc}", backend=backend, path=path
        ) from exc
    stored, content_type = data, _mime(job.source.format)
    derived = []
    for target, encoded in outputs:
        if target.rendition is None:
            stored, content_type = encoded, _mime(target.format)
        else:
            derived.append(_Derived(target.rendition, encoded, _mime(target.format)))
    return _Processed(stored, content_type, tuple(derived))


async def _process_image_async(
    data: bytes, policy: ImagePolicy, *, backend: str | None = None, path: str | None = None
) -> _Processed:
    """`_process_image` in the image worker pool: the event loop keeps running meanwhile."""
    job = functools.partial(_process_image, data, policy, backend=backend, path=path)
    return await run_in_worker(job)
