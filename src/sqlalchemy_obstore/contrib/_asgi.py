"""The ASGI applications of the web integrations: file downloads and the signed-URL route.

Everything here speaks plain ASGI (`scope`, `receive`, `send`), so the Litestar and the
Starlette/FastAPI integrations share one implementation and differ only in how they hand
a request over. What to answer is decided in [`_http`][sqlalchemy_obstore.contrib._http]
without I/O; this module reads the store and sends:

* [`FileDownload`][] streams a `FileObject` with that plan (bounded memory: the whole
  object through `iter_chunks_async`, a range through successive `get_range_async`).
* [`SignedStorageRoute`][] serves URLs signed by
  [`HmacUrlSigner`][sqlalchemy_obstore.signing.HmacUrlSigner]: `GET`/`HEAD` download,
  `PUT` streams the request body into the backend (multipart, never whole in memory),
  within the size limit and never over an existing object.

Every download opens the object (its first bytes, or a `head`) before the response
starts, so an object that has gone from the store is a `404`, never a `200` whose body
breaks off.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .._attributes import DOWNLOAD_SECURITY_HEADERS, content_disposition, guess_content_type
from .._errors import (
    BackendNotFoundError,
    ConfigurationError,
    FileTooLargeError,
    InvalidFileObjectError,
    ObjectExistsError,
    ObjectNotFoundError,
    SignedURLError,
    StoragePermissionError,
)
from .._file_object import FileObject
from .._registry import BackendRegistry
from .._remote import filename_from_content_disposition
from .._signing import HmacUrlSigner
from ..backends import Backend
from ._http import (
    Disposition,
    DownloadPlan,
    FileMeta,
    Receive,
    Scope,
    Send,
    content_length,
    format_etag,
    plan_download,
    request_headers,
    safe_content_type,
)

if TYPE_CHECKING:
    from .._tickets import UploadTickets

__all__ = (
    "DEFAULT_HTTP_CHUNK_SIZE",
    "FileDownload",
    "SignedStorageRoute",
    "body_chunks",
    "open_body",
    "send_plan",
    "send_text",
)

DEFAULT_HTTP_CHUNK_SIZE = 1024 * 1024
"""Bytes read from the store per chunk of a download (1 MiB): the memory a download holds."""

_NO_STORE = {"cache-control": "no-store", **DOWNLOAD_SECURITY_HEADERS}
_EXISTS = "An object already exists here; it is never replaced."
_REDEEMED = "This upload ticket was already redeemed; ask the application for a new one."


# -- sending ------------------------------------------------------------------------------------
async def body_chunks(
    backend: Backend, path: str, plan: DownloadPlan, chunk_size: int = DEFAULT_HTTP_CHUNK_SIZE
) -> AsyncIterator[bytes]:
    """The body of `plan`, read from the store chunk by chunk (bounded memory)."""
    wanted = plan.range
    if wanted is None:
        return
    if plan.whole:
        chunks = backend.iter_chunks_async(path, chunk_size=chunk_size)
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()
        return
    position = wanted.start
    while position <= wanted.end:
        data = await backend.get_range_async(
            path, position, min(chunk_size, wanted.end - position + 1)
        )
        if not data:
            return
        yield data
        position += len(data)


async def open_body(
    backend: Backend,
    path: str,
    plan: DownloadPlan,
    chunk_size: int = DEFAULT_HTTP_CHUNK_SIZE,
    *,
    head: bool = False,
    confirmed: bool = False,
) -> AsyncIterator[bytes] | None:
    """Open the object before the response starts; return the body to send, if any.

    A response whose headers promise a body must be able to send it: with a body, the
    first chunk is read here (one request that fails with `ObjectNotFoundError` if the
    object has gone); without one (`HEAD`, `304`, `416`, an empty object) a `head`
    confirms the object exists, unless `confirmed` says a store request just did.

    Raises:
        ObjectNotFoundError: If the object does not exist (answer `404`).
    """
    if head or plan.range is None:
        if not confirmed:
            await backend.head_async(path)
        return None
    chunks = body_chunks(backend, path, plan, chunk_size)
    try:
        first = await chunks.__anext__()
    except StopAsyncIteration:
        return None
    except BaseException:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()
        raise
    return _prepend(first, chunks)


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        yield first
        async for chunk in rest:
            yield chunk
    finally:
        close = getattr(rest, "aclose", None)
        if close is not None:
            await close()


def _encode_headers(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


async def send_plan(
    send: Send, status: int, headers: Mapping[str, str], body: AsyncIterator[bytes] | None
) -> None:
    """Send a response: status and headers, then `body` chunk by chunk (if any)."""
    await send(
        {"type": "http.response.start", "status": status, "headers": _encode_headers(headers)}
    )
    if body is not None:
        try:
            async for chunk in body:
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            close = getattr(body, "aclose", None)
            if close is not None:
                await close()
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def send_text(
    send: Send, status: int, text: str, headers: Mapping[str, str] | None = None
) -> None:
    """Send a short plain-text response (errors); never cached."""
    body = (text.rstrip("\n") + "\n").encode("utf-8")
    all_headers = {
        "content-type": "text/plain; charset=utf-8",
        "content-length": str(len(body)),
        **_NO_STORE,
        **(headers or {}),
    }
    await send(
        {"type": "http.response.start", "status": status, "headers": _encode_headers(all_headers)}
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


# -- downloads of a FileObject ------------------------------------------------------------------
def _leaf(path: str) -> str:
    return path.rsplit("/", 1)[-1] or "file"


async def _file_meta(file: FileObject, backend: Backend, path: str) -> tuple[FileMeta, bool]:
    """The download metadata of `file`, and whether a store request just confirmed it."""
    if file.size is not None and file.etag and file.last_modified:
        # Keys are immutable: what the column recorded is what the store holds.
        meta = FileMeta(
            size=file.size,
            content_type=file.content_type,
            filename=file.filename,
            etag=file.etag,
            last_modified=file.last_modified,
            content_encoding=file.content_encoding,
        )
        return meta, False
    info = await backend.head_async(path)
    meta = FileMeta(
        size=info.size,
        content_type=file.content_type or info.content_type or guess_content_type(path),
        filename=file.filename,
        etag=info.etag or file.etag,
        last_modified=info.last_modified,
        cache_control=info.attributes.get("Cache-Control"),
        content_encoding=file.content_encoding or info.attributes.get("Content-Encoding"),
    )
    return meta, True


@dataclass
class FileDownload:
    """An ASGI application streaming one stored `FileObject` with HTTP semantics.

    Honours `Range` (206/416), `If-None-Match`/`If-Modified-Since` (304) and `If-Range`;
    answers `HEAD` with the headers only. Metadata comes from the column when it records
    size, etag and modification time (keys are immutable), else from one `head`
    request. The object is opened before the response starts (see [`open_body`][]):
    if it has gone from the store the answer is `404`, never headers that promise
    bytes the store no longer has.

    The framework helpers (`contrib.litestar.file_response`,
    `contrib.starlette.file_response`) wrap it in their response types.
    """

    file: FileObject
    disposition: Disposition | None = None
    filename: str | None = None
    cache_control: str | None = None
    chunk_size: int = DEFAULT_HTTP_CHUNK_SIZE
    backend: Backend = field(init=False)
    path: str = field(init=False)

    def __post_init__(self) -> None:
        if self.disposition not in (None, "inline", "attachment"):
            raise ValueError(
                f"disposition must be 'inline', 'attachment' or None, not {self.disposition!r}."
            )
        # Raise in the handler (NoContentError, BackendNotFoundError), not mid-response.
        self.backend, self.path = self.file._stored()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer the request in `scope`."""
        try:
            meta, confirmed = await _file_meta(self.file, self.backend, self.path)
            plan = plan_download(
                meta,
                request_headers(scope),
                disposition=self.disposition,
                filename=self.filename,
                cache_control=self.cache_control,
            )
            body = await open_body(
                self.backend,
                self.path,
                plan,
                self.chunk_size,
                head=scope.get("method", "GET") == "HEAD",
                confirmed=confirmed,
            )
        except ObjectNotFoundError:
            await send_text(send, 404, "The file does not exist (any more).")
            return
        except _REFUSED_KEYS as exc:
            await send_text(send, *_refused_key(exc))
            return
        await send_plan(send, plan.status, plan.headers, body)


