"""Remote content: attach a file fetched over HTTP(S), safely and lazily.

[`RemoteSource`][sqlalchemy_obstore.remote.RemoteSource] is a content source for
[`FileObject`][sqlalchemy_obstore.FileObject] that downloads a URL only when the file is
saved (directly or by a session flush), streaming the body into storage chunk by chunk:
`save()` reads it with a sync `httpx.Client`, `save_async()` (and an `AsyncSession`
flush) with an `httpx.AsyncClient`. Most code uses it through
[`FileObject.from_url`][sqlalchemy_obstore.file_object.FileObject.from_url].

Fetching a URL that a user supplied is a classic server-side request forgery (SSRF)
vector, so the defaults are strict:

* only `http` and `https` URLs, without credentials in them;
* before connecting, the host is resolved and the fetch is refused
  ([`ForbiddenAddressError`][sqlalchemy_obstore.ForbiddenAddressError]) if *any* of its
  addresses is loopback, private, link-local (including the cloud metadata address
  169.254.169.254), carrier-grade NAT, unspecified, multicast, reserved or
  documentation space, or an IPv4-mapped, 6to4 or NAT64 form of one of those (see
  [`BLOCKED_NETWORKS`][sqlalchemy_obstore.remote.BLOCKED_NETWORKS]);
* the connection then goes to the vetted address itself (the request names the IP
  literal, with the original `Host` header and TLS server name), so a DNS answer that
  changes between the check and the connection cannot bypass it;
* redirects are followed by hand, at most `max_redirects`, and every hop is checked
  the same way; credentials headers are dropped when a redirect changes origin;
* proxies from the environment are ignored (`trust_env=False`);
* a size limit is enforced while streaming and, up front, against `Content-Length`;
* error messages name the URL without credentials or query-string values.

`allow_private=True` lifts the address check; `allow_networks` lifts it for chosen
networks only (for example an internal mirror).

httpx is an optional dependency: `pip install 'sqlalchemy-obstore[http]'`.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import re
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import unquote

from .errors import (
    FileTooLargeError,
    ForbiddenAddressError,
    MissingDependencyError,
    RemoteFetchError,
    redact,
)

if TYPE_CHECKING:
    import httpx

__all__ = (
    "BLOCKED_NETWORKS",
    "DEFAULT_MAX_REDIRECTS",
    "DEFAULT_TIMEOUT",
    "RemoteResponse",
    "RemoteSource",
    "check_address",
    "filename_from_content_disposition",
)

IPAddress: TypeAlias = "ipaddress.IPv4Address | ipaddress.IPv6Address"
IPNetwork: TypeAlias = "ipaddress.IPv4Network | ipaddress.IPv6Network"

DEFAULT_TIMEOUT = 30.0
"""Seconds allowed for connecting, and between two reads of the response."""

DEFAULT_MAX_REDIRECTS = 3
"""Redirects followed before a fetch is abandoned."""

_READ_CHUNK = 64 * 1024
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_SENSITIVE_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
_ALLOWED_SCHEMES = ("http", "https")

BLOCKED_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(network)
    for network in (
        "0.0.0.0/8",  # "this network", unspecified
        "10.0.0.0/8",  # private
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local, cloud metadata (169.254.169.254)
        "172.16.0.0/12",  # private
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation
        "192.88.99.0/24",  # 6to4 relay anycast
        "192.168.0.0/16",  # private
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation
        "203.0.113.0/24",  # documentation
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, broadcast
        "::/128",  # unspecified
        "::1/128",  # loopback
        "::/96",  # IPv4-compatible (deprecated)
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard-only
        "2001::/23",  # IETF protocol assignments (Teredo, ORCHID, ...)
        "2001:db8::/32",  # documentation
        "fc00::/7",  # unique local (private)
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)
"""Networks a fetch may not reach unless explicitly allowed.

