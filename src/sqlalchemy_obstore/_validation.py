"""The implementation of `sqlalchemy_obstore.validation`, documented and imported there."""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeAlias

from ._attributes import ACTIVE_CONTENT_TYPES
from ._errors import (
    ConfigurationError,
    InvalidSizeError,
)

if TYPE_CHECKING:
    from ._processing import ImagePolicy

__all__ = (
    "SIZE_UNITS",
    "SNIFF_BYTES",
    "UploadPolicy",
    "Validator",
    "detect_content_type",
    "effective_policy",
    "parse_size",
)

Validator: TypeAlias = "Callable[[Any, bytes], None]"
"""A custom check: called with the `FileObject` being saved and its first bytes; raise to
refuse the upload."""

SNIFF_BYTES = 65536
"""How many leading bytes `detect_content_type` looks at."""


SIZE_UNITS: dict[str, int] = {
    "B": 1,
    "KB": 1000,
    "KiB": 1024,
    "MB": 1000**2,
    "MiB": 1024**2,
    "GB": 1000**3,
    "GiB": 1024**3,
    "TB": 1000**4,
    "TiB": 1024**4,
}
"""The units `parse_size` reads: decimal (SI, powers of 1000) and binary (IEC, powers of
1024). Case does not matter: `"5 mib"` is `"5 MiB"`."""

_UNITS = {unit.lower(): factor for unit, factor in SIZE_UNITS.items()}
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", re.ASCII)


