"""Image work with Pillow: read the header, decode once, resize, encode.

Every step follows a plan from `_image_plan`, whose memory estimate therefore bounds
it: JPEG is decoded at reduced scale (`draft`), other formats are box-reduced and
converted strip by strip, every output is resampled strip by strip, and buffers are
closed as soon as they are no longer needed. Nothing here does I/O; `processing` runs
it in the caller's thread or in the image worker pool.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._errors import ImageTooLargeError, InvalidImageError, MissingDependencyError
from ._image_plan import (
    SWAPPING,
    Layout,
    Source,
    Target,
    box_in_base,
    bytes_per_pixel,
    decoder_copies,
    draft_size,
    encoding_modes,
    estimate_memory,
    is_whole,
    plan_layout,
    plan_reduction,
    reduced_size,
    split_bands,
    steps_for,
    strip_rows,
)

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

    from ._processing import ImagePolicy

__all__ = ("Job", "inspect_image", "mime", "open_image", "pil", "render")

_MIB = 1024 * 1024
_ORIENTATION = 0x0112
"""The EXIF orientation tag."""


def pil() -> Any:
    """Pillow's `Image` module, or `MissingDependencyError` without the `images` extra."""
    try:
        from PIL import Image
    except ImportError as exc:
        raise MissingDependencyError("pillow", "images") from exc
    return Image


def _refuse(message: str, *, backend: str | None, path: str | None) -> InvalidImageError:
    return InvalidImageError(message, backend=backend, path=path)


def mime(format: str) -> str:
    """The MIME type of a Pillow format name."""
    known: str | None = pil().MIME.get(format)
    return known or f"image/{format.lower()}"


# -- reading the header ------------------------------------------------------------------------
def open_image(
    data: bytes, policy: ImagePolicy, *, backend: str | None, path: str | None
) -> PILImage:
    """Parse the header with the decoders of the allowed formats only; nothing is decoded."""
    Image = pil()
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
            Image = pil()
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
    oriented = image.format == "TIFF" and _valid_orientation(image.getexif().get(_ORIENTATION)) != 1
    return decoder_copies(image.format or "", oriented)


@dataclass(slots=True)
class Job:
    """An opened image, checked and planned; `render` decodes and encodes it.

    Closing it (or leaving its `with` block) closes the image and drops it, so what its
    decoder still holds goes too (libwebp keeps its canvases until then).
    """

    image: PILImage | None
    policy: ImagePolicy
    source: Source
    estimate: int

    @property
    def shown(self) -> tuple[int, int]:
        """The image's width and height as displayed (its EXIF orientation applied)."""
        width, height = self.source.size
        return (height, width) if self.source.orientation in SWAPPING else (width, height)

    def close(self) -> None:
        """Close and drop the image."""
        if self.image is not None:
            self.image.close()
            self.image = None

    def __enter__(self) -> Job:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def inspect_image(
    image: PILImage, data: bytes, policy: ImagePolicy, *, backend: str | None, path: str | None
) -> Job:
    """Check the header and plan the decode; refuse what exceeds a limit. No pixel is read.

    Takes `image` over: it is closed if the image is refused.
    """
    try:
        return _inspect(image, data, policy, backend=backend, path=path)
    except BaseException:
        image.close()
        raise


def _inspect(
    image: PILImage, data: bytes, policy: ImagePolicy, *, backend: str | None, path: str | None
) -> Job:
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
    steps = steps_for(policy, stored, source_format, orientation)
    draft = draft_size(steps, stored)
    if draft[0] < stored[0] and draft[1] < stored[1]:
        image.draft(None, draft)  # JPEG: decode at 1/2, 1/4 or 1/8 scale; others: no-op
    source = Source(
        format=source_format,
        size=stored,
        decoded=image.size,
        mode=image.mode,
        transparency="transparency" in image.info,
        decoder_copies=_decoder_copies(image),
        orientation=orientation,
    )
    estimate = estimate_memory(source, steps)
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
    return Job(image, policy, source, estimate)


# -- decoding, resizing, encoding ----------------------------------------------------------------
def _base(image: PILImage, layout: Layout) -> PILImage:
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
    Image = pil()
    if not chain:
        return image.reduce(factor, box=region)
    x0, y0, x1, y1 = region
    result: PILImage = Image.new(chain[-1], reduced_size((x1 - x0, y1 - y0), factor))
    rows = strip_rows(x1 - x0, factor)
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

    Much smaller outputs are box-reduced first (see `Reduction`); the others are
    resampled strip by strip (see `split_bands`), each strip horizontally then vertically as
    one resample of the whole base would (the two passes are explicit, so their order
    does not depend on the shape of the strip). No full-size copy is ever made.
    """
    Image = pil()
    lanczos = Image.Resampling.LANCZOS
    reduction = plan_reduction(box, size, base.size)
    if reduction is not None:
        small = _reduce_region(base, chain, reduction.region, reduction.factor)
        try:
            return small.resize(size, lanczos, box=reduction.box)
        finally:
            small.close()
    output: PILImage = Image.new(chain[-1] if chain else base.mode, size)
    for band in split_bands(box, size, base.size):
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


def _encodable(image: PILImage, format: str) -> PILImage:
    """`image` in a mode `format` can store: `image` itself or a new image."""
    modes = encoding_modes(image.mode, format)
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
    Image = pil()
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


def _output(output: PILImage, target: Target, method: Any, exif: bytes | None) -> bytes:
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


def render(job: Job, *, backend: str | None, path: str | None) -> list[tuple[Target, bytes]]:
    """Decode once and make every output from that decode, in the order `estimate_memory` counts."""
    Image = pil()
    image, source, policy = job.image, job.source, job.policy
    if image is None:
        raise ValueError("This job is closed.")
    try:
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise
    except Exception as exc:
        raise _refuse(f"The image cannot be decoded: {exc}", backend=backend, path=path) from exc
    planned = source.decoded[0] * source.decoded[1] * bytes_per_pixel(source.mode)
    if image.size[0] * image.size[1] * bytes_per_pixel(image.mode) > planned:
        raise _refuse(  # a decoder that did not honour its header
            f"The image decoded to {image.size[0]}x{image.size[1]} {image.mode}, larger than "
            f"its header declared ({source.decoded[0]}x{source.decoded[1]} {source.mode}).",
            backend=backend,
            path=path,
        )
    orientation = source.orientation  # (what was planned for, read from the bytes)
    steps = steps_for(policy, source.size, source.format, orientation)
    if not steps:
        return []
    exif = None if policy.strip_exif else _kept_exif(image, orientation)
    layout = plan_layout(steps, source.size, image.size, image.mode, "transparency" in image.info)
    base = _base(image, layout)
    if base is not image:
        image.close()  # the decoded pixels are no longer needed
    outputs: list[PILImage] = []
    try:
        for step in steps:
            if is_whole(step, layout, source.size):
                outputs.append(base)
            else:
                box = box_in_base(step, layout, source.size)
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