Addresses outside these that Python's `ipaddress` still reports as private, reserved,
loopback, link-local, multicast, unspecified or not global are refused too, and so are
IPv4-mapped (`::ffff:a.b.c.d`), 6to4 (`2002::/16`) and NAT64 (`64:ff9b::/96`) addresses
whose embedded IPv4 address is refused.
"""

_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _import_httpx() -> Any:
    try:
        import httpx
    except ImportError as exc:  # pragma: no cover - exercised by monkeypatching
        raise MissingDependencyError("httpx", "http") from exc
    return httpx


# -- URL and address checks ---------------------------------------------------------------
def _display_url(url: object) -> str:
    """The URL for messages: no credentials, no fragment, query values redacted."""
    text = str(url)
    match = re.match(r"(?is)^([a-z][a-z0-9+.-]*:)?(//)?([^/?#]*)([^?#]*)(\?[^#]*)?", text)
    if match is None:  # pragma: no cover - the pattern matches any string
        return "<url>"
    scheme, slashes, authority, path, query = (g or "" for g in match.groups())
    authority = authority.rsplit("@", 1)[-1]
    if query:  # every value goes, whatever its name: no list of secret names is complete
        pairs = [pair.split("=", 1)[0] + "=<redacted>" for pair in query[1:].split("&") if pair]
        query = "?" + "&".join(pairs)
    return redact(f"{scheme}{slashes}{authority}{path}") + query


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _forbidden_reason(address: IPAddress) -> str | None:
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            reason = _forbidden_reason(embedded)
            return f"it embeds the IPv4 address {embedded}, {reason}" if reason else None
    for network in BLOCKED_NETWORKS:
        if address.version == network.version and address in network:
            return f"it is in the blocked network {network}"
    flags = ("loopback", "private", "link_local", "multicast", "reserved", "unspecified")
    for flag in flags:
        if getattr(address, f"is_{flag}"):
            return f"it is a {flag.replace('_', '-')} address"
    if not address.is_global:
        return "it is not a globally routable address"
    return None


def check_address(
    address: str | IPAddress,
    *,
    allow_private: bool = False,
    allow_networks: Iterable[str | IPNetwork] = (),
) -> None:
    """Refuse an IP address that a fetch must not connect to.

    Args:
        address: An IPv4 or IPv6 address (an IPv6 zone suffix such as `%eth0` is ignored).
        allow_private: Allow every address.
        allow_networks: Networks allowed even though they are blocked by default.

    Raises:
        ForbiddenAddressError: If the address is blocked (see `BLOCKED_NETWORKS`).

    Example:
        >>> check_address("93.184.215.14")
        >>> check_address("169.254.169.254")
        Traceback (most recent call last):
        ...
        sqlalchemy_obstore.errors.ForbiddenAddressError: the address 169.254.169.254 is blocked: it is in the blocked network 169.254.0.0/16. Pass allow_private=True or allow_networks=[...] to allow it.
        >>> check_address("127.0.0.1", allow_networks=["127.0.0.0/8"])
    """  # noqa: E501
    if allow_private:
        return
    ip = ipaddress.ip_address(address.split("%", 1)[0]) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # the same host as far as a dual-stack socket is concerned
    for network in allow_networks:
        net = ipaddress.ip_network(network, strict=False) if isinstance(network, str) else network
        if ip.version == net.version and ip in net:
            return
    reason = _forbidden_reason(ip)
    if reason is not None:
        raise ForbiddenAddressError(
            f"the address {ip} is blocked: {reason}. Pass allow_private=True or "
            "allow_networks=[...] to allow it.",
            address=str(ip),
        )


# -- response metadata ----------------------------------------------------------------------
_DISPOSITION_PARAM = re.compile(
    r";\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*=\s*(\"(?:[^\"\\]|\\.)*\"|[^;]*)"
)
_MIME_TYPE = re.compile(r"^[!#$%&'*+.^_`|~0-9a-z-]+/[!#$%&'*+.^_`|~0-9a-z-]+$")


def _last_segment(name: str) -> str:
    return name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1].strip()


def filename_from_content_disposition(value: str | None) -> str | None:
    """The filename a `Content-Disposition` header suggests (RFC 6266), if any.

    `filename*` (RFC 5987, percent-encoded with a charset) wins over `filename`.
    Directories are dropped; the result is display data only (object keys are built
    from a sanitised form of it).

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
            return _last_segment(name)
    plain = params.get("filename")
    return _last_segment(plain) or None if plain else None


def _mime_type(value: str | None) -> str | None:
    if not value:
        return None
    mime = value.split(";", 1)[0].strip().lower()
    return mime if _MIME_TYPE.match(mime) else None