def parse_size(value: int | str) -> int:
    """A number of bytes, from an int or a string such as `"5 MiB"`.

    A string is a decimal number, optional blanks and one unit of `SIZE_UNITS`
    (`B`, `KB`, `KiB`, `MB`, `MiB`, `GB`, `GiB`, `TB`, `TiB`, case-insensitive; no unit
    means bytes). `KB` is 1000 bytes and `KiB` 1024, as their standards say. A fraction
    is taken exactly and must come to a whole number of bytes: `"1.5 KiB"` is 1536,
    `"1.1 B"` is refused.

    Args:
        value: A non-negative int, or such a string.

    Raises:
        InvalidSizeError: For anything else (negative numbers, unknown units such as
            `"5 M"` or `"5 kbit"`, fractions of a byte, `bool`).

    Example:
        >>> from sqlalchemy_obstore.validation import parse_size
        >>> parse_size("5 MiB"), parse_size("5MB"), parse_size("1.5 KiB"), parse_size(42)
        (5242880, 5000000, 1536, 42)
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise InvalidSizeError(f"A size cannot be negative: {value!r}.")
        return value
    if not isinstance(value, str):
        raise InvalidSizeError(
            f"A size is a number of bytes or a string such as '5 MiB', not {value!r}."
        )
    match = _SIZE.fullmatch(value)
    factor = _UNITS.get(match.group(2).lower() or "b") if match else None
    if match is None or factor is None:
        raise InvalidSizeError(
            f"Not a size: {value!r}. Write a number and one of the units "
            f"{', '.join(SIZE_UNITS)} (KB = 1000 bytes, KiB = 1024), e.g. '5 MiB'."
        )
    exact = Decimal(match.group(1)) * factor
    if exact != exact.to_integral_value():
        raise InvalidSizeError(f"{value!r} is not a whole number of bytes ({exact}).")
    return int(exact)


def _normalise_types(values: Iterable[str] | None) -> tuple[str, ...] | None:
    if values is None:
        return None
    if isinstance(values, str):
        values = (values,)
    result = []
    for value in values:
        if not isinstance(value, str) or "/" not in value:
            raise ConfigurationError(
                f"allowed_content_types takes MIME types or patterns such as 'image/*', "
                f"not {value!r}."
            )
        result.append(value.split(";", 1)[0].strip().lower())
    return tuple(result)


def _normalise_extensions(values: Iterable[str] | None) -> tuple[str, ...] | None:
    if values is None:
        return None
    if isinstance(values, str):
        values = (values,)
    result = []
    for value in values:
        if not isinstance(value, str) or not value.strip(". "):
            raise ConfigurationError(
                f"allowed_extensions takes extensions such as '.pdf', not {value!r}."
            )
        value = value.strip().lower()
        result.append(value if value.startswith(".") else "." + value)
    return tuple(result)


@dataclass(frozen=True, init=False)
class UploadPolicy:
    """What an upload may contain; immutable and hashable (usable in column types).

    Every field left at `None` means "no restriction here" and, when policies are
    layered (backend → column → save), "inherit from the layer below".

    Args:
        max_size: Largest allowed content, in bytes (or a size string such as
            `"5 MiB"`, see [`parse_size`][sqlalchemy_obstore.validation.parse_size]);
            enforced while streaming.
        min_size: Smallest allowed content, in bytes or as a size string; checked when
            the content ends.
        allowed_content_types: MIME types or `type/*` patterns. Wildcards never match
            active types (HTML, SVG, XML, JavaScript): list those explicitly.
        allowed_extensions: Allowed filename endings such as `".pdf"` or `".tar.gz"`,
            compared case-insensitively.
        sniff: Detect the content type from the bytes and store the detected type.
            By default (`None`) sniffing is on exactly when `allowed_content_types` is
            set; the client's type and the extension are then never trusted.
        validators: Callables `(file, head) -> None` that raise (preferably
            `ValidationError`) to refuse an upload; `head` is the first part of the
            content. They run before the upload starts.
        image: An [`ImagePolicy`][sqlalchemy_obstore.processing.ImagePolicy]: accept
            only images within its limits, normalise them and generate renditions
            (needs the `images` extra). Layers replace it as a whole. See
            [`sqlalchemy_obstore.processing`][sqlalchemy_obstore.processing].

    Raises:
        ConfigurationError: For negative sizes, `min_size > max_size`, or malformed
            types, extensions or validators; `InvalidSizeError` (a `ConfigurationError`)
            for a size string that is not one.

    Example:
        >>> from sqlalchemy_obstore.validation import UploadPolicy
        >>> policy = UploadPolicy(max_size=5 * 2**20, allowed_extensions=(".PDF",))
        >>> policy.allowed_extensions
        ('.pdf',)
        >>> policy.sniffs
        False
        >>> UploadPolicy(max_size="5 MiB").max_size
        5242880
    """

    max_size: int | None = None
    min_size: int | None = None
    allowed_content_types: tuple[str, ...] | None = None
    allowed_extensions: tuple[str, ...] | None = None
    sniff: bool | None = None
    validators: tuple[Validator, ...] = field(default=())
    image: ImagePolicy | None = None

    def __init__(
        self,
        max_size: int | str | None = None,
        min_size: int | str | None = None,
        allowed_content_types: tuple[str, ...] | None = None,
        allowed_extensions: tuple[str, ...] | None = None,
        sniff: bool | None = None,
        validators: tuple[Validator, ...] = (),
        image: ImagePolicy | None = None,
    ) -> None:
        set_ = object.__setattr__
        set_(self, "max_size", None if max_size is None else _size("max_size", max_size))
        set_(self, "min_size", None if min_size is None else _size("min_size", min_size))
        set_(self, "allowed_content_types", allowed_content_types)
        set_(self, "allowed_extensions", allowed_extensions)
        set_(self, "sniff", sniff)
        set_(self, "validators", validators)
        set_(self, "image", image)
        self.__post_init__()

    def __post_init__(self) -> None:
        if self.image is not None:
            from ._processing import ImagePolicy

            if not isinstance(self.image, ImagePolicy):
                raise ConfigurationError(f"image takes an ImagePolicy, not {self.image!r}.")
        for name in ("max_size", "min_size"):
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 0
            ):
                raise ConfigurationError(f"{name} must be a non-negative int, not {value!r}.")
        if (
            self.max_size is not None
            and self.min_size is not None
            and self.min_size > self.max_size
        ):
            raise ConfigurationError(
                f"min_size ({self.min_size}) is larger than max_size ({self.max_size})."
            )
        set_ = object.__setattr__
        set_(self, "allowed_content_types", _normalise_types(self.allowed_content_types))
        set_(self, "allowed_extensions", _normalise_extensions(self.allowed_extensions))
        validators = self.validators
        if callable(validators):
            validators = (validators,)
        validators = tuple(validators)
        for validator in validators:
            if not callable(validator):
                raise ConfigurationError(f"validators must be callables, not {validator!r}.")
        set_(self, "validators", validators)

    @property
    def sniffs(self) -> bool:
        """Whether the content type is detected from the bytes.

        Example:
            >>> UploadPolicy(allowed_content_types=("image/*",)).sniffs
            True
        """
        if self.sniff is not None:
            return self.sniff
        return self.allowed_content_types is not None

    def merge(self, override: UploadPolicy | None) -> UploadPolicy:
        """Layer `override` on top of this policy.

        Fields `override` sets win; fields it leaves at `None` keep this policy's value.
        Validators of both run, this policy's first.

        Example:
            >>> base = UploadPolicy(max_size=100, allowed_extensions=(".png",))
            >>> merged = base.merge(UploadPolicy(max_size=10))
            >>> merged.max_size, merged.allowed_extensions
            (10, ('.png',))
        """
        if override is None:
            return self
        values: dict[str, Any] = {}
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(override, f.name)
            if f.name == "validators":
                values[f.name] = mine + tuple(v for v in theirs if v not in mine)
            else:
                values[f.name] = mine if theirs is None else theirs
        return UploadPolicy(**values)

    def allows_content_type(self, content_type: str | None) -> bool:
        """Whether `content_type` matches the allow-list (always, without one).

        Example:
            >>> policy = UploadPolicy(allowed_content_types=("image/*", "application/pdf"))
            >>> policy.allows_content_type("image/png"), policy.allows_content_type("text/html")
            (True, False)
        """
        if self.allowed_content_types is None:
            return True
        if content_type is None:
            return False
        base = content_type.split(";", 1)[0].strip().lower()
        for pattern in self.allowed_content_types:
            if pattern == base:
                return True
            family = pattern == "*/*" or (pattern.endswith("/*") and base.startswith(pattern[:-1]))
            if family and not _wildcard_excluded(base):
                return True
        return False

    def allows_filename(self, filename: str) -> bool:
        """Whether `filename` ends with an allowed extension (always, without a list).

        Example:
            >>> UploadPolicy(allowed_extensions=(".pdf",)).allows_filename("Report.PDF")
            True
        """
        if self.allowed_extensions is None:
            return True
        name = filename.lower()
        return any(name.endswith(ext) and len(name) > len(ext) for ext in self.allowed_extensions)


def _size(name: str, value: int | str) -> int:
    if isinstance(value, str):
        return parse_size(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigurationError(f"{name} must be a non-negative int, not {value!r}.")
    return value


def effective_policy(*layers: UploadPolicy | None) -> UploadPolicy | None:
    """Combine policies from the least to the most specific layer (`None`s skipped).

    Example:
        >>> effective_policy(None, UploadPolicy(max_size=1)).max_size
        1
    """
    result: UploadPolicy | None = None
    for layer in layers:
        if layer is not None:
            result = layer if result is None else result.merge(layer)
    return result


_ZIP = "application/zip"


def _wildcard_excluded(base: str) -> bool:
    """Active types a `type/*` or `*/*` pattern never matches (list them explicitly).

    Complete for what sniffing stores: the sniffer's active results are HTML, SVG,
    XHTML and XML, and a declared type refines an XML result only to a `+xml` type.
    """
    return base in ACTIVE_CONTENT_TYPES or base.endswith(("+xml", "/xml"))


# -- sniffing ---------------------------------------------------------------------------------
_SIMPLE_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
    (b"\x00\x00\x01\x00", "image/vnd.microsoft.icon"),
    (b"%PDF-", "application/pdf"),
    (b"\x1f\x8b", "application/gzip"),
    (b"BZh", "application/x-bzip2"),
    (b"\xfd7zXZ\x00", "application/x-xz"),
    (b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"),
    (b"ID3", "audio/mpeg"),
    (b"fLaC", "audio/flac"),
    (b"\xff\xfb", "audio/mpeg"),
    (b"\xff\xf3", "audio/mpeg"),
    (b"\xff\xf2", "audio/mpeg"),
)

_RIFF_TYPES = {b"WEBP": "image/webp", b"WAVE": "audio/wav", b"AVI ": "video/x-msvideo"}

_FTYP_BRANDS = {
    b"avif": "image/avif",
    b"avis": "image/avif",
    b"heic": "image/heic",
    b"heix": "image/heic",
    b"heim": "image/heic",
    b"heis": "image/heic",
    b"hevc": "image/heic-sequence",
    b"hevx": "image/heic-sequence",
    b"mif1": "image/heif",
    b"msf1": "image/heif-sequence",
    b"qt  ": "video/quicktime",
    b"M4A ": "audio/mp4",
    b"M4B ": "audio/mp4",
    b"3gp4": "video/3gpp",
    b"3gp5": "video/3gpp",
    b"3g2a": "video/3gpp2",
}

_OOXML_PARTS = (
    (b"word/", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    (b"xl/", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    (b"ppt/", "application/vnd.openxmlformats-officedocument.presentationml.presentation"),
)

# WHATWG MIME sniffing: these tags (followed by a space or ">") make a document HTML.
_HTML_TAGS = (
    b"<!doctype html",
    b"<html",
    b"<head",
    b"<script",
    b"<iframe",
    b"<h1",
    b"<div",
    b"<font",
    b"<table",
    b"<a",
    b"<style",
    b"<title",
    b"<b",
    b"<body",
    b"<br",
    b"<p",
)
_TAG_END = frozenset(b" \t\n\r\f>/")
_ODF_TYPE = re.compile(r"application/vnd\.oasis\.opendocument\.[a-z0-9.+-]+")
_WHITESPACE = b" \t\n\r\f"


def _zip_type(head: bytes) -> str:
    # ODF and EPUB store an uncompressed "mimetype" entry first (name at offset 30).
    # The entry names the document type, but it is the uploader's text: only ODF and
    # EPUB types are taken from it (a "mimetype" of application/pdf is still a ZIP).
    if head[30:38] == b"mimetype":
        extra = int.from_bytes(head[28:30], "little")
        start = 38 + extra
        declared = head[start : start + 100].split(b"PK", 1)[0].strip()
        if declared and all(32 < c < 127 for c in declared):
            name = declared.decode("ascii").lower()
            if _ODF_TYPE.fullmatch(name) or name == "application/epub+zip":
                return name
    window = head[:SNIFF_BYTES]
    if b"[Content_Types].xml" in window:
        for marker, content_type in _OOXML_PARTS:
            if b"PK\x03\x04" in window and _zip_has_entry_prefix(window, marker):
                return content_type
    return _ZIP


def _zip_has_entry_prefix(window: bytes, prefix: bytes) -> bool:
    """Whether a local file header in `window` names an entry starting with `prefix`."""
    position = window.find(b"PK\x03\x04")
    while position != -1 and position + 30 <= len(window):
        length = int.from_bytes(window[position + 26 : position + 28], "little")
        name = window[position + 30 : position + 30 + length]
        if name.startswith(prefix):
            return True
        position = window.find(b"PK\x03\x04", position + 4)
    return False


def _markup_type(text: bytes) -> str | None:
    lowered = text[:1024].lower()
    for tag in _HTML_TAGS:
        if lowered.startswith(tag) and (
            tag == b"<!--" or len(lowered) == len(tag) or lowered[len(tag)] in _TAG_END
        ):
            return "text/html"
    if lowered.startswith(b"<svg") and (len(lowered) == 4 or lowered[4] in _TAG_END):
        return "image/svg+xml"
    if lowered.startswith(b"<!--"):
        # A comment first: SVG if the root element is <svg>, else HTML (as browsers do).
        return "image/svg+xml" if _first_element(text[:4096].lower()) == b"svg" else "text/html"
    if lowered.startswith((b"<?xml", b"<!doctype svg")):
        # The root element comes after the prolog (declaration, comments, doctype).
        rest = text[:4096].lower()
        root = _first_element(rest)
        if root == b"svg":
            return "image/svg+xml"
        if root == b"html":
            return "application/xhtml+xml"
        return "application/xml"
    return None


def _first_element(text: bytes) -> bytes | None:
    position = 0
    while True:
        position = text.find(b"<", position)
        if position == -1 or position + 1 >= len(text):
            return None
        following = text[position + 1 : position + 2]
        if following in (b"?", b"!"):
            position += 1
            continue
        end = position + 1
        while end < len(text) and text[end] not in _TAG_END:
            end += 1
        return text[position + 1 : end].split(b":")[-1]


def _is_text(data: bytes) -> bool:
    if b"\x00" in data:
        return False
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:  # not final: the head may end in the middle of a character
        decoder.decode(data, final=False)
    except UnicodeDecodeError:
        return False
    return True


def _json_like(text: bytes) -> bool:
    first = text[:1]
    rest = text[1:].lstrip(_WHITESPACE)
    if first == b"{":
        return rest[:1] in (b'"', b"}")
    if first == b"[":
        return rest[:1] in (b"", *(bytes([c]) for c in b'{["-0123456789tfn]'))
    return False


def detect_content_type(head: bytes) -> str | None:
    """Detect a content type from the first bytes of a file.

    Looks at magic numbers (images, PDF, archives, audio and video containers, Office
    and OpenDocument files), then at markup (HTML, SVG, XML), JSON and plain UTF-8 text.
    Returns `None` for empty or unrecognised binary content. Pass at least a few KiB
    (up to [`SNIFF_BYTES`][sqlalchemy_obstore.validation.SNIFF_BYTES] are used).

    Args:
        head: The first bytes of the content (all of it, for small files).

    Example:
        >>> detect_content_type(b"\\x89PNG\\r\\n\\x1a\\n...")
        'image/png'
        >>> detect_content_type(b"  <!DOCTYPE html><p>hi")
        'text/html'
        >>> detect_content_type(b"hello") is None, detect_content_type(b"hello")
        (False, 'text/plain')
    """
    head = bytes(head[:SNIFF_BYTES])
    if not head:
        return None
    for signature, content_type in _SIMPLE_SIGNATURES:
        if head.startswith(signature):
            return content_type
    if head.startswith(b"RIFF") and head[8:12] in _RIFF_TYPES:
        return _RIFF_TYPES[head[8:12]]
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _FTYP_BRANDS:
            return _FTYP_BRANDS[brand]
        compatible = head[16 : int.from_bytes(head[:4], "big")]
        for offset in range(0, len(compatible) - 3, 4):
            if compatible[offset : offset + 4] in (b"avif", b"heic", b"mif1"):
                return _FTYP_BRANDS[compatible[offset : offset + 4]]
        return "video/mp4"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return _zip_type(head)
    if head[257:262] == b"ustar":
        return "application/x-tar"
    if head.startswith(b"OggS"):
        return "video/ogg" if b"\x80theora" in head[:512] else "audio/ogg"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm" if b"webm" in head[:64] else "video/x-matroska"
    if head.startswith(b"BM") and len(head) >= 14 and head[6:10] == b"\x00\x00\x00\x00":
        return "image/bmp"
    text = head[3:] if head.startswith(codecs.BOM_UTF8) else head
    stripped = text.lstrip(_WHITESPACE)
    if stripped.startswith(b"<"):
        markup = _markup_type(stripped)
        if markup is not None:
            return markup
    if not _is_text(text):
        return None
    if _json_like(stripped):
        return "application/json"
    return "text/plain"
