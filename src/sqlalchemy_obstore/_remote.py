"""The implementation of `sqlalchemy_obstore.remote`, documented and imported there."""

from __future__ import annotations

import asyncio
import functools
import io
import ipaddress
import re
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._errors import (
    FileTooLargeError,
    ForbiddenAddressError,
    MissingDependencyError,
    RemoteFetchError,
    RemoteTimeoutError,
    redact,
    redact_url,
)
from ._remote_address import BLOCKED_NETWORKS, IPAddress, IPNetwork, check_address
from ._remote_response import (
    RemoteResponse,
    filename_from_content_disposition,
    mime_type,
    url_filename,
)

if TYPE_CHECKING:
    import httpcore
    import httpx

    from ._fetch import BodyDecoder, Deadline

__all__ = (
    "BLOCKED_NETWORKS",
    "DEFAULT_DEADLINE",
    "DEFAULT_MAX_REDIRECTS",
    "DEFAULT_TIMEOUT",
    "RemoteResponse",
    "RemoteSource",
    "check_address",
    "filename_from_content_disposition",
)


DEFAULT_TIMEOUT = 30.0
"""Seconds allowed for resolving, for connecting, and for each wait for more data."""

DEFAULT_DEADLINE = 300.0
"""Seconds allowed for a whole fetch: resolving, connecting, every redirect, the whole body.

Five minutes, the total timeout aiohttp uses by default: enough for hundreds of MB on
an ordinary link, short enough that a server trickling bytes cannot hold a worker.
"""

DEFAULT_MAX_REDIRECTS = 3
"""Redirects followed before a fetch is abandoned."""

_READ_CHUNK = 64 * 1024
"""The largest piece handed on at once (httpcore reads 64 KiB; decoding is cut to it too)."""
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
_MANAGED_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "accept-encoding", "te"}
)
"""Request headers the fetch sets itself; a caller's values for them are ignored."""
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_ALLOWED_SCHEMES = ("http", "https")


def _import_httpx() -> Any:
    try:
        import httpx
    except ImportError as exc:  # pragma: no cover - exercised by monkeypatching
        raise MissingDependencyError("httpx", "http") from exc
    return httpx


def _import_httpcore() -> Any:
    _import_httpx()  # httpcore comes with httpx; the extra is named after httpx
    try:
        import httpcore
    except ImportError as exc:  # pragma: no cover - httpx depends on it
        raise MissingDependencyError("httpcore", "http") from exc
    return httpcore


@functools.lru_cache(maxsize=1)
def _default_ssl_context() -> ssl.SSLContext:
    """httpx's verifying context (certifi's CA bundle), built once: loading it takes ms."""
    context: ssl.SSLContext = _import_httpx().create_ssl_context(verify=True, trust_env=False)
    return context


def _ssl_context(verify: ssl.SSLContext | bool) -> ssl.SSLContext:
    if isinstance(verify, ssl.SSLContext):
        return verify
    if verify:
        return _default_ssl_context()
    context: ssl.SSLContext = _import_httpx().create_ssl_context(verify=False, trust_env=False)
    return context


# -- URL checks -----------------------------------------------------------------------------
def _display_url(url: object) -> str:
    """The URL for messages: no credentials, no fragment, query values redacted."""
    return redact_url(url)


# -- one fetch ----------------------------------------------------------------------------------
def _origin(url: httpx.URL) -> tuple[str, bytes, int]:
    return url.scheme, url.raw_host, url.port or (443 if url.scheme == "https" else 80)


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    """All values of one response header, comma-joined (`None` if absent)."""
    values = [v.decode("latin-1") for k, v in headers if k.lower() == name]
    return ", ".join(values) if values else None