_REFUSED_KEYS = (InvalidFileObjectError, StoragePermissionError)
"""A key the backend refuses to touch: malformed (`InvalidObjectPathError`), or leading
out of a local-files root (`PathEscapeError`), or a store that denies access."""


def _refused_key(exc: Exception) -> tuple[int, str]:
    """The status and text that answer a refused key (400 malformed, 403 refused)."""
    if isinstance(exc, InvalidFileObjectError):
        return 400, "The object path is malformed."
    return 403, "Forbidden: the store refuses this object."


# -- the signed-URL route -----------------------------------------------------------------------
class _Disconnected(Exception):
    """The client went away in the middle of its upload."""


def _upload_limit(backend: Backend, *limits: int | None) -> int | None:
    present = [
        limit
        for limit in (*limits, backend.policy.max_size if backend.policy else None)
        if limit is not None
    ]
    return min(present) if present else None


async def _request_body(receive: Receive, limit: int | None) -> AsyncIterator[bytes]:
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        if message["type"] != "http.request":
            continue
        chunk = bytes(message.get("body", b""))
        total += len(chunk)
        if limit is not None and total > limit:
            raise FileTooLargeError(limit=limit, size_seen=total)
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


class _TicketRedeemed(Exception):
    """The upload ticket of the URL was redeemed while its upload streamed."""


