"""Remote content: attach a file fetched over HTTP(S), safely and lazily.

[`RemoteSource`][sqlalchemy_obstore.remote.RemoteSource] is a content source for
[`FileObject`][sqlalchemy_obstore.FileObject] that downloads a URL only when the file is
saved (directly or by a session flush), streaming the body into storage chunk by chunk:
`save()` reads it with httpcore's sync connection pool (httpx's transport layer),
`save_async()` (and an `AsyncSession` flush) with its async one. Most code uses it
through [`FileObject.from_url`][sqlalchemy_obstore.file_object.FileObject.from_url].

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
  the same way; once a redirect leaves the origin of the URL (scheme, host, port), none
  of the caller's `headers` is sent again except those named in `forward_headers`;
* proxies, `.netrc` and certificate settings from the environment are ignored;
* bounded: `max_size` is checked against `Content-Length` up front and counted over
  the *decoded* body while it streams (a compressed body is decoded in steps of 64 KiB,
  so a "zip bomb" never exists whole in memory); `timeout` bounds every single wait and
  `deadline` (5 minutes by default) the whole fetch, redirects and body included;
* error messages name the URL without credentials or query-string values.

`allow_private=True` lifts the address check; `allow_networks` lifts it for chosen
networks only (for example an internal mirror).

httpx is an optional dependency: `pip install 'sqlalchemy-obstore[http]'`.
"""

# In the implementation's order, which the reference page follows.
from ._remote import (  # noqa: I001
    BLOCKED_NETWORKS,
    check_address,
    RemoteResponse,
    filename_from_content_disposition,
    DEFAULT_TIMEOUT,
    DEFAULT_DEADLINE,
    DEFAULT_MAX_REDIRECTS,
    RemoteSource,
)
from ._public import adopt as _adopt

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

_adopt(globals())
