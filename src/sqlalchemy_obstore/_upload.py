"""Saving a file's pending content: what to upload and how, written once for both colours.

[`saving`][sqlalchemy_obstore._upload.saving] decides, without I/O, how a file's pending
content goes to its backend, and returns the work as an
[`_io`][sqlalchemy_obstore._io] step or plan that `run_sync` or `run_async` carries out
(`FileObject.save` and `save_async` are those two calls):

- **one buffer** ([`BufferedUpload`][sqlalchemy_obstore._upload.BufferedUpload]): bytes
  that fit in one part, with no upload policy and no declared size, so nothing to check
  while they are read. The backend's
  [`put_buffer`][sqlalchemy_obstore.backends.Backend.put_buffer] writes them in one
  create-only request, and the checksum is one hash call.
- **the upload plan** ([`uploading`][sqlalchemy_obstore._upload.uploading]) for
  everything else: a fresh key; the policy's checks on the name, on every chunk
  (sizes) and on the first part (sniffed type, validators); image processing and its
  renditions; the put; the end checks a store skipped; and on failure, the objects
  written so far deleted and the content given back rewound.

It works on the file's own state (its `__dict__`, see
[`PendingFile`][sqlalchemy_obstore._upload.PendingFile]) and never imports the
`FileObject` class: the caller passes it in where files are built (renditions).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from functools import partial
from typing import Any, Protocol, TypeVar

from ._attributes import content_disposition, object_attributes
from ._column import ImageFacts
from ._content import ContentCheckpoint, ContentReader, format_checksum, is_textual
from ._file_backend import file_backend
from ._guard import Guard
from ._image_job import (
    Derived,
    Processed,
    process_image,
    process_image_async,
    rendition_filename,
)
from ._io import Call, Plan, Step, as_call, iterate
from ._mutable import notify_holders, set_quietly
from .backends import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MAX_CONCURRENCY,
    Backend,
    WriteResult,
)
from .errors import ChecksumMismatchError, FileObjectError, InvalidFileObjectError, NoContentError
from .keys import KeyFunction, build_key, join_key
from .processing import ImagePolicy, rendition_path
from .validation import UploadPolicy, effective_policy

__all__ = (
    "BufferedUpload",
    "PendingFile",
    "SaveOptions",
    "Upload",
    "default_filename",
    "save_options",
    "saving",
    "uploading",
    "verify_stored",
)


@dataclass(frozen=True, slots=True)
class SaveOptions:
    """How new content is uploaded: key layout and multipart tuning.

    Columns carry one of these (built from their arguments); `FileObject.save` builds
    one from its keyword arguments.

    Attributes:
        key_prefix: Extra prefix after the backend's prefix (for a column whose prefix
            is derived from the row, the one derived for the row being flushed).
        key_function: Layout of the key below the prefixes (default `<uuid>/<name>`).
        use_multipart: Force (`True`) or forbid (`False`) multipart uploads.
        chunk_size: Multipart part size; content up to this size is one PUT.
        max_concurrency: Parts uploaded at once.
        cache_control: `Cache-Control` stored with the object.
        policy: [`UploadPolicy`][sqlalchemy_obstore.validation.UploadPolicy] layered on
            the backend's default policy (field by field) for this upload.
        compress: Store content of a compressible (textual) type gzip-compressed, with
            `Content-Encoding: gzip`, and record `content_encoding="gzip"` in the file.
            `size` and `checksum` then describe the stored, compressed bytes, and so do
            the library's reads (`get_content()` returns the gzip stream); a signed URL
            serves it with `Content-Encoding: gzip`, which browsers and HTTP clients
            decode. The policy's size limits apply to the original content. The
            content is compressed in memory. Binary types, images processed by an
            image policy, and stores that keep no object attributes (local files: no
            header could say so) are stored as they are.
    """

    key_prefix: str | None = None
    key_function: KeyFunction | None = None
    use_multipart: bool | None = None
    chunk_size: int = DEFAULT_CHUNK_SIZE
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    cache_control: str | None = None
    policy: UploadPolicy | None = None
    compress: bool = False


_DEFAULT_SAVE_OPTIONS = SaveOptions()
_utc_now = partial(datetime.now, timezone.utc)
"""The time an upload is recorded as done (`last_modified`)."""


def save_options(
    options: SaveOptions | None,
    policy: UploadPolicy | None,
    key_prefix: str | None,
    key_function: KeyFunction | None,
    use_multipart: bool | None,
    chunk_size: int,
    max_concurrency: int,
) -> SaveOptions:
    """The options of one `save()`: `options`, else its keywords; `policy` layered on top.

    With no keyword set, the shared default (no object built).
    """
    if options is None:
        if (
            key_prefix is None
            and key_function is None
            and use_multipart is None
            and chunk_size == DEFAULT_CHUNK_SIZE
            and max_concurrency == DEFAULT_MAX_CONCURRENCY
        ):
            options = _DEFAULT_SAVE_OPTIONS
        else:
            options = SaveOptions(
                key_prefix, key_function, use_multipart, chunk_size, max_concurrency
            )
    if policy is None:
        return options
    if not isinstance(policy, UploadPolicy):
        raise InvalidFileObjectError(f"policy must be an UploadPolicy, not {policy!r}.")
    return replace(options, policy=effective_policy(options.policy, policy))


def default_filename(content: object, path: str | None) -> str:
    """The filename of a file built without one: from its content, else its path."""
    from pathlib import Path

    if isinstance(content, Path):
        return content.name
    name = getattr(content, "name", None) if content is not None else None
    if isinstance(name, str) and name:
        return name.replace("\\", "/").rsplit("/", 1)[-1]
    if isinstance(path, str) and path:  # a non-str path is refused by __init__ right after
        return path.rsplit("/", 1)[-1]
    return "file"


class PendingFile(Protocol):
    """What saving needs of a file (a `FileObject`).

    Its state lives in its `__dict__`: the fields, `_content` (what is pending, `None`
    once stored), `_metadata`, `_registry`, `_renditions`, `_sign_cache` and, for the
    rows and lists holding it, `_parent`, `_more_parents` and `_containers`.
    """

    filename: str
    content_type: str
    path: str | None
    size: int | None
    checksum: str | None
    etag: str | None
    version: str | None
    last_modified: datetime | None

    def changed(self) -> None:
        """Tell the rows and lists holding the file that it changed."""

    def _backend(self) -> Backend:
        """The backend the file names (raises when it names none)."""


F = TypeVar("F", bound=PendingFile)


def saving(file: F, options: SaveOptions, file_class: type[Any]) -> Step[F]:
    """How to save `file`'s pending content: one buffer, or the upload plan as one step.

    Its `run_sync` or `run_async` does it and returns `file`, stored. `file_class` is
    the `FileObject` class (renditions are built of it).
    """
    d = file.__dict__
    content = d["_content"]
    kind = content.__class__
    if (
        (kind is not bytes and kind is not bytearray)
        or d["size"] is not None
        or options.policy is not None
        or options.use_multipart is True
        or options.compress
        or len(content) > options.chunk_size
    ):
        return as_call(uploading(file, options, file_class))
    backend = file_backend(d)  # (what `file._backend()` returns, one call fewer)
    if d["backend"] is None:  # the default backend: its key is recorded, as in `_begin`
        set_quietly(file, backend=backend.key)
    if getattr(backend, "policy", None) is not None:
        return as_call(uploading(file, options, file_class))
    filename = d["filename"]
    prefix = backend.prefix
    if options.key_prefix:
        prefix = join_key(prefix, options.key_prefix)
    key_function = options.key_function or backend.key_function
    path = build_key(filename, prefix=prefix, key_function=key_function)
    metadata = d["_metadata"]
    if metadata or options.cache_control:
        attributes = object_attributes(
            filename=filename,
            content_type=d["content_type"],
            metadata=metadata or {},
            cache_control=options.cache_control,
            include_metadata=getattr(backend, "write_metadata", True),
        )
    else:
        content_type = d["content_type"]
        attributes = {
            "Content-Type": content_type,
            "Content-Disposition": content_disposition(filename, content_type),
        }
    return BufferedUpload((file, backend, path, attributes, options.use_multipart, file_class))


class BufferedUpload(tuple[Any, ...], Step[F]):
    """A file's buffer written with one `put_buffer` of its backend, then recorded.

    The tuple `(file, backend, path, attributes, use_multipart, file_class)` (built for
    every small save: a tuple is built in one step, with no `__init__` to run).
    """

    __slots__ = ()

    def run_sync(self) -> F:
        """Write with the sync call, and record it."""
        file, backend, path, attributes, use_multipart, _ = self
        data = file.__dict__["_content"]
        return self._stored(data, backend.put_buffer(path, data, attributes, use_multipart))

    async def run_async(self) -> F:
        """Write with the async call, and record it."""
        file, backend, path, attributes, use_multipart, _ = self
        data = file.__dict__["_content"]
        return self._stored(
            data, await backend.put_buffer_async(path, data, attributes, use_multipart)
        )

    def _stored(self, data: bytes | bytearray, result: WriteResult) -> F:
        """Record what was written (what `_finish` does for a plan, directly)."""
        file: F
        file, backend, path, _, _, file_class = self
        d = file.__dict__
        algorithm = backend.checksum_algorithm
        # What `set_quietly` does, written out: this runs once per small save, and the
        # keyword dict of the call measured 0.5 µs of a 9 µs save.
        d["path"] = path
        d["size"] = len(data)
        if algorithm is not None:
            digest = (_HASHERS.get(algorithm) or _hasher(algorithm))(data).hexdigest()
            d["checksum"] = f"{algorithm}:{digest}"
        else:
            d["checksum"] = None
        d["etag"], d["version"] = result
        d["last_modified"] = _utc_now()
        d["_content"] = None
        if d["_renditions"]:  # (a new file keeps the shared empty mappings it holds)
            d["_renditions"] = {}
        if d["_image"] is not None:  # (facts of the content this one replaced)
            d["_image"] = None
        if d["_sign_cache"]:
            d["_sign_cache"] = {}
        if file.__class__ is not file_class:
            file.changed()  # a subclass may do more when told
        elif d.get("_parent") is not None or d.get("_more_parents") or d["_containers"]:
            notify_holders(file)  # (a file no row or list holds has nobody to tell)
        return file


# -- the upload plan -------------------------------------------------------------------------------
@dataclass(slots=True)
class Upload:
    """One upload under way: where it goes, how the content is read and checked."""

    backend: Backend
    path: str
    reader: ContentReader
    options: SaveOptions
    checkpoint: ContentCheckpoint
    guard: Guard | None = None
    content_type: str | None = None  # the sniffed type, when it differs
    image: ImagePolicy | None = None
    derived: tuple[Derived, ...] = ()  # renditions to store with the original
    facts: ImageFacts | None = None  # the original's size, when an image policy ran
    content_encoding: str | None = None  # "gzip" once the body is compressed


def uploading(file: F, options: SaveOptions, file_class: type[Any]) -> Plan[F]:
    """The upload of `file`'s pending content; returns `file`, stored.

    A file with nothing pending that is already stored is left as it is. On failure
    nothing written is kept and the file keeps its content (see `_failed`).
    """
    upload = _begin(file, options)
    if upload is None:
        return file
    backend, path = upload.backend, upload.path
    try:
        body = yield Call(upload.reader.open, upload.reader.open_async)
        head = upload.reader.take_head()  # (not held while the rest streams)
        if (guard := upload.guard) is not None:  # sniffing and validators, on the first part
            upload.content_type = guard.check_head(file, head)
        del head
        if upload.image is not None:
            data = yield Call(_collect, _collect_async, body)
            processed = yield Call(
                process_image,
                process_image_async,
                data,
                upload.image,
                backend=backend.key,
                path=path,
            )
            body = _processed(upload, data, processed)
        elif options.compress and _compressible(upload, file.content_type):
            data = yield Call(_collect, _collect_async, body)
            compressed = yield Call(_gzip, _gzip_async, data)
            body = _compressed(upload, compressed)
        arguments = _put_arguments(file, upload, body)
        result = yield Call(backend.put, backend.put_async, path, body, **arguments)
        if (late := _late_error(upload)) is not None:
            yield Call(backend.delete, backend.delete_async, path)
            raise late
        renditions = yield from _putting_renditions(file, upload, file_class)
    except BaseException as exc:
        _failed(file, upload, exc)
        raise
    _finish(file, upload, result, renditions)
    return file


def _begin(file: PendingFile, options: SaveOptions) -> Upload | None:
    d = file.__dict__
    content = d["_content"]
    if content is None:
        if d["path"] is None:
            raise NoContentError(f"{file!r} has no content to save.", backend=d["backend"])
        return None
    backend = file._backend()
    if d["backend"] is None:
        # A file naming no backend goes to the registry's default, and records its key:
        # the row keeps pointing there when the default changes later.
        set_quietly(file, backend=backend.key)
    filename = d["filename"]
    path = build_key(
        filename,
        prefix=join_key(backend.prefix, options.key_prefix),
        key_function=options.key_function or backend.key_function,
    )
    guard = Guard(
        effective_policy(getattr(backend, "policy", None), options.policy),
        declared_size=d["size"],
        backend=backend.key,
        path=path,
    )
    guard.check_name(filename)  # before a single byte is read
    checkpoint = ContentCheckpoint(content)
    reader = ContentReader(
        content,
        chunk_size=options.chunk_size,
        checksum_algorithm=backend.checksum_algorithm,
        observers=[guard.observe] if guard.active else (),
        end_observers=[guard.finish] if guard.active else (),
    )
    image = guard.policy.image if guard.policy is not None else None
    return Upload(backend, path, reader, options, checkpoint, guard, image=image)


def _collect(body: Any) -> bytes:
    """The whole upload body in memory (bounded by the policy's limits while it is read)."""
    if isinstance(body, Iterator):
        return b"".join(body)
    return bytes(body)


async def _collect_async(body: Any) -> bytes:
    if isinstance(body, AsyncIterator):
        return b"".join([chunk async for chunk in body])
    return _collect(body)


def _processed(upload: Upload, data: bytes, result: Processed) -> bytes:
    """The image to store, validated and normalised; its renditions remembered."""
    upload.content_type = result.content_type
    upload.derived = result.renditions
    upload.facts = result.facts
    if result.data is not data:
        # Normalised: size and checksum are those of the bytes stored.
        upload.reader = ContentReader(
            result.data,
            chunk_size=upload.options.chunk_size,
            checksum_algorithm=upload.backend.checksum_algorithm,
        )
        return bytes(upload.reader.open())
    return data


def _compressible(upload: Upload, content_type: str) -> bool:
    """Whether to store gzip: a textual type, and a store that keeps `Content-Encoding`.

    A store without object attributes (local files) could not say the bytes are
    compressed: its content stays as it is.
    """
    return is_textual(upload.content_type or content_type) and upload.backend.supports_attributes


def _gzip(data: bytes) -> bytes:
    # (mtime=0: the same content compresses to the same bytes, and so the same checksum)
    return gzip.compress(data, mtime=0)


async def _gzip_async(data: bytes) -> bytes:
    return await asyncio.to_thread(_gzip, data)  # (CPU work: off the event loop)


def _compressed(upload: Upload, data: bytes) -> bytes:
    """The gzip body to store; size and checksum become those of the stored bytes."""
    upload.content_encoding = "gzip"
    upload.reader = ContentReader(
        data,
        chunk_size=upload.options.chunk_size,
        checksum_algorithm=upload.backend.checksum_algorithm,
    )
    return bytes(upload.reader.open())


def _put_arguments(file: PendingFile, upload: Upload, body: Any) -> dict[str, Any]:
    d = file.__dict__
    options = upload.options
    # obstore ignores multipart in "create" mode, so refuse-to-overwrite is only asked
    # for content that goes up in one PUT anyway (it fits in one part).
    single_part = (
        not isinstance(body, (Iterator, AsyncIterator))
        and memoryview(body).nbytes <= options.chunk_size
    )
    attributes = object_attributes(
        filename=d["filename"],
        content_type=upload.content_type or d["content_type"],
        metadata=d["_metadata"] or {},
        cache_control=options.cache_control,
        include_metadata=getattr(upload.backend, "write_metadata", True),
    )
    if upload.content_encoding is not None:
        attributes["Content-Encoding"] = upload.content_encoding
    return {
        "attributes": attributes,
        # A fresh key never exists; refuse to overwrite anyway (custom key functions).
        "create_only": single_part and options.use_multipart is not True,
        "use_multipart": options.use_multipart,
        "chunk_size": options.chunk_size,
        "max_concurrency": options.max_concurrency,
    }


def _late_error(upload: Upload) -> BaseException | None:
    """End checks a store skipped (it stopped reading early): the object must go."""
    guard = upload.guard
    if guard is None or not guard.active or guard.finished:
        return None
    try:
        guard.finish(upload.reader.size)
    except Exception as exc:
        return exc
    return None


def _putting_renditions(
    file: PendingFile, upload: Upload, file_class: type[Any]
) -> Plan[dict[str, Any]]:
    """Store each rendition beside the original; on failure, remove them and it."""
    backend = upload.backend
    done: dict[str, Any] = {}
    try:
        for derived in upload.derived:
            path = rendition_path(upload.path, derived.rendition)
            filename = rendition_filename(file.filename, derived.rendition)
            attributes = object_attributes(
                filename=filename,
                content_type=derived.content_type,
                metadata={},
                cache_control=upload.options.cache_control,
                include_metadata=False,
            )
            result = yield Call(
                backend.put,
                backend.put_async,
                path,
                derived.data,
                attributes=attributes,
                create_only=True,
            )
            algorithm = backend.checksum_algorithm
            done[derived.rendition.name] = rendition = file_class(
                backend=backend.key,
                path=path,
                filename=filename,
                content_type=derived.content_type,
                size=len(derived.data),
                checksum=format_checksum(algorithm, _hash(algorithm, derived.data))
                if algorithm
                else None,
                etag=result.etag,
                version=result.version,
                last_modified=datetime.now(timezone.utc),
                registry=file.__dict__["_registry"],
            )
            rendition.__dict__["_image"] = derived.facts  # (a new file: no holder to tell)
    except BaseException:
        for stored in (upload.path, *(r.path for r in done.values() if r.path)):
            yield Call(backend.delete, backend.delete_async, stored)
        raise
    return done


def _finish(
    file: PendingFile, upload: Upload, result: WriteResult, renditions: dict[str, Any]
) -> None:
    facts: dict[str, Any] = {
        "path": upload.path,
        "size": upload.reader.size,
        "checksum": upload.reader.checksum,
        "etag": result.etag,
        "version": result.version,
        "last_modified": datetime.now(timezone.utc),
        "content_encoding": upload.content_encoding,
    }
    if upload.content_type is not None:
        facts["content_type"] = upload.content_type
    # What the store and the reader report, recorded at once; the holders are told once.
    set_quietly(
        file,
        **facts,
        _renditions=renditions or {},
        _image=upload.facts,
        _content=None,
        _sign_cache={},
    )
    file.changed()


def _failed(file: PendingFile, upload: Upload, exc: BaseException) -> None:
    # Give the content back rewound, or mark a one-shot stream as used up: a retry
    # must never store only what is left of it.
    if upload.reader.started:
        file.__dict__["_content"] = upload.checkpoint.restore()
    # A validator that stopped the stream is the real cause; obstore may have
    # re-raised it or wrapped it.
    if upload.reader.error is not None and upload.reader.error is not exc:
        raise upload.reader.error from None


# -- checksums -------------------------------------------------------------------------------------
_HASHERS: dict[str, Any] = {}


def _hasher(algorithm: str) -> Any:
    """The `hashlib` constructor of `algorithm` (cached in `_HASHERS`)."""
    make = _HASHERS.get(algorithm)
    if make is None:
        make = getattr(hashlib, algorithm, None)
        if not callable(make) or algorithm not in hashlib.algorithms_guaranteed:
            make = partial(hashlib.new, algorithm)
        _HASHERS[algorithm] = make
    return make


def _hash(algorithm: str, data: bytes | bytearray) -> str:
    """The hex digest of `data` with the `hashlib` algorithm `algorithm` (one call)."""
    digest: str = _hasher(algorithm)(data).hexdigest()
    return digest


def verify_stored(file: PendingFile, backend: Backend, path: str, chunk_size: int) -> bool:
    """Re-read the object stored for `file` and check it against its checksum and size.

    Sync code that may run inside the greenlet bridge (the stream is read with
    `_io.iterate`); `FileObject.verify_async` runs it there.
    """
    checksum, size, key = file.checksum, file.size, file.__dict__["backend"]
    algorithm, _, digest = (checksum or "").partition(":")
    if not algorithm or not digest:
        raise FileObjectError(
            f"{file!r} has no checksum recorded, so it cannot be verified: it was stored "
            "by a backend with checksum_algorithm=None or created from a bare path.",
            backend=key,
            path=path,
        )
    try:
        hasher = hashlib.new(algorithm)
    except ValueError as exc:
        raise FileObjectError(
            f"Cannot verify {file!r}: unknown checksum algorithm {algorithm!r}.",
            backend=key,
            path=path,
        ) from exc
    read = 0
    for chunk in iterate(
        backend.iter_chunks, backend.iter_chunks_async, path, chunk_size=chunk_size
    ):
        hasher.update(chunk)
        read += len(chunk)
    actual = f"{algorithm}:{hasher.hexdigest()}"
    if actual.lower() != (checksum or "").lower() or (size is not None and read != size):
        raise ChecksumMismatchError(
            expected=checksum or "",
            actual=actual,
            expected_size=size,
            actual_size=read,
            backend=backend.key,
            path=path,
        )
    return True
