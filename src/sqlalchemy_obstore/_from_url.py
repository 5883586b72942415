"""The content and naming of a file downloaded from a URL (`FileObject.from_url`).

`remote_content` gives the constructor's `content`, `filename` and `content_type` for
the URL, and `attach(file)`: once attached, the final response names the file (its
`Content-Disposition` and `Content-Type`) where the caller gave no name or type.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._attributes import guess_content_type
from ._mutable import set_quietly

if TYPE_CHECKING:
    from ._remote import RemoteResponse

__all__ = ("remote_content",)


class _Naming:
    """Names the attached file from the final response (the `on_response` callback)."""

    __slots__ = ("_content_type", "_file", "_filename")

    def __init__(self, filename: str | None, content_type: str | None) -> None:
        self._filename = filename
        self._content_type = content_type
        self._file: weakref.ref[Any] | None = None

    def attach(self, file: object) -> None:
        self._file = weakref.ref(file)

    def __call__(self, response: RemoteResponse) -> None:
        file = self._file() if self._file is not None else None
        if file is None:
            return
        # Set without marking rows dirty: the save that is running does that.
        if self._filename is None and response.filename:
            set_quietly(file, filename=response.filename)
        if self._content_type is None:
            content_type = response.content_type or guess_content_type(file.filename)
            set_quietly(file, content_type=content_type)


def remote_content(
    url: str, filename: str | None, content_type: str | None, **fetch: Any
) -> tuple[dict[str, Any], Callable[[object], None]]:
    """The constructor keywords of a file downloading `url`, and `attach(file)`.

    `fetch` holds `RemoteSource`'s keywords. The filename is `filename`, else the URL's
    last path segment, else `"file"`. Call `attach` with the file built, so that the
    response can name it.
    """
    from ._remote import RemoteSource  # (only files from URLs need the HTTP machinery)

    naming = _Naming(filename, content_type)
    source = RemoteSource(url, on_response=naming, **fetch)
    name = filename if filename is not None else source.filename or "file"
    return {"filename": name, "content": source, "content_type": content_type}, naming.attach