@dataclass(slots=True)
class _Fetch:
    """The state of one fetch (one attempt: `seek(0)` starts another), free of I/O.

    Attributes:
        deadline: When the whole fetch must be over.
        url: The URL being requested (the current hop).
        headers: The caller's headers still to send (fewer after leaving the origin).
        hops: Redirects followed so far.
        decoder: Undoes the final response's `Content-Encoding`.
        size: Decoded bytes handed on so far.
    """

    deadline: Deadline
    url: httpx.URL
    headers: list[tuple[str, str]]
    hops: int = 0
    decoder: BodyDecoder | None = None
    size: int = 0
    addresses: list[str] = field(default_factory=list)


# -- the source -------------------------------------------------------------------------------
class RemoteSource:
    """Content that is downloaded from an HTTP(S) URL when it is read.

    Nothing happens on construction beyond checking the URL's form; the host is
    resolved, checked and contacted on the first read. Read it with `read(n)` (sync) or
    `async for` (async); `FileObject` picks the right one for `save()` and
    `save_async()`. Each chunk (at most 64 KiB) is handed on as it arrives, so memory
    stays bounded whatever the size of the body.

    The source can be rewound to the start (`seek(0)`): the next read fetches the URL
    again (with a fresh deadline). That lets a session retry the upload after a failed
    flush or a rollback.

    Args:
        url: An `http://` or `https://` URL, without `user:password@`.
        timeout: Seconds allowed for resolving, for connecting, and for each wait for
            more data. `None` for no limit per wait (the deadline still applies).
        deadline: Seconds allowed for the whole fetch — resolving, connecting, every
            redirect and the entire body — from the first read. `None` turns it off
            (then a server sending one byte every `timeout` seconds can hold the fetch
            for as long as it likes). The time the store takes to accept the chunks
            counts too, since the download and the upload go hand in hand.
        max_size: Refuse bodies larger than this many bytes (`FileTooLargeError`),
            checked against `Content-Length` up front and over the decoded bytes while
            streaming.
        max_redirects: Redirects to follow (each hop is checked like the first URL).
        allow_private: Allow any address, including loopback and private networks.
        allow_networks: Networks to allow although they are blocked by default, e.g.
            `("10.20.0.0/16",)`.
        headers: Extra request headers (e.g. `Authorization`, an API key). They go to
            the URL's origin (scheme, host and port) only: once a redirect leads to
            another origin, none of them is sent again for the rest of the fetch (not
            even if a later redirect comes back), unless named in `forward_headers`.
            `Host`, `Content-Length`, `Transfer-Encoding`, `Connection`, `TE` and
            `Accept-Encoding` are managed by the fetch and ignored here.
        forward_headers: Names of `headers` that are not secret and may follow
            redirects to any origin (e.g. `("Accept", "User-Agent")`). `Authorization`,
            `Cookie` and `Proxy-Authorization` cannot be named.
        on_response: Called with a `RemoteResponse` when the final response arrives,
            before its body is read.
        verify: TLS verification, as httpx takes it: `True` (the default CA bundle), a
            `ssl.SSLContext` (for a private CA), or `False` (never in production).

    Raises:
        MissingDependencyError: If httpx is not installed.
        ForbiddenAddressError: If the URL's scheme is not http(s), it carries
            credentials, or its host is an IP literal that is blocked.
        ValueError: For a negative size or redirect count, a timeout or deadline that is
            not positive, a header that is not a valid HTTP header, or a credentials
            header in `forward_headers`.

    Example:
        >>> source = RemoteSource("https://example.com/report.pdf?token=s3cr3t", max_size=10)
        >>> source
        RemoteSource('https://example.com/report.pdf?token=<redacted>')
        >>> source.filename, source.deadline
        ('report.pdf', 300.0)
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        deadline: float | None = DEFAULT_DEADLINE,
        max_size: int | None = None,
        max_redirects: int = DEFAULT_MAX_REDIRECTS,
        allow_private: bool = False,
        allow_networks: Iterable[str | IPNetwork] = (),
        headers: Mapping[str, str] | None = None,
        forward_headers: Iterable[str] = (),
        on_response: Callable[[RemoteResponse], None] | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        _import_httpcore()
        if max_size is not None and max_size < 0:
            raise ValueError("max_size must be a non-negative number of bytes or None.")
        if max_redirects < 0:
            raise ValueError("max_redirects must not be negative.")
        for name, value in (("timeout", timeout), ("deadline", deadline)):
            if value is not None and (isinstance(value, bool) or not value > 0):
                raise ValueError(f"{name} must be a positive number of seconds or None.")
        self._allow_private = allow_private
        self._allow_networks = tuple(
            ipaddress.ip_network(n, strict=False) if isinstance(n, str) else n
            for n in allow_networks
        )
        self._url: httpx.URL = self._check_url(url)
        self.timeout = timeout
        self.deadline = deadline
        self.max_size = max_size
        self.max_redirects = max_redirects
        self._headers = _request_headers(headers or {})
        self.forward_headers = _forwardable(forward_headers)
        self.on_response = on_response
        self._verify = verify
        self.response: RemoteResponse | None = None
        """What the server answered, once the download has started."""
        self._chunks: Generator[bytes, None, None] | None = None
        self._buffer = b""
        self._position = 0
        self._done = False
        self._closed = False
        self._size = 0

    # -- public bits ------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The URL in display form: no credentials, query values redacted."""
        return _display_url(self._url)

    @property
    def filename(self) -> str | None:
        """The last segment of the URL's path (percent-decoded, sanitised), or `None`."""
        return url_filename(self._url)

    def __repr__(self) -> str:
        return f"RemoteSource({self.url!r})"

    # -- checks -----------------------------------------------------------------------------
    def _check_url(self, url: object, *, base: httpx.URL | None = None) -> httpx.URL:
        hx = _import_httpx()
        shown = _display_url(url)
        try:
            parsed: httpx.URL = base.join(str(url)) if base is not None else hx.URL(str(url))
        except (hx.InvalidURL, TypeError, ValueError):
            raise ForbiddenAddressError(f'Invalid URL "{shown}".', url=shown) from None
        shown = _display_url(parsed)
        if parsed.scheme not in _ALLOWED_SCHEMES:
            raise ForbiddenAddressError(
                f'Refusing to fetch "{shown}": only http and https URLs are allowed, '
                f"not {parsed.scheme or 'a relative URL'!r}.",
                url=shown,
            )
        if parsed.userinfo:
            raise ForbiddenAddressError(
                f'Refusing to fetch "{shown}": URLs with credentials (user:password@) are not '
                "allowed; pass them as a header instead (headers={'Authorization': ...}).",
                url=shown,
            )
        if not parsed.host:
            raise ForbiddenAddressError(f'Refusing to fetch "{shown}": no host.', url=shown)
        literal = self._ip_literal(parsed)
        if literal is not None:
            self._check(literal, parsed)
        return parsed

    @staticmethod
    def _ip_literal(url: httpx.URL) -> IPAddress | None:
        try:
            return ipaddress.ip_address(url.host.split("%", 1)[0])
        except ValueError:
            return None

    def _check(self, address: str | IPAddress, url: httpx.URL) -> None:
        try:
            check_address(
                address, allow_private=self._allow_private, allow_networks=self._allow_networks
            )
        except ForbiddenAddressError as exc:
            shown = _display_url(url)
            raise ForbiddenAddressError(
                f'Refusing to fetch "{shown}": {exc}', url=shown, address=exc.address
            ) from None

    def _vet(self, url: httpx.URL, infos: Iterable[tuple[Any, ...]]) -> list[str]:
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not addresses:
            shown = _display_url(url)
            raise RemoteFetchError(f'Cannot fetch "{shown}": the host has no address.', url=shown)
        for address in addresses:  # every answer must be acceptable, not just the first
            self._check(address, url)
        return addresses

    def _lookup(self, fetch: _Fetch) -> tuple[str, int] | None:
        """What to resolve for the current hop; `None` for an IP literal (checked here)."""
        literal = self._ip_literal(fetch.url)
        if literal is not None:
            self._check(literal, fetch.url)
            fetch.addresses = [fetch.url.host]
            return None
        try:
            host = fetch.url.raw_host.decode("ascii")
        except UnicodeError as exc:  # pragma: no cover - httpx IDNA-encodes hosts
            raise self._error(fetch.url, "cannot resolve the host", exc) from exc
        return host, _origin(fetch.url)[2]

    @contextmanager
    def _resolving(self, fetch: _Fetch) -> Iterator[None]:
        """A host lookup's failures as this module's typed errors."""
        hc = _import_httpcore()
        try:
            yield
        except (hc.TimeoutException, asyncio.TimeoutError) as exc:
            raise self._failure(fetch, "resolving the host", exc) from exc
        except (OSError, UnicodeError) as exc:
            raise self._error(fetch.url, "cannot resolve the host", exc) from exc

    def _resolve(self, fetch: _Fetch, lookup: tuple[str, int]) -> None:
        with self._resolving(fetch):
            # The system resolver has its own timeouts; a sync lookup cannot be cut short,
            # so the deadline is checked again right after it.
            fetch.deadline.clamp(self.timeout, _import_httpcore().ConnectTimeout)
            infos = socket.getaddrinfo(*lookup, type=socket.SOCK_STREAM)
            fetch.deadline.clamp(self.timeout, _import_httpcore().ConnectTimeout)
        fetch.addresses = self._vet(fetch.url, infos)

    async def _resolve_async(self, fetch: _Fetch, lookup: tuple[str, int]) -> None:
        with self._resolving(fetch):
            limit = fetch.deadline.clamp(self.timeout, _import_httpcore().ConnectTimeout)
            resolving = asyncio.get_running_loop().getaddrinfo(*lookup, type=socket.SOCK_STREAM)
            infos = await asyncio.wait_for(resolving, limit)
        fetch.addresses = self._vet(fetch.url, infos)

    # -- errors -------------------------------------------------------------------------------
    def _error(
        self, url: httpx.URL, what: str, exc: BaseException | None = None, status: int | None = None
    ) -> RemoteFetchError:
        shown = _display_url(url)
        detail = f" ({type(exc).__name__}: {redact(str(exc)) or 'no detail'})" if exc else ""
        message = f'Cannot fetch "{shown}": {what}{detail}.'
        return RemoteFetchError(message, url=shown, status=status)

    def _failure(self, fetch: _Fetch, what: str, exc: BaseException) -> RemoteFetchError:
        """The typed error for an httpcore (or timeout) failure while `what`."""
        hc = _import_httpcore()
        shown = _display_url(fetch.url)
        if isinstance(exc, (hc.TimeoutException, asyncio.TimeoutError, TimeoutError)):
            if fetch.deadline.expired():
                return RemoteTimeoutError(
                    f'Cannot fetch "{shown}": the whole fetch timed out while {what}: it did '
                    f"not finish within its deadline of {fetch.deadline.seconds:g} s. Nothing "
                    "was stored; pass a larger deadline= for large files on slow servers.",
                    url=shown,
                    limit=fetch.deadline.seconds,
                    deadline=True,
                )
            within = f" within {self.timeout:g} s" if self.timeout is not None else ""
            return RemoteTimeoutError(
                f'Cannot fetch "{shown}": timed out while {what} (no progress{within}).',
                url=shown,
                limit=self.timeout,
            )
        if isinstance(exc, hc.ConnectError):
            return self._error(fetch.url, "cannot connect", exc)
        return self._error(fetch.url, f"the request failed while {what}", exc)

    # -- the sans-I/O steps ------------------------------------------------------------------
    def _start(self) -> _Fetch:
        from ._fetch import Deadline

        self._size = 0
        return _Fetch(Deadline(self.deadline), self._url, list(self._headers))

    def _requests(self, fetch: _Fetch) -> Iterator[tuple[httpcore.Request, bool]]:
        """A GET of the current hop for each vetted address (pinned: no second lookup)."""
        hc = _import_httpcore()
        url = fetch.url
        host = url.raw_host.decode("ascii")
        extensions: dict[str, Any] = {
            "timeout": dict.fromkeys(("connect", "read", "write", "pool"), self.timeout)
        }
        if url.scheme == "https":
            extensions["sni_hostname"] = host
        headers = [
            (b"Host", url.netloc),
            (b"Accept", b"*/*"),
            (b"Accept-Encoding", b"identity"),
            (b"User-Agent", b"python-httpx/" + _import_httpx().__version__.encode()),
        ]
        own = {name.lower() for name, _ in fetch.headers}
        headers = [h for h in headers if h[0].decode().lower() not in own]
        headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in fetch.headers]
        for index, address in enumerate(fetch.addresses):
            target = hc.URL(
                scheme=url.raw_scheme,
                host=address.encode("ascii"),
                port=url.port,
                target=url.raw_path,
            )
            request = hc.Request(b"GET", target, headers=headers, extensions=extensions)
            yield request, index == len(fetch.addresses) - 1

    def _connect_failed(self, fetch: _Fetch, exc: Exception, last: bool) -> RemoteFetchError | None:
        """The error to raise for a failed request, or `None` to try the next address."""
        hc = _import_httpcore()
        if isinstance(exc, hc.ConnectError) and not last:
            return None
        return self._failure(fetch, "connecting and waiting for the answer", exc)

    def _answered(self, fetch: _Fetch, response: Any) -> bool:
        """Digest a response's head: `True` if it is the final one, `False` for a redirect.

        A redirect moves `fetch` to the next hop (checked like the first URL); a final
        answer sets up the body's decoder, checks `Content-Length` against `max_size`,
        records and reports the `RemoteResponse`.
        """
        url, status, headers = fetch.url, response.status, response.headers
        if 200 <= status < 300:
            self._describe(fetch, status, headers)
            return True
        location = _header(headers, b"location")
        if status not in _REDIRECT_STATUSES or not location:
            reason = bytes(response.extensions.get("reason_phrase") or b"").decode("latin-1")
            answer = f"{status} {reason}".strip() if reason else f"{status}"
            raise self._error(url, f"the server answered {answer}", status=status)
        if fetch.hops >= self.max_redirects:
            raise self._error(
                url, f"more than {self.max_redirects} redirect(s); the last one was refused"
            )
        target = self._check_url(location, base=url)
        if _origin(target) != _origin(url):
            # Leaving the origin: from now on only what the caller said may go anywhere.
            fetch.headers = [(k, v) for k, v in fetch.headers if k.lower() in self.forward_headers]
        fetch.url, fetch.hops = target, fetch.hops + 1
        return False

    def _describe(self, fetch: _Fetch, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        from ._fetch import BodyDecoder, UndecodableBodyError

        url = fetch.url
        try:
            fetch.decoder = BodyDecoder(_header(headers, b"content-encoding"), piece=_READ_CHUNK)
        except UndecodableBodyError as exc:
            raise self._error(url, str(exc)) from None
        length_header = _header(headers, b"content-length")
        length = int(length_header) if length_header and length_header.isdigit() else None
        info = RemoteResponse(
            url=_display_url(url),
            status=status,
            content_type=mime_type(_header(headers, b"content-type")),
            content_length=length,
            filename=filename_from_content_disposition(_header(headers, b"content-disposition"))
            or url_filename(url),
        )
        if (
            self.max_size is not None
            and length is not None
            and not fetch.decoder.codings
            and length > self.max_size
        ):
            raise FileTooLargeError(limit=self.max_size, size_seen=length)
        self.response = info
        if self.on_response is not None:
            self.on_response(info)

    def _decoded(self, fetch: _Fetch, raw: bytes | None) -> Iterator[bytes]:
        """Decode one raw chunk (`None`: the end of the body), counting against `max_size`."""
        from ._fetch import UndecodableBodyError

        decoder = fetch.decoder
        assert decoder is not None  # set with the final response
        try:
            for piece in decoder.feed(raw) if raw is not None else decoder.finish():
                fetch.size += len(piece)
                self._size = fetch.size
                if self.max_size is not None and fetch.size > self.max_size:
                    raise FileTooLargeError(limit=self.max_size, size_seen=fetch.size)
                yield piece
        except UndecodableBodyError as exc:
            raise self._error(fetch.url, f"the body cannot be decoded: {exc}") from None

    # -- sync reading ---------------------------------------------------------------------------
    def _stream_sync(self) -> Generator[bytes, None, None]:
        """The whole fetch, sync: yields the decoded body in pieces of at most 64 KiB."""
        from ._fetch import DeadlineBackend

        hc = _import_httpcore()
        fetch = self._start()
        backend = DeadlineBackend(fetch.deadline)
        context = _ssl_context(self._verify)
        with hc.ConnectionPool(ssl_context=context, network_backend=backend) as pool:
            while True:
                if (lookup := self._lookup(fetch)) is not None:
                    self._resolve(fetch, lookup)
                response = self._send_sync(pool, fetch)
                try:
                    final = self._answered(fetch, response)
                except BaseException:
                    response.close()
                    raise
                if final:
                    break
                response.close()
            try:
                try:
                    for raw in response.iter_stream():
                        yield from self._decoded(fetch, raw)
                except _http_errors(hc) as exc:
                    raise self._failure(fetch, "reading the body", exc) from exc
                yield from self._decoded(fetch, None)
            finally:
                response.close()

    def _send_sync(self, pool: Any, fetch: _Fetch) -> Any:
        hc = _import_httpcore()
        for request, last in self._requests(fetch):
            try:
                return pool.handle_request(request)
            except _http_errors(hc) as exc:
                error = self._connect_failed(fetch, exc, last)
                if error is not None:
                    raise error from exc
        raise AssertionError("unreachable")  # pragma: no cover - the last address raises

    def read(self, size: int = -1) -> bytes:
        """Read up to `size` bytes (all that is left for a negative size); `b""` at the end.

        The first call resolves, checks and connects; it may return fewer bytes than
        asked for.

        Raises:
            ForbiddenAddressError: If the URL or a redirect leads to a blocked address.
            RemoteTimeoutError: When a wait passes `timeout` or the fetch its `deadline`.
            RemoteFetchError: For a non-2xx answer, too many redirects, a body that
                cannot be decoded or a network failure.
            FileTooLargeError: When the body passes `max_size`.

        Example:
            >>> RemoteSource("https://example.com/").seekable()
            True
        """
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(_READ_CHUNK), b""))
        if size == 0:
            return b""
        if self._done:
            return b""
        if self._closed:
            raise ValueError("This RemoteSource was closed; seek(0) to fetch the URL again.")
        if self._chunks is None:
            self._chunks = self._stream_sync()
        while not self._buffer:
            try:
                chunk = next(self._chunks, None)
            except BaseException:
                self.close()
                raise
            if chunk is None:
                self.close()
                self._done = True  # after close(): a complete body, not an interrupted one
                return b""
            self._buffer = chunk
        data: bytes = self._buffer[:size]
        self._buffer = self._buffer[size:]
        self._position += len(data)
        return data

    # -- async reading --------------------------------------------------------------------------
    def __aiter__(self) -> AsyncIterator[bytes]:
        """Download the body chunk by chunk with httpcore's async pool.

        Raises the same errors as `read`.
        """
        return self._stream_async()

    async def _stream_async(self) -> AsyncIterator[bytes]:
        """The whole fetch, async: the same steps as `_stream_sync`, awaited."""
        from ._fetch import AsyncDeadlineBackend

        hc = _import_httpcore()
        fetch = self._start()
        backend = AsyncDeadlineBackend(fetch.deadline)
        context = _ssl_context(self._verify)
        async with hc.AsyncConnectionPool(ssl_context=context, network_backend=backend) as pool:
            while True:
                if (lookup := self._lookup(fetch)) is not None:
                    await self._resolve_async(fetch, lookup)
                response = await self._send_async(pool, fetch)
                try:
                    final = self._answered(fetch, response)
                except BaseException:
                    await response.aclose()
                    raise
                if final:
                    break
                await response.aclose()
            try:
                try:
                    async for raw in response.aiter_stream():
                        for piece in self._decoded(fetch, raw):
                            yield piece
                except _http_errors(hc) as exc:
                    raise self._failure(fetch, "reading the body", exc) from exc
                for piece in self._decoded(fetch, None):
                    yield piece
            finally:
                await response.aclose()

    async def _send_async(self, pool: Any, fetch: _Fetch) -> Any:
        hc = _import_httpcore()
        for request, last in self._requests(fetch):
            try:
                return await pool.handle_async_request(request)
            except _http_errors(hc) as exc:
                error = self._connect_failed(fetch, exc, last)
                if error is not None:
                    raise error from exc
        raise AssertionError("unreachable")  # pragma: no cover - the last address raises

    # -- rewinding --------------------------------------------------------------------------------
    def _reset(self) -> None:
        self._chunks = None
        self._buffer = b""
        self._position = 0
        self._size = 0
        self._done = False
        self._closed = False

    def seekable(self) -> bool:
        """Always `True`: the source can go back to the start (by fetching again)."""
        return True

    def tell(self) -> int:
        """Bytes handed out by `read` so far."""
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Rewind to the start; only `seek(0)` (and seeking to where it is) is supported.

        The open connection, if any, is closed and the next read fetches the URL again.

        Raises:
            io.UnsupportedOperation: For any other position.
        """
        if whence == io.SEEK_SET and offset == self._position and offset != 0:
            return offset
        if offset != 0 or whence != io.SEEK_SET:
            raise io.UnsupportedOperation("A RemoteSource can only be rewound to the start.")
        self.close()
        self._reset()
        return 0

    def close(self) -> None:
        """Close the connection of a sync download in progress (idempotent)."""
        chunks, self._chunks = self._chunks, None
        if chunks is not None:
            self._closed = True
            chunks.close()  # runs the generator's cleanup: the response and pool close


def _http_errors(hc: Any) -> tuple[type[Exception], ...]:
    """httpcore's exceptions (a network failure, a timeout, a protocol error)."""
    return (hc.TimeoutException, hc.NetworkError, hc.ProtocolError, hc.UnsupportedProtocol)


def _request_headers(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    """The caller's request headers, checked (no header injection) and without managed ones."""
    checked = []
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise ValueError(f"Invalid request header name {name!r}.")
        if not isinstance(value, str) or any(c in value for c in "\r\n\x00"):
            raise ValueError(f"The value of the request header {name!r} must be one line of text.")
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(
                f"The value of the request header {name!r} must be Latin-1 text."
            ) from None
        if name.lower() not in _MANAGED_HEADERS:
            checked.append((name, value))
    return checked


def _forwardable(names: Iterable[str]) -> frozenset[str]:
    if isinstance(names, str):
        names = (names,)
    lowered = frozenset(str(name).lower() for name in names)
    refused = sorted(lowered & _CREDENTIAL_HEADERS)
    if refused:
        raise ValueError(
            f"forward_headers cannot name {', '.join(refused)}: credentials go to the URL's "
            "origin only. Follow the redirect yourself if another origin needs them."
        )
    return lowered
