"""The implementation of `sqlalchemy_obstore.processing`, documented and imported there."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ._column import ImageFacts
from ._errors import ConfigurationError
from ._offload import (
    DEFAULT_PROCESSING_MEMORY,
    DEFAULT_PROCESSING_WORKERS,
    ProcessingLimits,
    processing_limits,
    set_processing_limits,
)

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

_MIB = 1024 * 1024
DEFAULT_MAX_PIXELS = 50_000_000
"""Default `ImagePolicy.max_pixels`: 50 megapixels."""
DEFAULT_MAX_BYTES = 50 * _MIB
"""Default `ImagePolicy.max_bytes`: images are decoded in memory, so they are bounded."""
DEFAULT_MAX_MEMORY = 384 * _MIB
"""Default `ImagePolicy.max_memory`: 384 MiB to decode, resize and encode one image.

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

    @property
    def spec(self) -> str:
        """What the rendition is made to, in one string (its name left out).

        Recorded with each stored rendition (`file.renditions[name].image.spec`);
        [`reprocess`][sqlalchemy_obstore.reprocessing.reprocess] rebuilds the stored
        renditions whose spec is not the policy's.

        Example:
            >>> Rendition("thumb", 256, 256).spec
            'fit 256x256 WEBP q80'
        """
        return f"{self.mode} {self.width}x{self.height} {self.format} q{self.quality}"


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
                    "Store such files without an ImagePolicy, or convert them to PNG first."
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


def rendition_path(original: str, rendition: Rendition) -> str:
    """The object key of `rendition` of the object stored at `original`.

    Example:
        >>> rendition_path("uploads/1b2c/cat.png", Rendition("thumb", 64, 64))
        'uploads/1b2c/cat.png.renditions/thumb.webp'
    """
    return f"{original}.renditions/{rendition.name}.{rendition.extension}"
