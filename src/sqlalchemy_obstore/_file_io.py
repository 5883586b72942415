"""What a `FileObject` does with the object it names: read, check, delete and sign it.

[`FileIOMethods`][sqlalchemy_obstore._file_io.FileIOMethods] is one of `FileObject`'s
bases: each method is a thin facade over the backend (or over `_sign`, `_upload`), in
the way obstore's `ObjectStoreMethods` delegates to its functions. Sync and async twins
stand side by side, each calling the backend's native obstore operation.

The methods type `self` as a [`StoredFile`][sqlalchemy_obstore._file_io.StoredFile]:
what they need of the file (its fields, `_stored()`), so this module never imports
`FileObject`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Protocol, TypeVar

from ._fields import apply_info
from ._io import bridge, run_async, run_sync
from ._sign import (
    SignableFile,
    cached_url,
    signed_download,
    signed_download_async,
    signed_upload,
    signing_upload,
)
from ._upload import PendingFile, verify_stored
from .backends import DEFAULT_CHUNK_SIZE

if TYPE_CHECKING:
    from .backends import Backend, SignedURL

__all__ = ("FileIOMethods", "StoredFile")


class StoredFile(PendingFile, SignableFile, Protocol):
    """A file as its I/O facades see it (a `FileObject`)."""

    def _stored(self) -> tuple[Backend, str]:
        """The backend and path of the stored object (raises when not saved)."""


# The pre-PEP 673 spelling of `Self`: `typing.Self` cannot go with a `self` typed as a
# protocol, and this one reads as `Self` in the generated signatures.
Self = TypeVar("Self", bound=StoredFile)


class FileIOMethods:
    """The reading, checking, deleting and signing methods of `FileObject`."""

    __slots__ = ()

    # -- reading ----------------------------------------------------------------------------------
    def get_content(self: StoredFile) -> bytes:
        """Read the whole stored object into memory.

        Raises:
            NoContentError: If the file has not been saved.
            ObjectNotFoundError: If the object is missing from the store.
        """
        backend, path = self._stored()
        return backend.get_bytes(path)

    async def get_content_async(self: StoredFile) -> bytes:
        """Async version of
        [`get_content`][sqlalchemy_obstore.file_object.FileObject.get_content].
        """
        backend, path = self._stored()
        return await backend.get_bytes_async(path)

    def iter_chunks(self: StoredFile, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
        """Stream the stored object in chunks of about `chunk_size` bytes (bounded memory)."""
        backend, path = self._stored()
        return backend.iter_chunks(path, chunk_size=chunk_size)

    def iter_chunks_async(
        self: StoredFile, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> AsyncIterator[bytes]:
        """Async version of
        [`iter_chunks`][sqlalchemy_obstore.file_object.FileObject.iter_chunks].
        """
        backend, path = self._stored()
        return backend.iter_chunks_async(path, chunk_size=chunk_size)

    def get_range(self: StoredFile, start: int, length: int) -> bytes:
        """Read `length` bytes from offset `start` (fewer at the end of the object)."""
        backend, path = self._stored()
        return backend.get_range(path, start, length)

    async def get_range_async(self: StoredFile, start: int, length: int) -> bytes:
        """Async version of [`get_range`][sqlalchemy_obstore.file_object.FileObject.get_range]."""
        backend, path = self._stored()
        return await backend.get_range_async(path, start, length)

    def exists(self: StoredFile) -> bool:
        """Whether the stored object exists (`False` for an unsaved file)."""
        if self.path is None:
            return False
        backend, path = self._stored()
        return backend.exists(path)

    async def exists_async(self: StoredFile) -> bool:
        """Async version of [`exists`][sqlalchemy_obstore.file_object.FileObject.exists]."""
        if self.path is None:
            return False
        backend, path = self._stored()
        return await backend.exists_async(path)

    # -- checking ---------------------------------------------------------------------------------
    def verify(self: StoredFile, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> bool:
        """Stream the stored object and check it against the recorded checksum and size.

        Returns:
            `True` when the object matches.

        Raises:
            ChecksumMismatchError: If the stored bytes differ from what was recorded.
            ObjectNotFoundError: If the object is missing.
            FileObjectError: If no checksum is recorded (or its algorithm is unknown).
            NoContentError: If the file has not been saved.

        Example:
            >>> from sqlalchemy_obstore import FileObject, ObstoreBackend, storages
            >>> with storages.temporary(ObstoreBackend("uploads", "memory://")):
            ...     FileObject(filename="a.txt", content=b"hi", backend="uploads").save().verify()
            True
        """
        backend, path = self._stored()
        return verify_stored(self, backend, path, chunk_size)

    async def verify_async(self: StoredFile, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> bool:
        """Async version of [`verify`][sqlalchemy_obstore.file_object.FileObject.verify]."""
        return await bridge(FileIOMethods.verify, self, chunk_size=chunk_size)

    def refresh(self: Self) -> Self:
        """Reload size, etag, version, last-modified and content type from the store.

        Raises:
            ObjectNotFoundError: If the object is missing.
        """
        backend, path = self._stored()
        apply_info(self, backend.head(path))
        return self

    async def refresh_async(self: Self) -> Self:
        """Async version of [`refresh`][sqlalchemy_obstore.file_object.FileObject.refresh]."""
        backend, path = self._stored()
        apply_info(self, await backend.head_async(path))
        return self

    # -- deleting ---------------------------------------------------------------------------------
    def delete(self: StoredFile) -> None:
        """Delete the stored object now (missing objects are not an error).

        This acts outside any transaction. To remove a file from a row, assign `None`
        (or remove it from the list): the session deletes it after the commit.
        """
        backend, path = self._stored()
        backend.delete(path)

    async def delete_async(self: StoredFile) -> None:
        """Async version of [`delete`][sqlalchemy_obstore.file_object.FileObject.delete]."""
        backend, path = self._stored()
        await backend.delete_async(path)

    # -- signing ----------------------------------------------------------------------------------
    def sign(
        self: StoredFile, *, expires_in: int | timedelta = 3600, for_upload: bool = False
    ) -> str:
        """Return a signed URL for downloading (GET) or, with `for_upload`, uploading (PUT).

        Download URLs are cached and reused while more than half their lifetime remains.
        An upload URL is issued only for a file with no stored object yet: it gets a fresh
        key, the client PUTs there (with `backend.upload_headers`), `refresh()` records it.

        Args:
            expires_in: Lifetime in seconds or as a timedelta.
            for_upload: Sign a PUT instead of a GET.

        Raises:
            UnsupportedOperationError: If the store cannot sign (local, memory).
            InvalidExpiryError: If the lifetime is not positive or exceeds the store's
                limit (7 days on S3 and GCS).
        """
        if for_upload:
            return run_sync(signing_upload(self, expires_in))
        return signed_download(self, expires_in)  # (the cached URL, if there is one)

    async def sign_async(
        self: StoredFile, *, expires_in: int | timedelta = 3600, for_upload: bool = False
    ) -> str:
        """Async version of [`sign`][sqlalchemy_obstore.file_object.FileObject.sign]."""
        if for_upload:
            return await run_async(signing_upload(self, expires_in))
        if (url := cached_url(self.__dict__, expires_in)) is not None:
            return url
        return await signed_download_async(self, expires_in)

    def sign_upload(self: StoredFile, *, expires_in: int | timedelta = 300) -> SignedURL:
        """Like `sign(for_upload=True)`, returning the URL with the headers to send."""
        return signed_upload(self, run_sync(signing_upload(self, expires_in)), expires_in)

    async def sign_upload_async(
        self: StoredFile, *, expires_in: int | timedelta = 300
    ) -> SignedURL:
        """Async version of
        [`sign_upload`][sqlalchemy_obstore.file_object.FileObject.sign_upload].
        """
        url = await run_async(signing_upload(self, expires_in))
        return signed_upload(self, url, expires_in)
