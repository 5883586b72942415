"""Signed URLs of files: the URL cache, the signing flow and batch signing.

The single home of what `FileObject.sign()`, `sign_async()`, `sign_upload()` and
`sign_files()` do; `file_object.py` keeps their thin facades. It sees a file through
[`SignableFile`][sqlalchemy_obstore._sign.SignableFile]: its public fields and its state
dict (`file.__dict__`), where two private entries are read:

- `_registry`: the registry the file resolves its backend key in (`None`: `storages`);
- `_sign_cache`: the file's **URL cache**, `{expires_in: (url, reuse_until)}`. Only
  download URLs are cached, keyed by an `int` or `timedelta` lifetime, and one is handed
  out again only while more than half of its lifetime remains (`reuse_until`, a
  `time.time()`), so a URL is never handed out nearly expired. The file replaces the cache
  with an empty read-only mapping whenever it changes; this module gives it a dict of its
  own on the first write.

Signing one download is the backend's per-file step,
[`Backend.sign_download`][sqlalchemy_obstore.backends.Backend.sign_download] (wrappers
forward it, so they run the same path as the store they wrap).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from time import time as now
from typing import Any, Protocol

from ._errors import FileObjectError, InvalidFileObjectError, NoContentError
from ._file_backend import file_backend, file_backend_key
from ._io import Call, Gather, Plan
from ._keys import build_key
from ._mutable import set_quietly
from ._registry import BackendRegistry, storages
from .backends import Backend, SignedURL

__all__ = (
    "SignableFile",
    "cached_url",
    "signed_download",
    "signed_download_async",
    "signed_upload",
    "signing_files",
    "signing_upload",
)


class SignableFile(Protocol):
    """A file as signing sees it (a `FileObject`): public fields and its state dict."""

    path: str | None

    @property
    def backend(self) -> str | None:
        """The backend key."""

    @property
    def filename(self) -> str | None:
        """The display filename (new upload keys are built from it)."""

    @property
    def has_pending_content(self) -> bool:
        """Whether content waits to be uploaded."""


# -- the URL cache ---------------------------------------------------------------------------------
def cached_url(state: dict[str, Any], expires_in: object) -> str | None:
    """The cached URL of a file (its state dict), signed for exactly this `expires_in`.

    `None` when there is none that may still be handed out.
    """
    kind = expires_in.__class__
    if kind is not int and kind is not timedelta:
        return None  # (floats, bools and anything invalid are signed, checked, every time)
    cache = state["_sign_cache"]  # (empty: the shared read-only mapping, slow to ask)
    entry: tuple[str, float] | None = cache.get(expires_in) if cache else None
    if entry is not None and now() < entry[1]:
        return entry[0]
    return None


def _remember(
    state: dict[str, Any], expires_in: object, url: str, seconds: float, signed_at: float
) -> str:
    """Cache `url`, valid for `seconds` from `signed_at`, on the file whose state is `state`."""
    kind = expires_in.__class__
    if kind is int or kind is timedelta:
        entry = (url, signed_at + seconds / 2)  # handed out during the first half only
        cache = state["_sign_cache"]
        if cache.__class__ is dict:
            cache[expires_in] = entry
        else:  # (the shared empty mapping of a file that has cached nothing since it changed)
            state["_sign_cache"] = {expires_in: entry}
    return url


# -- where a file is signed ------------------------------------------------------------------------
def _registry(state: dict[str, Any]) -> BackendRegistry:
    # (as `FileObject` resolves its backend for every other operation)
    registry: BackendRegistry = state["_registry"] or storages
    return registry


def _stored(file: SignableFile, state: dict[str, Any]) -> tuple[Backend, str]:
    """The backend and path of a stored file.

    Raises:
        NoContentError: If it has not been saved.
        FileObjectError: If it has no backend key.
        BackendNotFoundError: If nothing is registered under its key.
    """
    path, key = state["path"], state["backend"]
    if path is None:
        raise NoContentError(
            f"{file!r} has not been saved yet: save it (or commit the session) first.",
            backend=key,
        )
    return file_backend(state), path


def _no_backend(file: SignableFile) -> FileObjectError:
    return FileObjectError(
        f"{file!r} has no backend: pass backend= or assign it to a StoredObject column."
    )


# -- one file --------------------------------------------------------------------------------------
# The two executors of signing one file: the sync or async call of its backend between
# the shared steps. (`FileObject.sign_async` asks the URL cache before it awaits.)
def signed_download(file: SignableFile, expires_in: int | timedelta) -> str:
    """A stored file's download URL: from its cache, else signed by its backend and cached.

    Signed with [`Backend.sign_download`][sqlalchemy_obstore.backends.Backend.sign_download].

    Raises:
        NoContentError: If the file has not been saved.
        FileObjectError: If it has no backend key.
    """
    state = file.__dict__
    if (url := cached_url(state, expires_in)) is not None:
        return url
    backend, path = _stored(file, state)
    url, seconds = backend.sign_download(path, expires_in)
    return _remember(state, expires_in, url, seconds, now())


async def signed_download_async(file: SignableFile, expires_in: int | timedelta) -> str:
    """Async version of `signed_download`, for a URL not in the cache (not asked again)."""
    state = file.__dict__
    backend, path = _stored(file, state)
    url, seconds = await backend.sign_download_async(path, expires_in)
    return _remember(state, expires_in, url, seconds, now())


def signing_upload(file: SignableFile, expires_in: int | timedelta) -> Plan[str]:
    """What `file.sign(for_upload=True)` does: a fresh key, its PUT URL, then the key recorded.

    Raises:
        FileObjectError: If the file is stored or has pending content (stored keys are
            immutable), or has no backend key.
        UnsupportedOperationError: If the store cannot sign.
    """
    if file.path is not None or file.has_pending_content:
        raise FileObjectError(
            f"Refusing to sign an upload to {file!r}: stored keys are immutable. Sign the "
            "upload on a new FileObject(filename=...) without content; it gets a fresh key.",
            backend=file.backend,
            path=file.path,
        )
    key = file_backend_key(file.__dict__)  # (the default backend's, when it names none)
    backend = _registry(file.__dict__).get_backend(key)
    if not backend.supports_signing:
        raise backend.unsupported("Signing URLs")
    path = build_key(file.filename, prefix=backend.prefix, key_function=backend.key_function)
    lifetime = backend.check_expiry(expires_in)
    url: str = yield Call(backend.sign, backend.sign_async, path, method="PUT", expires_in=lifetime)
    # Recorded only now: a refused lifetime or a failed signing leaves the file unchanged
    # and retryable.
    if file.backend is None:  # (the default backend's key; the path's assignment notifies)
        set_quietly(file, backend=key)
    file.path = path
    return url


def signed_upload(file: SignableFile, url: str, expires_in: int | timedelta) -> SignedURL:
    """The PUT `url` signed for `file`, with the headers a client sends and its expiry."""
    key = file.backend
    if key is None:
        raise _no_backend(file)
    backend = _registry(file.__dict__).get_backend(key)
    return SignedURL(
        url=url,
        method="PUT",
        headers=dict(backend.upload_headers),
        expires_at=datetime.now(timezone.utc) + backend.check_expiry(expires_in),
    )


# -- many files ------------------------------------------------------------------------------------
class _Batch:
    """The files of one backend that `sign_files` signs in one call."""

    __slots__ = ("backend", "indexes", "lifetime", "paths", "states")

    def __init__(self, backend: Backend, lifetime: timedelta) -> None:
        self.backend = backend
        self.lifetime = lifetime
        self.paths: list[str] = []
        self.states: list[dict[str, Any]] = []
        self.indexes: list[int] = []


def signing_files(
    files: Iterable[SignableFile], expires_in: int | timedelta, kind: type[SignableFile]
) -> Plan[list[str]]:
    """What `sign_files` does: cached URLs in place, one `Backend.sign` call per backend.

    The batches of different backends are signed concurrently in async code; each new
    URL is cached on its file, as `file.sign()` would.

    Args:
        files: The files to sign, in order.
        expires_in: Their lifetime (checked once per backend, before anything is signed).
        kind: The class every file must be (`FileObject`).
    """
    files = list(files)
    urls: list[str | None] = [None] * len(files)
    batches: dict[int, _Batch] = {}
    for index, file in enumerate(files):
        if file.__class__ is not kind and not isinstance(file, kind):
            raise InvalidFileObjectError(
                f"sign_files() signs FileObjects, not {type(file).__name__}."
            )
        state = file.__dict__
        url = cached_url(state, expires_in)
        if url is not None:
            urls[index] = url
            continue
        backend, path = _stored(file, state)
        batch = batches.get(id(backend))
        if batch is None:
            if not backend.supports_signing:  # (refused before anything is signed)
                raise backend.unsupported("Signing URLs", path)
            batch = batches[id(backend)] = _Batch(backend, backend.check_expiry(expires_in))
        batch.paths.append(path)
        batch.states.append(state)
        batch.indexes.append(index)
    if batches:
        signed = yield Gather(
            Call(b.backend.sign, b.backend.sign_async, b.paths, expires_in=b.lifetime)
            for b in batches.values()
        )
        for outcome in signed:  # (nothing is cached when a batch failed)
            if isinstance(outcome, BaseException):
                raise outcome
        signed_at = now()
        for batch, batch_urls in zip(batches.values(), signed, strict=True):
            seconds = batch.lifetime.total_seconds()
            for state, index, url in zip(batch.states, batch.indexes, batch_urls, strict=True):
                urls[index] = _remember(state, expires_in, url, seconds, signed_at)
    return urls  # type: ignore[return-value]  # (every index is filled)
