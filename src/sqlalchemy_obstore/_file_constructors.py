"""The constructors of a pending `FileObject` from outside content: a URL, a form upload.

[`FileConstructors`][sqlalchemy_obstore._file_constructors.FileConstructors] is one of
`FileObject`'s bases. Each classmethod turns its source into constructor keywords
(`_from_url.remote_content`, `_form_upload.form_upload`) and calls the class: nothing
is fetched or read until the file is saved. This module never imports `FileObject`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from ._form_upload import form_upload
from ._from_url import remote_content

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ("FileConstructors",)

T = TypeVar("T")


def _new(cls: type[T]) -> Callable[..., T]:
    """`cls` as a constructor taking `FileObject`'s keywords (which this base cannot see)."""
    return cls


class FileConstructors:
    """The `from_url` and `from_upload` classmethods of `FileObject`."""

    __slots__ = ()

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        filename: str | None = None,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        backend: str | None = None,
        timeout: float | None = 30.0,
        deadline: float | None = 300.0,
        max_size: int | None = None,
        max_redirects: int = 3,
        allow_private: bool = False,
        allow_networks: Iterable[str] = (),
        headers: Mapping[str, str] | None = None,
        forward_headers: Iterable[str] = (),
    ) -> Self:
        """A pending file whose content is downloaded from `url` when it is saved.

        Nothing is fetched here: `save()`, `save_async()` or a flush streams the body
        into storage with bounded memory (a failed upload leaves the file pending). The
        fetch is guarded against server-side request forgery: see
        [`RemoteSource`][sqlalchemy_obstore.remote.RemoteSource], which documents the
        fetch options below in full. A `filename` or `content_type` not given is taken
        from the response (`Content-Disposition`, `Content-Type`); the object key is
        built before the download, from the name given or the URL's last segment.

        Args:
            url: The `http://` or `https://` URL to download.
            filename: Display name; defaults as described above.
            content_type: MIME type; defaults to the response's `Content-Type`.
            metadata: Custom str→str metadata.
            backend: Backend key (or leave it to the column).
            timeout: Seconds for resolving, for connecting, and for each wait for data.
            deadline: Seconds for the whole fetch; `None` turns it off.
            max_size: Largest body accepted, in bytes.
            max_redirects: Redirects to follow, each checked like the first URL.
            allow_private: Allow loopback, private and other blocked addresses.
            allow_networks: Blocked networks to allow anyway, e.g. `("10.1.0.0/16",)`.
            headers: Extra request headers, sent to the URL's origin only.
            forward_headers: Names of `headers` that may follow a redirect elsewhere.

        Raises:
            MissingDependencyError: If httpx is not installed (the `http` extra).
            ForbiddenAddressError: Now, for a URL that is not http(s), has credentials
                or names a blocked IP literal; at save time for blocked hosts and hops.
            RemoteTimeoutError: At save time, past `timeout` or `deadline`.
            RemoteFetchError: At save time, for a non-2xx answer, too many redirects,
                an undecodable body or a network failure.
            FileTooLargeError: At save time, when the body passes `max_size`.

        Example:
            >>> from sqlalchemy_obstore import FileObject
            >>> f = FileObject.from_url("https://example.com/files/report.pdf", backend="b")
            >>> f.filename, f.content_type, f.has_pending_content
            ('report.pdf', 'application/pdf', True)
        """
        fields, attach = remote_content(
            url,
            filename,
            content_type,
            timeout=timeout,
            deadline=deadline,
            max_size=max_size,
            max_redirects=max_redirects,
            allow_private=allow_private,
            allow_networks=allow_networks,
            headers=headers,
            forward_headers=forward_headers,
        )
        file = _new(cls)(**fields, metadata=metadata, backend=backend)
        attach(file)
        return file

    @classmethod
    def from_upload(
        cls,
        upload: Any,
        *,
        backend: str | None = None,
        filename: str | None = None,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> Self:
        """A pending file streamed from a Starlette/FastAPI or Litestar `UploadFile`.

        Nothing is read here; saving streams from the framework's spooled file. See
        [`file_from_upload`][sqlalchemy_obstore.uploads.file_from_upload].

        Example:
            >>> import io
            >>> from sqlalchemy_obstore import FileObject
            >>> from types import SimpleNamespace
            >>> upload = SimpleNamespace(file=io.BytesIO(b"hi"), filename="a.txt")
            >>> FileObject.from_upload(upload).size
            2
        """
        parts = form_upload(upload, filename=filename, content_type=content_type)
        return _new(cls)(**parts._asdict(), backend=backend, metadata=metadata)
