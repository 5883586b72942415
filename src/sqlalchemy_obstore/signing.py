"""HMAC-signed, expiring URLs for stores that cannot sign (local files, memory).

obstore signs URLs for S3, GCS and Azure only. An application that hands out signed
URLs in production would otherwise need another code path in development, where files
live on disk or in memory. [`HmacUrlSigner`][sqlalchemy_obstore.signing.HmacUrlSigner]
closes the gap: attached to such a backend (as its
[`url_signer`][sqlalchemy_obstore.backends.UrlSigner]), it makes
`FileObject.sign()`/`sign_async()`/`sign_upload()` return URLs of the form

```text
{base_url}/{backend}/{path}?method=GET&expires=<unix time>&signature=<base64url HMAC-SHA256>
```

(the PUT URL of an [upload ticket][sqlalchemy_obstore.tickets.UploadTickets] also
carries `max_size=<bytes>` and `ticket=<ticket id>`, both covered by the signature)

which the route mounted by the web integrations
([Litestar][sqlalchemy_obstore.contrib.litestar],
[Starlette/FastAPI][sqlalchemy_obstore.contrib.starlette]) serves: a `GET` streams the
object (with `Range` support), a `PUT` streams the request body into the backend
without ever overwriting an object.

The signature covers the method, the backend key, the object path and the expiry (and
the size limit and ticket of a ticket's URL), so a URL cannot be reused for another
method, another object, a longer time or a larger upload. Only the spelling the signer
produced is accepted: `expires` in plain ASCII decimal without leading zeros, the
signature in unpadded base64url, each parameter once. Signatures are compared in
constant time, and the secret never appears in a `repr`, a log line or an error
message.

Example:
    >>> from datetime import timedelta
    >>> from sqlalchemy_obstore.signing import HmacUrlSigner
    >>> signer = HmacUrlSigner("a-development-secret-of-32-bytes-or-more")
    >>> five_minutes = timedelta(minutes=5)
    >>> url = signer.sign_url("uploads", "docs/a.txt", method="GET", expires_in=five_minutes)
    >>> url.startswith("/_storage/uploads/docs/a.txt?method=GET&expires=")
    True
    >>> query = signer.parse_query(url.partition("?")[2])
    >>> signer.verify("uploads", "docs/a.txt", method="GET", **query)  # no error: genuine
"""

# In the implementation's order, which the reference page follows.
from ._signing import (  # noqa: I001
    MIN_SECRET_BYTES,
    DEFAULT_BASE_URL,
    DEFAULT_MAX_EXPIRES_IN,
    HmacUrlSigner,
    development_signer,
    attach_signer,
    detach_signer,
)
from ._public import adopt as _adopt

__all__ = (
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_EXPIRES_IN",
    "MIN_SECRET_BYTES",
    "HmacUrlSigner",
    "attach_signer",
    "detach_signer",
    "development_signer",
)

_adopt(globals())
