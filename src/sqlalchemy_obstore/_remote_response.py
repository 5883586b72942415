"""What a remote fetch learns from the response: its type, length and suggested filename.

The server is not trusted: a name from `Content-Disposition` (or the URL's last path
segment) is reduced with `sanitize_filename`, a type that is not a plain MIME type is
dropped. `RemoteResponse` and `filename_from_content_disposition` are documented, and
imported, from `sqlalchemy_obstore.remote`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote

from ._keys import sanitize_filename

if TYPE_CHECKING:
    import httpx

__all__ = ("RemoteResponse", "filename_from_content_disposition", "mime_type", "url_filename")

_DISPOSITION_PARAM = re.compile(
    r";\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*=\s*(\"(?:[^\"\\]|\\.)*\"|[^;]*)"
)
_MIME_TYPE = re.compile(r"^[!#$%&'*+.^_`|~0-9a-z-]+/[!#$%&'*+.^_`|~0-9a-z-]+$")


def _last_segment(name: str) -> str:
    return name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1].strip()


def filename_from_content_disposition(value: str | None) -> str | None:
    """The filename a `Content-Disposition` header suggests (RFC 6266), if any.

    `filename*` (RFC 5987, percent-encoded with a charset) wins over `filename`.
    The server is not trusted: the name is reduced with
    [`sanitize_filename`][sqlalchemy_obstore.keys.sanitize_filename] (no directories,
    control or bidi characters, lone surrogates or NUL; bounded length). It is display
    data only (object keys are built from a key-safe form of it).

    Args:
        value: The header value.

    Returns:
        The filename, or `None` when the header names none.

    Example:
        >>> filename_from_content_disposition('attachment; filename="a.txt"')
        'a.txt'
        >>> filename_from_content_disposition(
        ...     "attachment; filename=x.txt; filename*=UTF-8''%E2%82%AC%20rates.txt"
        ... )
        '€ rates.txt'
    """
    if not value:
        return None
    params: dict[str, str] = {}
    for name, raw in _DISPOSITION_PARAM.findall(";" + value.split(";", 1)[-1]):
        text = raw.strip()
        if text.startswith('"') and text.endswith('"') and len(text) >= 2:
            text = re.sub(r"\\(.)", r"\1", text[1:-1])
        params.setdefault(name.lower(), text)
    extended = params.get("filename*")
    if extended is not None and extended.count("'") >= 2:
        charset, _language, encoded = extended.split("'", 2)
        try:
            name = unquote(encoded, encoding=charset or "utf-8", errors="replace")
        except LookupError:  # unknown charset
            name = unquote(encoded, errors="replace")
        if _last_segment(name):
            return _display_name(name)
    plain = params.get("filename")
    return _display_name(plain) if plain else None


def _display_name(name: str) -> str | None:
    """A name suggested by the server, made safe to show and store (`None` if empty)."""
    leaf = _last_segment(name)
    return sanitize_filename(leaf) if leaf else None


def mime_type(value: str | None) -> str | None:
    """The MIME type of a `Content-Type` value, without parameters (`None` if not one)."""
    if not value:
        return None
    mime = value.split(";", 1)[0].strip().lower()
    return mime if _MIME_TYPE.match(mime) else None


def url_filename(url: httpx.URL) -> str | None:
    """The filename a URL's last path segment suggests, made safe (`None` if empty)."""
    return _display_name(url.path)


@dataclass(frozen=True, slots=True)
class RemoteResponse:
    """What the server said about the body being downloaded.

    Attributes:
        url: The final URL (after redirects), in display form (no credentials, query
            values redacted).
        status: The HTTP status code.
        content_type: The MIME type from `Content-Type`, without parameters.
        content_length: The declared `Content-Length`, if any.
        filename: The name from `Content-Disposition`, else the final URL's last path
            segment, else `None`; sanitised (see `filename_from_content_disposition`).

    Example:
        >>> RemoteResponse("https://example.com/a.txt", 200, "text/plain", 2, "a.txt").filename
        'a.txt'
    """

    url: str
    status: int
    content_type: str | None
    content_length: int | None
    filename: str | None