def _url_filename(url: httpx.URL) -> str | None:
    return _last_segment(url.path) or None


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
            segment, else `None`.

    Example:
        >>> RemoteResponse("https://example.com/a.txt", 200, "text/plain", 2, "a.txt").filename
        'a.txt'
    """

    url: str
    status: int
    content_type: str | None
    content_length: int | None
    filename: str | None


# -- the source -------------------------------------------------------------------------------
class RemoteSource:
    """Content that is downloaded from an HTTP(S) URL when it is read.

    Nothing happens on construction beyond checking the URL's form; the host is
    resolved, checked and contacted on the first read. Read it with `read(n)` (sync,
    through `httpx.Client`) or `async for` (through `httpx.AsyncClient`); `FileObject`
    picks the right one for `save()` and `save_async()`. Each chunk is handed on as it
    arrives, so memory stays bounded whatever the size of the body.

    The source can be rewound to the start (`seek(0)`): the next read fetches the URL
    again. That lets a session retry the upload after a failed flush or a rollback.

    Args:
        url: An `http://` or `https://` URL, without `user:password@`.
        timeout: Seconds for resolving and connecting, and allowed between two reads.
        max_size: Refuse bodies larger than this many bytes (`FileTooLargeError`),
            checked against `Content-Length` up front and while streaming.
        max_redirects: Redirects to follow (each hop is checked like the first URL).
        allow_private: Allow any address, including loopback and private networks.
        allow_networks: Networks to allow although they are blocked by default, e.g.
            `("10.20.0.0/16",)`.
        headers: Extra request headers (e.g. `Authorization`); credentials headers are
            not sent on after a redirect to another origin.
        on_response: Called with a `RemoteResponse` when the final response arrives,
            before its body is read.
        verify: TLS verification, as httpx takes it: `True` (the default CA bundle), a
            `ssl.SSLContext` (for a private CA), or `False` (never in production).

    Raises:
        MissingDependencyError: If httpx is not installed.
        ForbiddenAddressError: If the URL's scheme is not http(s), it carries
            credentials, or its host is an IP literal that is blocked.

    Example:
        >>> source = RemoteSource("https://example.com/report.pdf?token=s3cr3t", max_size=10)
        >>> source
        RemoteSource('https://example.com/report.pdf?token=<redacted>')
        >>> source.filename
        'report.pdf'
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        max_size: int | None = None,
        max_redirects: int = DEFAULT_MAX_REDIRECTS,
        allow_private: bool = False,
        allow_networks: Iterable[str | IPNetwork] = (),
        headers: Mapping[str, str] | None = None,
        on_response: Callable[[RemoteResponse], None] | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        _import_httpx()
        if max_size is not None and max_size < 0:
            raise ValueError("max_size must be a non-negative number of bytes or None.")
        if max_redirects < 0:
            raise ValueError("max_redirects must not be negative.")
        self._allow_private = allow_private
        self._allow_networks = tuple(
            ipaddress.ip_network(n, strict=False) if isinstance(n, str) else n
            for n in allow_networks
        )
        self._url: httpx.URL = self._check_url(url)
        self.timeout = timeout
        self.max_size = max_size
        self.max_redirects = max_redirects
        self._headers = {
            k: v for k, v in (headers or {}).items() if k.lower() not in {"host", "content-length"}
        }
        self.on_response = on_response
        self._verify = verify
        self.response: RemoteResponse | None = None
        """What the server answered, once the download has started."""
        self._client: Any = None
        self._response: Any = None
        self._chunks: Iterator[bytes] | None = None
        self._buffer = b""
        self._position = 0
        self._size = 0
        self._done = False
        self._closed = False

    # -- public bits ------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The URL in display form: no credentials, query values redacted."""
        return _display_url(self._url)

    @property
    def filename(self) -> str | None:
        """The last segment of the URL's path (percent-decoded), or `None`."""
        return _url_filename(self._url)

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

    @staticmethod
    def _port(url: httpx.URL) -> int:
        return url.port or (443 if url.scheme == "https" else 80)

    def _vet(self, url: httpx.URL, infos: Iterable[tuple[Any, ...]]) -> list[str]:
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not addresses:
            shown = _display_url(url)
            raise RemoteFetchError(f'Cannot fetch "{shown}": the host has no address.', url=shown)
        for address in addresses:  # every answer must be acceptable, not just the first
            self._check(address, url)
        return addresses

    def _resolve(self, url: httpx.URL) -> list[str]:
        literal = self._ip_literal(url)
        if literal is not None:
            self._check(literal, url)
            return [url.host]
        try:
            infos = socket.getaddrinfo(
                url.raw_host.decode("ascii"), self._port(url), type=socket.SOCK_STREAM
            )
        except (OSError, UnicodeError) as exc:
            raise self._error(url, "cannot resolve the host", exc) from exc
        return self._vet(url, infos)

    async def _resolve_async(self, url: httpx.URL) -> list[str]:
        literal = self._ip_literal(url)
        if literal is not None:
            self._check(literal, url)
            return [url.host]
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(
                    url.raw_host.decode("ascii"), self._port(url), type=socket.SOCK_STREAM
                ),
                self.timeout,
            )
        except (OSError, UnicodeError, asyncio.TimeoutError) as exc:
            raise self._error(url, "cannot resolve the host", exc) from exc
        return self._vet(url, infos)

    # -- requests -----------------------------------------------------------------------------
    def _error(
        self, url: httpx.URL, what: str, exc: BaseException | None = None, status: int | None = None
    ) -> RemoteFetchError:
        shown = _display_url(url)
        detail = f" ({type(exc).__name__}: {redact(str(exc)) or 'no detail'})" if exc else ""
        message = f'Cannot fetch "{shown}": {what}{detail}.'
        return RemoteFetchError(message, url=shown, status=status)

    def _client_options(self) -> dict[str, Any]:
        return {
            "timeout": self.timeout,
            "follow_redirects": False,
            "trust_env": False,  # no proxies or netrc from the environment
            "verify": self._verify,
        }

    def _request(
        self, client: Any, url: httpx.URL, address: str, headers: Mapping[str, str]
    ) -> httpx.Request:
        """A GET of `url` sent to the vetted `address` (pinned: no second DNS lookup)."""
        extensions: dict[str, Any] = {}
        if url.scheme == "https":
            extensions["sni_hostname"] = url.raw_host.decode("ascii")
        request: httpx.Request = client.build_request(
            "GET",
            url.copy_with(host=address),
            headers={
                "Accept-Encoding": "identity",
                **headers,
                "Host": url.netloc.decode("ascii"),
            },
            extensions=extensions,
        )
        return request

    def _next_hop(
        self, url: httpx.URL, response: httpx.Response, hops: int, headers: dict[str, str]
    ) -> tuple[httpx.URL, dict[str, str]] | None:
        """The redirect target to follow (checked), or `None` for a final response."""
        status = response.status_code
        if 200 <= status < 300:
            return None
        location = response.headers.get("location")
        if status not in _REDIRECT_STATUSES or not location:
            reason = response.reason_phrase or "error"
            raise self._error(url, f"the server answered {status} {reason}", status=status)
        if hops >= self.max_redirects:
            raise self._error(
                url, f"more than {self.max_redirects} redirect(s); the last one was refused"
            )
        target = self._check_url(location, base=url)
        if (target.scheme, target.raw_host, self._port(target)) != (
            url.scheme,
            url.raw_host,
            self._port(url),
        ):
            headers = {k: v for k, v in headers.items() if k.lower() not in _SENSITIVE_HEADERS}
        return target, headers

    def _describe(self, url: httpx.URL, response: httpx.Response) -> RemoteResponse:
        length_header = response.headers.get("content-length")
        length = int(length_header) if length_header and length_header.isdigit() else None
        info = RemoteResponse(
            url=_display_url(url),
            status=response.status_code,
            content_type=_mime_type(response.headers.get("content-type")),
            content_length=length,
            filename=filename_from_content_disposition(response.headers.get("content-disposition"))
            or _url_filename(url),
        )
        encoded = response.headers.get("content-encoding", "identity").lower() != "identity"
        if (
            self.max_size is not None
            and length is not None
            and not encoded
            and length > self.max_size
        ):
            raise FileTooLargeError(limit=self.max_size, size_seen=length)
        self.response = info
        if self.on_response is not None:
            self.on_response(info)
        return info

    def _count(self, chunk: bytes) -> bytes:
        self._size += len(chunk)
        if self.max_size is not None and self._size > self.max_size:
            raise FileTooLargeError(limit=self.max_size, size_seen=self._size)
        return chunk

    # -- sync reading ---------------------------------------------------------------------------
    def _open_sync(self) -> Iterator[bytes]:
        hx = _import_httpx()
        url, headers, hops = self._url, dict(self._headers), 0
        client = hx.Client(**self._client_options())
        self._client = client
        try:
            while True:
                response = self._send_sync(client, url, headers)
                hop = self._next_hop(url, response, hops, headers)
                if hop is None:
                    break
                response.close()
                (url, headers), hops = hop, hops + 1
            self._response = response
            self._describe(url, response)
            return response.iter_bytes()  # type: ignore[no-any-return]
        except BaseException:
            self.close()
            raise

    def _send_sync(self, client: Any, url: httpx.URL, headers: Mapping[str, str]) -> Any:
        hx = _import_httpx()
        addresses = self._resolve(url)
        for index, address in enumerate(addresses):
            try:
                return client.send(self._request(client, url, address, headers), stream=True)
            except hx.ConnectError as exc:
                if index == len(addresses) - 1:
                    raise self._error(url, "cannot connect", exc) from exc
            except hx.TimeoutException as exc:
                raise self._error(url, "timed out", exc) from exc
            except hx.HTTPError as exc:
                raise self._error(url, "the request failed", exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def read(self, size: int = -1) -> bytes:
        """Read up to `size` bytes (all that is left for a negative size); `b""` at the end.

        The first call resolves, checks and connects; it may return fewer bytes than
        asked for.

        Raises:
            ForbiddenAddressError: If the URL or a redirect leads to a blocked address.
            RemoteFetchError: For a non-2xx answer, too many redirects, a timeout or a
                network failure.
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
            self._chunks = self._open_sync()
        hx = _import_httpx()
        while not self._buffer:
            try:
                chunk = next(self._chunks, None)
            except hx.TimeoutException as exc:
                self.close()
                raise self._error(self._url, "timed out while reading", exc) from exc
            except hx.HTTPError as exc:
                self.close()
                raise self._error(self._url, "the download failed", exc) from exc
            if chunk is None:
                self.close()
                self._done = True  # after close(): a complete body, not an interrupted one
                return b""
            try:
                self._buffer = self._count(chunk)
            except BaseException:
                self.close()
                raise
        data: bytes = self._buffer[:size]
        self._buffer = self._buffer[size:]
        self._position += len(data)
        return data

    # -- async reading --------------------------------------------------------------------------
    def __aiter__(self) -> AsyncIterator[bytes]:
        """Download the body chunk by chunk with `httpx.AsyncClient`.

        Raises the same errors as `read`.
        """
        return self._aiter_chunks()

    async def _send_async(self, client: Any, url: httpx.URL, headers: Mapping[str, str]) -> Any:
        hx = _import_httpx()
        addresses = await self._resolve_async(url)
        for index, address in enumerate(addresses):
            try:
                return await client.send(self._request(client, url, address, headers), stream=True)
            except hx.ConnectError as exc:
                if index == len(addresses) - 1:
                    raise self._error(url, "cannot connect", exc) from exc
            except hx.TimeoutException as exc:
                raise self._error(url, "timed out", exc) from exc
            except hx.HTTPError as exc:
                raise self._error(url, "the request failed", exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _aiter_chunks(self) -> AsyncIterator[bytes]:
        hx = _import_httpx()
        url, headers, hops = self._url, dict(self._headers), 0
        self._size = 0
        async with hx.AsyncClient(**self._client_options()) as client:
            while True:
                response = await self._send_async(client, url, headers)
                try:
                    hop = self._next_hop(url, response, hops, headers)
                    if hop is None:
                        self._describe(url, response)
                except BaseException:
                    await response.aclose()
                    raise
                if hop is None:
                    break
                await response.aclose()
                (url, headers), hops = hop, hops + 1
            try:
                async for chunk in response.aiter_bytes():
                    yield self._count(chunk)
            except hx.TimeoutException as exc:
                raise self._error(url, "timed out while reading", exc) from exc
            except hx.HTTPError as exc:
                raise self._error(url, "the download failed", exc) from exc
            finally:
                await response.aclose()

    # -- rewinding --------------------------------------------------------------------------------
    def _reset(self) -> None:
        self._client = None
        self._response = None
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
        response, client = self._response, self._client
        self._response = self._client = None
        if self._chunks is not None or client is not None:
            self._closed = True
        self._chunks = None
        if response is not None:
            response.close()
        if client is not None:
            client.close()