@dataclass
class SignedStorageRoute:
    """Serves URLs signed by an [`HmacUrlSigner`][sqlalchemy_obstore.signing.HmacUrlSigner].

    `GET`/`HEAD` stream the object like [`FileDownload`][] (ranges, conditional
    requests, the same deny-by-default disposition and security headers); `PUT`
    streams the request body into the backend as a multipart upload. A `PUT` never
    replaces an object (`409 Conflict`), and a body longer than the smallest of
    `max_upload_size`, the backend policy's `max_size` and the `max_size` signed into
    the URL is refused with `413` before or while it streams, leaving nothing stored.
    Refused signatures (including non-canonical spellings) get `403` and no data; an
    unknown backend or missing object `404`.

    The `PUT` URL of an upload ticket carries its size limit and the ticket's id
    inside the signature. Once that ticket is redeemed (or while it is being
    redeemed), the route answers `409` to every `PUT` through the URL: it asks
    `tickets` (the [`UploadTickets`][sqlalchemy_obstore.tickets.UploadTickets] that
    issued the ticket, sharing its replay guard); without `tickets` such a `PUT` is
    refused with `403`, since the route cannot tell. The check runs before the body
    is read and again before a streamed body is moved into place; an upload that was
    already streaming when the ticket was redeemed can at worst leave an object no row
    refers to (the garbage collector removes it), never change the redeemed file.

    Type and content checks of uploads happen where the upload becomes a file (the
    upload tickets' `redeem`), as for uploads that go straight to S3. The stored
    `Content-Type` is the request's (when well-formed) and the stored
    `Content-Disposition` follows the same deny-by-default rule as downloads.

    Args:
        registry: Resolves the backend key in the URL.
        signer: Verifies the signatures (it needs the secret that signed them).
        chunk_size: Download read size.
        max_upload_size: Largest accepted `PUT` body in bytes (`None`: only the backend
            policy's `max_size` and the URL's own limit apply).
        tickets: The upload-ticket issuer whose tickets' URLs this route serves.
    """

    registry: BackendRegistry
    signer: HmacUrlSigner
    chunk_size: int = DEFAULT_HTTP_CHUNK_SIZE
    max_upload_size: int | None = None
    tickets: UploadTickets | None = None

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, backend_key: str, path: str
    ) -> None:
        """Answer the request in `scope` for the object `path` of backend `backend_key`.

        The framework adapter extracts both from the URL path (percent-decoded).
        """
        method = str(scope.get("method", "GET")).upper()
        if method not in {"GET", "HEAD", "PUT"}:
            await send_text(send, 405, "Use GET, HEAD or PUT.", {"allow": "GET, HEAD, PUT"})
            return
        try:
            params = self.signer.parse_query(scope.get("query_string", b"").decode("latin-1"))
            self.signer.verify(
                backend_key,
                path,
                method=method,
                expires=params["expires"],
                signature=params["signature"],
                max_size=params["max_size"],
                ticket=params["ticket"],
            )
            backend = self.registry.get_backend(backend_key)
        except SignedURLError as exc:
            await send_text(send, 403, f"Forbidden: {exc}")
            return
        except BackendNotFoundError:
            await send_text(send, 404, f"No storage backend {backend_key!r}.")
            return
        if method == "PUT":
            url_limit = params["max_size"]
            await self._put(
                scope,
                receive,
                send,
                backend,
                path,
                url_limit=None if url_limit is None else int(url_limit),
                ticket=params["ticket"],
            )
        else:
            await self._get(scope, send, backend, path, head=method == "HEAD")

    async def _get(
        self, scope: Scope, send: Send, backend: Backend, path: str, *, head: bool
    ) -> None:
        try:
            info = await backend.head_async(path)
            stored_disposition = info.attributes.get("Content-Disposition", "")
            meta = FileMeta(
                size=info.size,
                content_type=info.content_type or guess_content_type(path),
                # The original name, as recorded when the object was written (it is
                # sanitised again when the header is built).
                filename=filename_from_content_disposition(stored_disposition) or _leaf(path),
                etag=info.etag,
                last_modified=info.last_modified,
                cache_control=info.attributes.get("Cache-Control"),
                content_encoding=info.attributes.get("Content-Encoding"),
            )
            disposition: Disposition | None = (
                "attachment"
                if stored_disposition.strip().lower().startswith("attachment")
                else None
            )
            plan = plan_download(meta, request_headers(scope), disposition=disposition)
            body = await open_body(backend, path, plan, self.chunk_size, head=head, confirmed=True)
        except ObjectNotFoundError:
            await send_text(send, 404, "The object does not exist.")
            return
        except _REFUSED_KEYS as exc:
            await send_text(send, *_refused_key(exc))
            return
        await send_plan(send, plan.status, plan.headers, body)

    async def _ticket_refusal(self, ticket: str | None) -> tuple[int, str] | None:
        """Why a `PUT` through a ticket's URL is refused now (status, text), if it is."""
        if ticket is None:
            return None
        if self.tickets is None:
            return 403, (
                "This URL belongs to an upload ticket, and this route was not given the "
                "UploadTickets that issued it (pass tickets= to storage_routes or "
                "ObstoreConfig), so it cannot tell whether the ticket was redeemed."
            )
        try:
            redeemed = await self.tickets.is_redeemed_async(ticket)
        except ConfigurationError as exc:
            return 403, str(exc)
        return (409, _REDEEMED) if redeemed else None

    async def _put(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        backend: Backend,
        path: str,
        *,
        url_limit: int | None,
        ticket: str | None,
    ) -> None:
        headers = request_headers(scope)
        limit = _upload_limit(backend, self.max_upload_size, url_limit)
        declared = content_length(headers.get("content-length"))
        if limit is not None and declared is not None and declared > limit:
            await send_text(send, 413, f"The upload is too large: the limit is {limit} bytes.")
            return
        refusal = await self._ticket_refusal(ticket)
        if refusal is not None:
            await send_text(send, *refusal)
            return
        try:
            exists = await backend.exists_async(path)
        except _REFUSED_KEYS as exc:
            await send_text(send, *_refused_key(exc))
            return
        if exists:
            await send_text(send, 409, _EXISTS)
            return
        content_type = safe_content_type(headers.get("content-type"), _leaf(path))
        attributes = {
            "Content-Type": content_type,
            "Content-Disposition": content_disposition(_leaf(path), content_type),
        }
        try:
            if declared is not None and declared <= self.chunk_size:
                # Small and of known length: one create-only put (the body, at most
                # `chunk_size` bytes, is buffered by obstore for the conditional write).
                body_limit = declared if limit is None else min(limit, declared)
                await backend.put_async(
                    path,
                    _request_body(receive, body_limit),
                    attributes=attributes,
                    create_only=True,
                )
            else:
                await self._put_streaming(receive, backend, path, attributes, limit, ticket)
        except FileTooLargeError as exc:
            await send_text(send, 413, f"The upload is too large: the limit is {exc.limit} bytes.")
            return
        except ObjectExistsError:
            await send_text(send, 409, _EXISTS)
            return
        except _REFUSED_KEYS as exc:
            await send_text(send, *_refused_key(exc))
            return
        except _TicketRedeemed:
            await send_text(send, 409, _REDEEMED)
            return
        except _Disconnected:
            return
        answer = {"content-length": "0", "cache-control": "no-store"}
        etag = format_etag((await backend.head_async(path)).etag)
        if etag is not None:
            answer["etag"] = etag
        await send_plan(send, 200, answer, None)

    async def _put_streaming(
        self,
        receive: Receive,
        backend: Backend,
        path: str,
        attributes: Mapping[str, str],
        limit: int | None,
        ticket: str | None,
    ) -> None:
        # A create-only put cannot be a multipart upload: obstore would buffer the whole
        # body for it. Stream it as a multipart upload to a private staging key instead,
        # then copy it into place without overwriting (a hard link on local files, a
        # shared buffer in memory) and drop the staging key, whatever happens.
        staging = f"{path}.{uuid.uuid4().hex}.partial"
        try:
            await backend.put_async(
                staging, _request_body(receive, limit), attributes=attributes, use_multipart=True
            )
            if await self._ticket_refusal(ticket) is not None:
                raise _TicketRedeemed  # redeemed while the body streamed: keep nothing
            await backend.copy_async(staging, path, overwrite=False)
        finally:
            await backend.delete_async(staging)
