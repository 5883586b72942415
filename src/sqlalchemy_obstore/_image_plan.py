"""The memory model of image processing: what a job will hold, planned from the header.

Pure arithmetic on what an image header declares (size, pixel mode, format,
orientation) and what the policy asks for: which outputs to make, at which sizes, from
which region; how far to shrink the decode (JPEG draft, box reduction); and, phase by
phase, the largest amount of memory the job will hold. `_image_work` does the work and
follows these plans exactly, so the estimate bounds it; nothing here imports Pillow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._processing import ImagePolicy, Rendition

__all__ = (
    "SWAPPING",
    "Band",
    "Layout",
    "Reduction",
    "Source",
    "Step",
    "Target",
    "box_in_base",
    "bytes_per_pixel",
    "decoder_copies",
    "draft_size",
    "encoding_modes",
    "estimate_memory",
    "is_whole",
    "plan_layout",
    "plan_reduction",
    "reduced_size",
    "split_bands",
    "steps_for",
    "strip_rows",
)

_MIB = 1024 * 1024

# Measured with Pillow 13 as peak RSS growth, worst case over pixel modes and noisy content
# (which neither compresses nor decodes cheaply). tests/integration/test_image_memory.py
# checks the estimate against the real peak of representative jobs.
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
"""About how much of the source a strip holds (rows converted, reduced or resampled at a
time)."""
SWAPPING = (5, 6, 7, 8)
"""The EXIF orientations that turn the image by a quarter: width and height swap."""
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def bytes_per_pixel(mode: str) -> int:
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
class Target:
    """One output, as displayed: the normalised original (`rendition=None`) or a rendition."""

    rendition: Rendition | None
    format: str
    quality: int
    size: tuple[int, int]
    cover: bool


@dataclass(frozen=True, slots=True)
class Step:
    """One output as made from the stored (not yet oriented) pixels."""

    target: Target
    size: tuple[int, int]  # before the orientation is applied
    box: tuple[float, float, float, float]  # region of the source, in header pixels

    @property
    def pixels(self) -> int:
        return self.size[0] * self.size[1]


@dataclass(frozen=True, slots=True)
class Source:
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


def _targets(policy: ImagePolicy, shown: tuple[int, int], source_format: str) -> list[Target]:
    """The outputs `policy` asks for, for an image displayed at `shown`."""
    targets = []
    normalize = policy.normalize
    if normalize is not None:
        bound = (normalize.max_width or shown[0], normalize.max_height or shown[1])
        fmt = normalize.format or source_format
        targets.append(Target(None, fmt, normalize.quality, _fit(shown, bound), False))
    for rendition in policy.renditions:
        cover = rendition.mode == "cover"
        box = (rendition.width, rendition.height)
        size = box if cover else _fit(shown, box)
        targets.append(Target(rendition, rendition.format, rendition.quality, size, cover))
    return targets


def _steps(targets: Sequence[Target], stored: tuple[int, int], swap: bool) -> list[Step]:
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
        steps.append(Step(target, size, box))
    return steps


def draft_size(steps: Sequence[Step], stored: tuple[int, int]) -> tuple[int, int]:
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


def _reduce_factor(steps: Sequence[Step], stored: tuple[int, int], decoded: tuple[int, int]) -> int:
    """The box reduction of the whole decoded image that still serves every output."""
    scale_x, scale_y = decoded[0] / stored[0], decoded[1] / stored[1]
    factor = math.inf
    for step in steps:
        left, top, right, bottom = step.box
        box = (left * scale_x, top * scale_y, right * scale_x, bottom * scale_y)
        factor = min(factor, _output_factor(box, step.size))
    return 1 if factor == math.inf else int(factor)


def reduced_size(size: tuple[int, int], factor: int) -> tuple[int, int]:
    return -(-size[0] // factor), -(-size[1] // factor)


def strip_rows(width: int, factor: int) -> int:
    """Rows reduced at a time: a multiple of `factor` (so strips give the same result)."""
    return max(factor, _STRIP_BYTES // max(1, width * 4) // factor * factor)


@dataclass(frozen=True, slots=True)
class Layout:
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


def plan_layout(
    steps: Sequence[Step],
    stored: tuple[int, int],
    decoded: tuple[int, int],
    mode: str,
    transparency: bool,
) -> Layout:
    """The one place `estimate_memory` and `_render` both take their decisions from."""
    factor = _reduce_factor(steps, stored, decoded)
    chain = _working_modes(mode, transparency)
    if factor > 1:
        return Layout(factor, chain, reduced_size(decoded, factor), chain[-1] if chain else mode)
    return Layout(1, chain, decoded, mode)


def is_whole(step: Step, layout: Layout, stored: tuple[int, int]) -> bool:
    """Whether `step` is the whole base image as it is (no resample, no copy)."""
    return step.size == layout.size and step.box == (0.0, 0.0, float(stored[0]), float(stored[1]))


@dataclass(frozen=True, slots=True)
class Band:
    """Output rows `top` to `top + rows` of a resample, made from one strip of the base."""

    crop: tuple[int, int, int, int]  # the strip of the base
    box: tuple[float, float, float, float]  # the region to resample, in strip pixels
    top: int
    rows: int


def split_bands(
    box: tuple[float, float, float, float], size: tuple[int, int], base: tuple[int, int]
) -> list[Band]:
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
            Band(
                (x0, y0, x1, y1),
                (left - x0, y_from - y0, right - x0, y_to - y0),
                first,
                last - first,
            )
        )
    return bands


def box_in_base(
    step: Step, layout: Layout, stored: tuple[int, int]
) -> tuple[float, float, float, float]:
    """`step.box` (header pixels) in pixels of the base."""
    scale_x, scale_y = layout.size[0] / stored[0], layout.size[1] / stored[1]
    left, top, right, bottom = step.box
    return left * scale_x, top * scale_y, right * scale_x, bottom * scale_y


@dataclass(frozen=True, slots=True)
class Reduction:
    """An output made by box-reducing a region of the base, then resampling the result.

    (What Pillow's `thumbnail` does with `reducing_gap`, on a region, strip by strip.)
    """

    region: tuple[int, int, int, int]  # of the base: the box, plus the filter's reach
    factor: int
    box: tuple[float, float, float, float]  # the output's box, in reduced pixels

    @property
    def size(self) -> tuple[int, int]:
        left, top, right, bottom = self.region
        return reduced_size((right - left, bottom - top), self.factor)


def plan_reduction(
    box: tuple[float, float, float, float], size: tuple[int, int], base: tuple[int, int]
) -> Reduction | None:
    """How to make an output much smaller than its box; `None` to resample it directly."""
    factor = _output_factor(box, size)
    if factor == 1:
        return None
    left, top, right, bottom = box
    reach = factor * (math.ceil(3 * _REDUCING_GAP * 2) + 1)  # LANCZOS reach, reduced pixels
    x0, y0 = max(0, math.floor(left) - reach), max(0, math.floor(top) - reach)
    x1, y1 = min(base[0], math.ceil(right) + reach), min(base[1], math.ceil(bottom) + reach)
    reduced = reduced_size((x1 - x0, y1 - y0), factor)
    inner = (
        (left - x0) / factor,
        (top - y0) / factor,
        min(reduced[0], (right - x0) / factor),
        min(reduced[1], (bottom - y0) / factor),
    )
    return Reduction((x0, y0, x1, y1), factor, inner)


def _making(
    step: Step, layout: Layout, stored: tuple[int, int], bpp: int, chain: tuple[str, ...]
) -> int:
    """Bytes `_resample` holds besides the base and the output it makes."""
    box = box_in_base(step, layout, stored)
    converted = 4 * len(chain)
    reduction = plan_reduction(box, step.size, layout.size)
    if reduction is not None:
        x0, y0, x1, y1 = reduction.region
        strip = strip_rows(x1 - x0, reduction.factor) * (x1 - x0) * (bpp + converted)
        width, height = reduction.size
        small = width * height * 4
        return strip + small + max(step.size[0] * height, width * step.size[1]) * 4
    largest = 0
    for band in split_bands(box, step.size, layout.size):
        x0, y0, x1, y1 = band.crop
        rows = y1 - y0
        strip = (x1 - x0) * rows * (bpp + converted)  # the strip, converted
        largest = max(largest, strip + step.size[0] * (rows + band.rows) * 4)
    return largest


def estimate_memory(source: Source, steps: Sequence[Step]) -> int:
    """Peak bytes `_render` holds for `steps`, phase by phase (an upper bound).

    Mirrors `_render`: decode (plus the decoder's own copies), reduce to the base (strip
    by strip), resample every output from it (strip by strip), drop the base, then
    orient, convert and encode the outputs one at a time.
    """
    width, height = source.decoded
    source_bpp = bytes_per_pixel(source.mode)
    decoded = width * height * source_bpp
    decoding, kept_by_decoder = source.decoder_copies
    phases = [decoded * (1 + decoding)]
    if not steps:
        return math.ceil(phases[0] * _SLACK) + _OVERHEAD
    layout = plan_layout(steps, source.size, source.decoded, source.mode, source.transparency)
    base_bpp = bytes_per_pixel(layout.mode)
    base = layout.size[0] * layout.size[1] * base_bpp
    if layout.factor > 1:
        rows = strip_rows(width, layout.factor) if layout.chain else 0
        strip = rows * width * (source_bpp + 4 * len(layout.chain))
        phases.append(decoded + base + strip)
    out_mode = layout.chain[-1] if layout.chain else layout.mode
    out_bpp = bytes_per_pixel(out_mode)
    chain = layout.resample_chain
    kept = False
    held = 0.0  # every output's pixels, then its encoded bytes
    making = 0  # the largest set of buffers making one output
    encoding = 0.0
    for step in steps:
        pixels = step.pixels
        fmt = step.target.format
        if is_whole(step, layout, source.size):
            kept = True
            held += pixels * _ENCODED_BYTES.get(fmt, _UNKNOWN_ENCODED_BYTES)
            modes = encoding_modes(layout.mode, fmt)
        else:
            held += pixels * out_bpp
            making = max(making, _making(step, layout, source.size, base_bpp, chain))
            modes = encoding_modes(out_mode, fmt)
        copies = (source.orientation != 1) + len(modes)  # oriented, converted
        alpha = (modes[-1] if modes else out_mode) in _ALPHA_MODES
        encoder = _ENCODER_BYTES.get(fmt, _UNKNOWN_ENCODER_BYTES)[alpha]
        encoding = max(encoding, pixels * (4 * copies + encoder))
    phases.append(base + held + making)
    phases.append((base if kept else 0) + held + encoding)
    peak = max(phases[0], decoded * kept_by_decoder + max(phases[1:]))
    return math.ceil(peak * _SLACK) + _OVERHEAD


def encoding_modes(mode: str, format: str) -> tuple[str, ...]:
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


def steps_for(
    policy: ImagePolicy, stored: tuple[int, int], source_format: str, orientation: int
) -> list[Step]:
    swap = orientation in SWAPPING
    shown = (stored[1], stored[0]) if swap else stored
    return _steps(_targets(policy, shown, source_format), stored, swap)


def decoder_copies(format: str, oriented_by_decoder: bool) -> tuple[float, float]:
    """Buffers of the decoded size the decoder of `format` holds: (while decoding, after)."""
    decoding, kept = _DECODER_COPIES.get(format, _UNKNOWN_DECODER_COPIES)
    if oriented_by_decoder:
        decoding += 1  # Pillow orients TIFF pixels into a second buffer as it decodes
    return float(decoding), float(kept)
