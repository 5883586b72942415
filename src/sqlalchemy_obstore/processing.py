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
2. The **header** is parsed (`Image.open` is lazy) and the format, dimensions, pixel
   count and aspect ratio are checked **before** any pixel is decoded: a decompression
   bomb (a tiny file declaring a huge canvas) is refused with
   [`InvalidImageError`][sqlalchemy_obstore.InvalidImageError] without allocating it.
3. The pixels are decoded; the EXIF orientation is applied.
4. With `normalize`, the original is resized to fit and re-encoded (EXIF stripped unless
   `strip_exif=False`): the stored bytes, size, checksum and content type are those of
   the normalised image.
5. Every [`Rendition`][sqlalchemy_obstore.processing.Rendition] is generated and stored
   under `<original key>.renditions/<name>.<ext>`, recorded in the column value and
   exposed as `file.renditions[name]`. Renditions follow the original through the
   session: uploaded in the same flush, deleted on rollback and after the commit that
   replaces or removes the original.

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

import io
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .errors import ConfigurationError, InvalidImageError, MissingDependencyError

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = (
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "ImagePolicy",
    "Normalize",
    "Rendition",
    "rendition_path",
)

DEFAULT_MAX_PIXELS = 50_000_000
"""Default `ImagePolicy.max_pixels`: 50 megapixels."""
DEFAULT_MAX_BYTES = 50 * 1024 * 1024
"""Default `ImagePolicy.max_bytes`: images are decoded in memory, so they are bounded."""

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
        allowed_formats: Pillow format names (`"PNG"`, `"JPEG"`, `"WEBP"`, ...).
        min_aspect_ratio: Smallest `width / height`.
        max_aspect_ratio: Largest `width / height`.
        normalize: Rewrite the original before it is stored (see `Normalize`); the
            EXIF orientation is applied first. Without it the uploaded bytes are stored
            unchanged.
        strip_exif: Drop EXIF metadata (GPS position, camera serial, ...) when the image
            is re-encoded (by `normalize`; renditions never carry EXIF).
        renditions: Derived images generated on save (see `Rendition`).

    Raises:
        ConfigurationError: For non-positive limits, minimums above maximums, or
            duplicate rendition names.

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

    def __post_init__(self) -> None:
        for name in ("max_width", "max_height", "min_width", "min_height"):
            _check_positive(name, getattr(self, name))
        _check_positive("max_pixels", self.max_pixels, allow_none=False)
        _check_positive("max_bytes", self.max_bytes, allow_none=False)
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
        object.__setattr__(self, "allowed_formats", tuple(str(f).upper() for f in formats))
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
        raise _refuse(
            f"The image declares {width}x{height} = {width * height} pixels, more than the "
            f"limit of {policy.max_pixels} (a possible decompression bomb).",
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


def _encode(image: PILImage, format: str, quality: int, exif: bytes | None = None) -> bytes:
    if format == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    elif image.mode not in ("RGB", "RGBA", "L", "LA", "P"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    out = io.BytesIO()
    options: dict[str, Any] = {"quality": quality} if format in ("JPEG", "WEBP") else {}
    if exif:
        options["exif"] = exif
    image.save(out, format=format, **options)
    return out.getvalue()


def _mime(format: str) -> str:
    Image, _ = _pil()
    mime: str | None = Image.MIME.get(format)
    return mime or f"image/{format.lower()}"


def _process_image(
    data: bytes, policy: ImagePolicy, *, backend: str | None = None, path: str | None = None
) -> _Processed:
    """Validate `data` against `policy`, normalise it and build its renditions.

    Raises `InvalidImageError` (decompression bombs before their pixels are allocated)
    and `MissingDependencyError` without Pillow.
    """
    Image, ImageOps = _pil()
    with warnings.catch_warnings():
        # Pillow warns (and past twice its limit raises) about decompression bombs.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))  # lazy: reads the header only
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _refuse(
                f"The image is too large to decode safely: {exc}", backend=backend, path=path
            ) from exc
        except Exception as exc:
            raise _refuse(
                f"The content is not a readable image: {exc}", backend=backend, path=path
            ) from exc
        with image:
            _check_header(image, policy, backend=backend, path=path)
            source_format: str = image.format or "PNG"
            try:
                image.load()
                loaded = ImageOps.exif_transpose(image)
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise _refuse(
                    f"The image is too large to decode safely: {exc}", backend=backend, path=path
                ) from exc
            except Exception as exc:
                raise _refuse(
                    f"The image cannot be decoded: {exc}", backend=backend, path=path
                ) from exc
            exif = image.info.get("exif") if not policy.strip_exif else None
    stored, content_type = data, _mime(source_format)
    normalize = policy.normalize
    if normalize is not None:
        target = loaded.copy()
        if normalize.max_width is not None or normalize.max_height is not None:
            bound = (normalize.max_width or target.width, normalize.max_height or target.height)
            target.thumbnail(bound, Image.Resampling.LANCZOS)
        fmt = normalize.format or source_format
        stored, content_type = _encode(target, fmt, normalize.quality, exif), _mime(fmt)
    derived = []
    for rendition in policy.renditions:
        if rendition.mode == "cover":
            small = ImageOps.fit(loaded, (rendition.width, rendition.height))
        else:
            small = loaded.copy()
            small.thumbnail((rendition.width, rendition.height), Image.Resampling.LANCZOS)
        derived.append(
            _Derived(
                rendition,
                _encode(small, rendition.format, rendition.quality),
                _mime(rendition.format),
            )
        )
    return _Processed(stored, content_type, tuple(derived))
