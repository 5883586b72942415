"""Direct-to-storage uploads: signed URLs and forms with tamper-proof upload tickets.

The bytes of a large file need not pass through the application server. The server
*issues* an [`UploadGrant`][sqlalchemy_obstore.tickets.UploadGrant]: how to upload a
fresh key (a signed PUT URL; on S3 a POST form whose policy the store enforces, or a
multipart upload whose part URLs are signed on demand) plus a *ticket*, a compact,
URL-safe token signed with HMAC-SHA256 that records the backend, the key, the display
filename, the size and type limits and a redeem deadline. The client uploads as the
grant says and hands the ticket back (for a multipart upload, the server completes it
first: [`complete`][sqlalchemy_obstore.tickets.UploadTickets.complete]); the server
*redeems* it:

1. the signature is checked in constant time (a forged or tampered ticket is refused
   with [`InvalidUploadTicketError`][sqlalchemy_obstore.InvalidUploadTicketError]) and
   the deadline is checked
   ([`ExpiredUploadTicketError`][sqlalchemy_obstore.ExpiredUploadTicketError]);
2. the ticket is marked used in a replay guard (a second redeem raises
   [`ReplayedUploadTicketError`][sqlalchemy_obstore.ReplayedUploadTicketError]);
3. a head request confirms the object exists (if the client never uploaded,
   [`ObjectNotFoundError`][sqlalchemy_obstore.ObjectNotFoundError] is raised and the
   ticket is *not* used up, so the client may upload and redeem again);
4. its size is checked against the limits and, when the column requires content
   types, the first bytes are read and sniffed
   ([`detect_content_type`][sqlalchemy_obstore.validation.detect_content_type]); on
   stores that serve objects themselves (S3, GCS, Azure), an object the store would
   display inline although its type is not a passive one (the client left out the
   grant's `Content-Disposition`) is refused too;
5. on a violation the object is deleted and the typed error is raised
   ([`FileTooLargeError`][sqlalchemy_obstore.FileTooLargeError],
   [`FileTooSmallError`][sqlalchemy_obstore.FileTooSmallError],
   [`InvalidContentTypeError`][sqlalchemy_obstore.InvalidContentTypeError]);
6. otherwise a saved [`FileObject`][sqlalchemy_obstore.FileObject] is returned (size,
   etag, version, content type, last-modified), ready to be assigned to a column.

On local files and memory, the PUT URL is signed by an
[`HmacUrlSigner`][sqlalchemy_obstore.signing.HmacUrlSigner] with the ticket's `max_size`
and id inside the signature: the web integrations' signed-URL route, given the
`UploadTickets` (`tickets=`), refuses bytes past the limit while they stream and any
upload once the ticket is redeemed. On S3 (by default) the grant is a POST form whose
signed policy makes the store refuse a body outside the size limits, another key, type
or disposition, or an extra field; above `multipart_threshold` it is a multipart upload
whose part URLs each accept exactly their planned length. Both are signed by the
library (SigV4) with the store's credentials; see `UploadTickets(s3_method=...)`.

Replay guards: [`MemoryReplayGuard`][sqlalchemy_obstore.tickets.MemoryReplayGuard]
(the default) remembers used tickets in one process;
[`SqlReplayGuard`][sqlalchemy_obstore.tickets.SqlReplayGuard] records them in a
database table with a unique key, so several application instances share it.

Example:
    >>> from sqlalchemy_obstore import ObstoreBackend, storages
    >>> from sqlalchemy_obstore.tickets import UploadTickets
    >>> class DemoSigner:  # S3, GCS and Azure sign natively; see signing.HmacUrlSigner
    ...     def sign_url(self, backend, path, *, method, expires_in):
    ...         return f"https://uploads.example/{path}?sig=demo"
    >>> tickets = UploadTickets("a-secret-of-at-least-32-bytes-length!")
    >>> with storages.temporary(ObstoreBackend("docs", "memory://", url_signer=DemoSigner())):
    ...     grant = tickets.issue("docs", "report.txt", max_size=1024)
    ...     _ = storages.get_backend("docs").put(grant.upload_path, b"hello")  # the client's PUT
    ...     file = tickets.redeem(grant.ticket)
    >>> file.filename, file.size, file.content_type
    ('report.txt', 5, 'text/plain')
"""

# In the implementation's order, which the reference page follows.
from ._tickets import (  # noqa: I001
    MemoryReplayGuard,
    ReplayGuard,
    SqlReplayGuard,
    TICKET_VERSION,
    INCOMING_PREFIX,
    S3Method,
    UploadGrant,
    UploadMethod,
    UploadTickets,
)
from ._public import adopt as _adopt

__all__ = (
    "INCOMING_PREFIX",
    "TICKET_VERSION",
    "MemoryReplayGuard",
    "ReplayGuard",
    "S3Method",
    "SqlReplayGuard",
    "UploadGrant",
    "UploadMethod",
    "UploadTickets",
)

_adopt(globals())
